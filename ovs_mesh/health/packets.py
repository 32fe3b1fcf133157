"""The probe packets and sockets: ICMP echoes (IPv4) and ICMPv6 echoes on raw sockets
bound to this node's gateway, that see only echo replies and never fragment."""
from __future__ import annotations

import socket
import struct

TOKEN = 8                   # bytes of random token per probe
# Linux socket options Python's socket module does not name.
IP_MTU_DISCOVER, IP_PMTUDISC_PROBE, IP_FREEBIND = 10, 3, 15
IPV6_MTU_DISCOVER, IPV6_PMTUDISC_PROBE, IPV6_DONTFRAG, IPV6_FREEBIND = 23, 3, 62, 78
SOL_RAW, ICMP_FILTER, ICMP6_FILTER = 255, 1, 1
SO_TIMESTAMPNS = SCM_TIMESTAMPNS = 35
ECHO_REQUEST = {"ipv4": 8, "ipv6": 128}
ECHO_REPLY = {"ipv4": 0, "ipv6": 129}


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def echo(family: str, ident: int, seq: int, token: bytes, size: int) -> bytes:
    """An echo request of `size` bytes (ICMP header included): the token, then zeros.
    IPv4's checksum is computed here (the zeros add nothing to it); the kernel fills
    in ICMPv6's."""
    head = struct.pack("!BBHHH", ECHO_REQUEST[family], 0, 0, ident, seq) + token
    if family == "ipv4":
        head = head[:2] + struct.pack("!H", checksum(head)) + head[4:]
    return head + bytes(max(0, size - len(head)))


def parse_reply(family: str, data: bytes) -> tuple[int, int, bytes] | None:
    """(identifier, sequence, token) of an echo reply as a raw socket hands it over
    (IPv4 with its IP header, ICMPv6 without), None for anything else."""
    off = (data[0] & 0x0F) * 4 if family == "ipv4" and data else 0
    if family == "ipv4" and data and data[0] >> 4 != 4:
        return None
    if len(data) < off + 8 + TOKEN or data[off] != ECHO_REPLY[family]:
        return None
    ident, seq = struct.unpack_from("!HH", data, off + 4)
    return ident, seq, data[off + 8:off + 8 + TOKEN]


def open_socket(family: str, src: str) -> socket.socket:
    """A raw ICMP socket bound to `src` (also before kbr0 has it: freebind) that sees only echo replies."""
    if family == "ipv4":
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        s.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
        s.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("=I", ~(1 << ECHO_REPLY["ipv4"]) & 0xFFFFFFFF))
        s.bind((src, 0))
    else:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_PROBE)
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_DONTFRAG, 1)
        words = [0xFFFFFFFF] * 8
        words[ECHO_REPLY["ipv6"] >> 5] &= ~(1 << (ECHO_REPLY["ipv6"] & 31)) & 0xFFFFFFFF
        s.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("=8I", *words))
        s.bind((src, 0, 0, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)   # each answer's arrival, for the RTT
    s.setblocking(False)
    return s


def received_at(ancillary) -> float | None:
    """The kernel's receive timestamp (wall clock) in recvmsg's ancillary data, if there."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack_from("=qq", data)
            return sec + nsec / 1e9
    return None
