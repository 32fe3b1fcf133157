"""Crafted packets for the anti-spoofing tests, run inside a pod's netns:

    packets.py recv IFACE            print READY, then one line per UDP payload / ARP sender
                                     seen, until the payload "end" arrives (or 20 s pass)
    packets.py send IFACE DST_MAC SPEC...   SPEC: ip:SRC:DST:PAYLOAD or arp:SENDER_IP:TARGET_IP

Frames on one path keep their order, so once "end" (sent last, legitimately)
arrives, every earlier frame that was going to arrive has arrived."""
from __future__ import annotations

import sys

from scapy.all import ARP, IP, UDP, Ether, Raw, conf, get_if_hwaddr, sendp, sniff

PORT = 9999


def recv(iface: str) -> None:
    def show(p) -> None:
        if p.haslayer(ARP):
            print(f"arp {p[ARP].psrc}", flush=True)
        elif p.haslayer(UDP) and p[UDP].dport == PORT:
            print(f"ip {p[IP].src} {bytes(p[Raw].load).decode()}", flush=True)

    def end(p) -> bool:
        return p.haslayer(UDP) and p[UDP].dport == PORT and bytes(p[Raw].load) == b"end"

    sniff(iface=iface, filter=f"arp or udp port {PORT}", prn=show, stop_filter=end, timeout=20,
          started_callback=lambda: print("READY", flush=True))


def send(iface: str, dst_mac: str, specs: list[str]) -> None:
    mine = get_if_hwaddr(iface)
    frames = []
    for spec in specs:
        kind, a, b, *rest = spec.split(":")
        if kind == "ip":
            frames.append(Ether(src=mine, dst=dst_mac) / IP(src=a, dst=b) / UDP(sport=PORT, dport=PORT)
                          / Raw(rest[0].encode()))
        else:  # an ARP reply claiming `a` is at our MAC
            frames.append(Ether(src=mine, dst=dst_mac) / ARP(op=2, hwsrc=mine, psrc=a, hwdst=dst_mac, pdst=b))
    sendp(frames, iface=iface, verbose=False)


if __name__ == "__main__":
    conf.verb = 0
    if sys.argv[1] == "recv":
        recv(sys.argv[2])
    else:
        send(sys.argv[2], sys.argv[3], sys.argv[4:])
