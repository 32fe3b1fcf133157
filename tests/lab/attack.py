"""Crafted packets and a capture, run inside lab namespaces (`python -m tests.lab.attack`).

  sniff IFACE PORT TOKEN STOP_SRC STOP_COUNT TIMEOUT
      counts IPv4/UDP and IPv6/UDP datagrams to PORT whose payload starts with TOKEN that
      arrive on IFACE (AF_PACKET: before the kernel's own checks), by source
      address; prints "ready", then one JSON line {source: count} once
      STOP_COUNT datagrams from STOP_SRC arrived or TIMEOUT seconds passed.
  send
      reads a JSON job on stdin: {"packets": [spec, ...], "repeat": N,
      "interval": s} and sends the packets in order, N times (scapy).
      spec kinds:
        {"kind": "udp", "src", "dst", "port", "payload"}                  L3, kernel-routed
        {"kind": "arp", "iface", "eth_dst", "hwsrc", "psrc", "hwdst", "pdst"}   an ARP reply
        {"kind": "l2udp", "iface", "eth_src", "eth_dst", "src", "dst", "port", "payload"}
                                                      a frame as written (IPv4 or IPv6)
        {"kind": "na", "iface", "eth_src", "src", "target"}   an unsolicited neighbour
                                                      advertisement (override) to ff02::1
        {"kind": "tunnel", "tunnel", "vni", "outer_src", "outer_dst",
         "eth_src", "eth_dst", "inner": udp or arp spec, "gre_key": bool}  L3, raw encapsulation
      L3 packets go through the kernel's raw socket (its routes and neighbours).
"""
from __future__ import annotations

import json
import select
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def sniff(iface: str, port: int, token: str, stop_src: str, stop_count: int, timeout: float) -> dict:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((iface, 0))
    print("ready", flush=True)
    counts: dict[str, int] = {}
    want = token.encode()
    deadline = time.monotonic() + timeout
    while counts.get(stop_src, 0) < stop_count:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([s], [], [], left)[0]:
            break
        frame, addr = s.recvfrom(65535)
        if addr[2] == PACKET_OUTGOING or len(frame) < 42:
            continue
        ip = frame[14:]
        if frame[12:14] == b"\x08\x00":
            ihl = (ip[0] & 0x0F) * 4
            proto, src, udp = ip[9], socket.inet_ntoa(ip[12:16]), ip[ihl:]
        elif frame[12:14] == b"\x86\xdd" and len(ip) >= 48:
            proto, src, udp = ip[6], socket.inet_ntop(socket.AF_INET6, ip[8:24]), ip[40:]
        else:
            continue
        if proto != 17 or len(udp) < 8 or struct.unpack("!H", udp[2:4])[0] != port or not udp[8:].startswith(want):
            continue
        counts[src] = counts.get(src, 0) + 1
    return counts


def _build(spec: dict):
    from scapy.all import ARP, GRE, IP, UDP, VXLAN, Ether, ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6, Raw
    from scapy.contrib.geneve import GENEVE

    kind = spec["kind"]
    if kind == "l2udp":
        l3 = IPv6(src=spec["src"], dst=spec["dst"]) if ":" in spec["dst"] else IP(src=spec["src"], dst=spec["dst"])
        return Ether(src=spec["eth_src"], dst=spec["eth_dst"]) / l3 / UDP(sport=40000, dport=spec["port"]) / Raw(
            spec["payload"].encode())
    if kind == "na":
        return (Ether(src=spec["eth_src"], dst="33:33:00:00:00:01") / IPv6(src=spec["src"], dst="ff02::1", hlim=255)
                / ICMPv6ND_NA(tgt=spec["target"], R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=spec["eth_src"]))
    if kind == "udp":
        return IP(src=spec["src"], dst=spec["dst"]) / UDP(sport=40000, dport=spec["port"]) / Raw(
            spec["payload"].encode())
    if kind == "arp":
        return Ether(src=spec["hwsrc"], dst=spec["eth_dst"]) / ARP(
            op=2, hwsrc=spec["hwsrc"], psrc=spec["psrc"], hwdst=spec["hwdst"], pdst=spec["pdst"])
    if kind == "tunnel":
        inner = _build(spec["inner"])
        if spec["inner"]["kind"] == "udp":
            inner = Ether(src=spec["eth_src"], dst=spec["eth_dst"]) / inner
        outer = IP(src=spec["outer_src"], dst=spec["outer_dst"])
        vni, tunnel = spec["vni"], spec["tunnel"]
        if tunnel == "vxlan":
            return outer / UDP(sport=45000, dport=4789) / VXLAN(flags=0x08, vni=vni) / inner
        if tunnel == "geneve":
            return outer / UDP(sport=45000, dport=6081) / GENEVE(vni=vni, proto=0x6558) / inner
        if spec.get("gre_key", True):
            return outer / GRE(key_present=1, key=vni, proto=0x6558) / inner
        return outer / GRE(proto=0x6558) / inner
    raise ValueError(f"unknown packet kind {kind!r}")


def send(job: dict) -> int:
    from scapy.all import conf, sendp
    from scapy.all import send as send_l3
    from scapy.supersocket import L3RawSocket

    conf.verb = 0
    conf.L3socket = L3RawSocket
    built = [(spec, _build(spec)) for spec in job["packets"]]
    sent = 0
    for i in range(job.get("repeat", 1)):
        for spec, pkt in built:
            if spec["kind"] in ("arp", "l2udp", "na"):
                sendp(pkt, iface=spec["iface"])
            else:
                send_l3(pkt)
            sent += 1
        if i + 1 < job.get("repeat", 1):
            time.sleep(job.get("interval", 0.05))
    return sent


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "sniff":
        iface, port, token, stop_src, stop_count, timeout = argv[1:7]
        print(json.dumps(sniff(iface, int(port), token, stop_src, int(stop_count), float(timeout))), flush=True)
        return 0
    if argv and argv[0] == "send":
        print(json.dumps({"sent": send(json.load(sys.stdin))}), flush=True)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
