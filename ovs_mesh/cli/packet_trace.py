"""`ovs-mesh trace [SRC] DST`: the ofproto/trace flow for a packet, and what became of it.

Pure: `trace_flow` turns (config, SRC, DST, protocol) into the flow ofproto/trace
takes, `summarize` reads the trace and says in one line where the packet went.
The CLI does the I/O (the ofports of port mode, ovs-appctl).

Either family: an IPv4 pair traces `ip`/`arp`/`icmp`/`tcp`/`udp`, an IPv6 pair
`ipv6`/`icmp6`/`tcp6`/`udp6`, and `--proto nd` a neighbour solicitation for DST
(sent to DST's solicited-node address, `nd_target=DST`: the IPv6 counterpart of
ARP).  Without SRC the packet comes from this node's gateway of DST's family
(node -> pod traffic).  A packet from another node's pod enters as it would
from that node: through the flow-mode tunnel port with `tun_src`/`tun_dst`
(`tun_ipv6_src`/`tun_ipv6_dst` over an IPv6 underlay) and the cluster's key, or
through that peer's port in port mode.
"""
from __future__ import annotations

import re
from ipaddress import IPv6Address, ip_address

from topology.errors import InputError, Problem
from topology.model import Address, Config

from ..ovs.desired import peer_port_name
from ..ovs.model import TUNNEL_OFPORT

PROTOS = ("ip", "arp", "nd", "icmp", "tcp", "udp")
_V6_PROTO = {"ip": "ipv6", "icmp": "icmp6", "tcp": "tcp6", "udp": "udp6"}
_SET_TUN = re.compile(r"set_field:([0-9a-fA-F:.]+)->(tun_dst|tun_ipv6_dst)")
_RULE = re.compile(r"^\s*(\d+)\. ")


def parse_addr(field: str, value: str) -> Address:
    try:
        return ip_address(value)
    except ValueError:
        raise InputError([Problem(field, value, "not an IPv4 or IPv6 address")]) from None


def solicited_node(addr: IPv6Address) -> IPv6Address:
    """ff02::1:ffXX:XXXX, where a neighbour solicitation for `addr` is sent (RFC 4291 2.7.1)."""
    return IPv6Address(int(IPv6Address("ff02::1:ff00:0")) | int(addr) & 0xFFFFFF)


def packet(proto: str, src: Address, dst: Address) -> str:
    """The match fields of the traced packet (without in_port and tunnel metadata)."""
    if src.version == 4:
        if proto == "nd":
            raise InputError([Problem("--proto", proto, "neighbour discovery is IPv6: use arp for IPv4")])
        if proto == "arp":
            return f"arp,arp_spa={src},arp_tpa={dst}"
        return f"{proto},nw_src={src},nw_dst={dst}"
    if proto == "arp":
        raise InputError([Problem("--proto", proto, "ARP is IPv4: use nd (neighbour solicitation) for IPv6")])
    if proto == "nd":
        assert isinstance(dst, IPv6Address)   # of src's family
        return f"icmp6,icmpv6_type=135,ipv6_src={src},ipv6_dst={solicited_node(dst)},nd_target={dst}"
    return f"{_V6_PROTO[proto]},ipv6_src={src},ipv6_dst={dst}"


def default_source(config: Config, dst: Address) -> Address:
    """This node's gateway of DST's family."""
    local = config.local_node
    if dst.version == 4 and local.subnet is not None:
        return local.gateway
    if dst.version == 6 and local.subnet6 is not None:
        return local.gateway6
    ranges = ",".join(str(c) for c in config.cluster.cidrs)
    raise InputError([Problem("DST", str(dst), f"an IPv{dst.version} address, but node {local.name} has no "
                                               f"IPv{dst.version} pod subnet (cluster.cidr {ranges}): give SRC")])


def check_pair(config: Config, src: Address, dst: Address):
    """The node that owns SRC (None for a node IP); InputError when SRC/DST do not fit."""
    if src.version != dst.version:
        raise InputError([Problem("DST", str(dst), f"an IPv{dst.version} address, but SRC {src} is "
                                                   f"IPv{src.version}")])
    owner = next((n for n in config.nodes if any(src in s for s in n.subnets)), None)
    if owner is None and src not in {n.ip for n in config.nodes}:
        raise InputError([Problem("SRC", str(src), "not in any node's subnet and not a node IP")])
    return owner


def trace_flow(config: Config, src: Address, dst: Address, proto: str, ofports: dict[str, int] | None = None) -> str:
    """The flow for ofproto/trace.  `ofports` (port name -> ofport) is needed in port
    mode for a packet from another node; LookupError if that peer has no port."""
    owner = check_pair(config, src, dst)
    pkt = packet(proto, src, dst)
    local = config.local_node
    c = config.cluster
    if owner is None or owner.name == local.name:
        return f"in_port=LOCAL,{pkt}"
    if c.mode == "flow":
        tun = "tun_ipv6" if owner.ip.version == 6 else "tun"
        return f"in_port={TUNNEL_OFPORT},tun_id={c.vni},{tun}_src={owner.ip},{tun}_dst={local.ip},{pkt}"
    port = (ofports or {}).get(peer_port_name(c.tunnel, owner.name))
    if port is None:
        raise LookupError(f"no tunnel port to {owner.name} on this node")
    return f"in_port={port},{pkt}"


def _obr0_section(text: str) -> list[str]:
    """The lines of the trace on the first bridge (ours)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("bridge(")), None)
    if start is None:
        return []
    out = []
    for line in lines[start + 2:]:
        if not line.strip() or line.startswith(("bridge(", "Final flow:")):
            break
        out.append(line)
    return out


def summarize(config: Config, text: str, ofports: dict[str, int] | None = None) -> str:
    """One line: where the traced packet went (a peer through the tunnel, LOCAL, or dropped)."""
    section = _obr0_section(text)
    table = None
    actions: list[str] = []
    for line in section:
        m = _RULE.match(line)
        if m:
            table = m.group(1)
        elif not line.strip().startswith("->"):
            actions.append(line.strip())
    datapath = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                     if line.startswith("Datapath actions:")), "")
    last = actions[-1] if actions else ""
    if last == "drop" or (not last and datapath == "drop"):
        return f"result: dropped in table {table}" if table is not None else "result: dropped"
    if last == "LOCAL":
        return "result: delivered to this node (LOCAL, kbr0)"
    by_ip = {str(n.ip): n.name for n in config.nodes}
    for action in actions:
        m = _SET_TUN.fullmatch(action)
        if m:
            return f"result: tunnel to {by_ip.get(m.group(1), 'an unknown node')}, {m.group(2)}={m.group(1)}"
    if last.startswith("output:"):
        port = int(last[len("output:"):])
        names = {v: k for k, v in (ofports or {}).items()}
        by_port = {peer_port_name(config.cluster.tunnel, n.name): n for n in config.nodes}
        peer = by_port.get(names.get(port, ""))
        if peer is not None:
            return f"result: tunnel to {peer.name} through port {names[port]} (ofport {port}, remote_ip {peer.ip})"
        return f"result: output to ofport {port}"
    return f"result: datapath actions {datapath or 'unknown'}"
