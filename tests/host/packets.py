"""Crafted packets for the anti-spoofing tests, run inside a pod's netns:

    packets.py recv IFACE SRC_MAC    print READY, then one line per UDP payload / ARP sender /
                                     IPv6 NA target / RA received from SRC_MAC (the sender pod; not
                                     kbr0's own ND), until the payload "end" arrives (or 20 s pass)
    packets.py send IFACE DST_MAC SPEC...
        SPEC: ip:SRC:DST:PAYLOAD, arp:SENDER_IP:TARGET_IP (IPv4), or with "|" between the
        fields (IPv6 addresses have colons): ip|SRC|DST|PAYLOAD, na|SRC|DST|TARGET (a neighbour
        advertisement claiming TARGET is at our MAC), ra|SRC|DST (a router advertisement)

Frames on one path keep their order, so once "end" (sent last, legitimately)
arrives, every earlier frame that was going to arrive has arrived."""
from __future__ import annotations

import sys

from scapy.all import (
    ARP,
    IP,
    UDP,
    Ether,
    ICMPv6ND_NA,
    ICMPv6ND_RA,
    ICMPv6NDOptDstLLAddr,
    IPv6,
    Raw,
    conf,
    get_if_hwaddr,
    sendp,
    sniff,
)

PORT = 9999


def recv(iface: str, src_mac: str) -> None:
    def show(p) -> None:
        if p[Ether].src != src_mac:
            return
        if p.haslayer(ARP):
            print(f"arp {p[ARP].psrc}", flush=True)
        elif p.haslayer(ICMPv6ND_NA):
            print(f"na {p[ICMPv6ND_NA].tgt}", flush=True)
        elif p.haslayer(ICMPv6ND_RA):
            print(f"ra {p[IPv6].src}", flush=True)
        elif p.haslayer(UDP) and p[UDP].dport == PORT:
            src = p[IPv6].src if p.haslayer(IPv6) else p[IP].src
            print(f"ip {src} {bytes(p[Raw].load).decode()}", flush=True)

    def end(p) -> bool:
        return p.haslayer(UDP) and p[UDP].dport == PORT and bytes(p[Raw].load) == b"end"

    sniff(iface=iface, filter=f"arp or udp port {PORT} or icmp6", prn=show, stop_filter=end, timeout=20,
          started_callback=lambda: print("READY", flush=True))


def frame(spec: str, mine: str, dst_mac: str):
    kind, a, b, *rest = spec.split("|" if "|" in spec else ":")
    eth = Ether(src=mine, dst=dst_mac)
    if kind == "ip":
        ip = IPv6(src=a, dst=b) if ":" in a + b else IP(src=a, dst=b)
        return eth / ip / UDP(sport=PORT, dport=PORT) / Raw(rest[0].encode())
    if kind == "na":   # hop limit 255, as a receiver requires of ND
        return (eth / IPv6(src=a, dst=b, hlim=255) / ICMPv6ND_NA(tgt=rest[0], R=0, S=0, O=1)
                / ICMPv6NDOptDstLLAddr(lladdr=mine))
    if kind == "ra":
        return eth / IPv6(src=a, dst=b, hlim=255) / ICMPv6ND_RA()
    return eth / ARP(op=2, hwsrc=mine, psrc=a, hwdst=dst_mac, pdst=b)   # ARP reply: `a` is at our MAC


def send(iface: str, dst_mac: str, specs: list[str]) -> None:
    mine = get_if_hwaddr(iface)
    sendp([frame(s, mine, dst_mac) for s in specs], iface=iface, verbose=False)


if __name__ == "__main__":
    conf.verb = 0
    if sys.argv[1] == "recv":
        recv(sys.argv[2], sys.argv[3])
    else:
        send(sys.argv[2], sys.argv[3], sys.argv[4:])
