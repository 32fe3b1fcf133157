"""Which address family a flow or a change is about (pure), for `plan`, `apply` and the metrics.

A flow is IPv4 when it matches IPv4 or ARP fields (`ip`, `arp`, `nw_*`, `arp_*`, ...),
IPv6 when it matches IPv6 or neighbour discovery (`ipv6`, `icmp6`, `ipv6_*`, `nd_*`);
flows that match neither (the table-miss drops, `tun_id,in_port`, stp's `NORMAL`)
belong to no family.  A host change is classified by the address, route or sysctl it
names; links, ports, the CNI file and the nftables tables by none.
`family_stats` sums up a node by family for the agent's metrics.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from ipaddress import ip_network

from topology.mesh import peers_of
from topology.model import FAMILIES, Config

from ..ovs.model import T_TO_PEERS, BridgeChange, Flow, FlowChange, PortChange

_V4_PROTOS = {"ip", "arp", "icmp", "tcp", "udp", "sctp"}
_V6_PROTOS = {"ipv6", "icmp6", "tcp6", "udp6", "sctp6"}


def match_family(match: str) -> str | None:
    """The family of an OpenFlow match as ovs-ofctl prints it ("ip,nw_dst=..."), or None."""
    first = match.split(",", 1)[0]   # fast path: our flows start with their protocol
    if first in _V6_PROTOS:
        return "ipv6"
    if first in _V4_PROTOS:
        return "ipv4"
    for part in match.split(","):
        key = part.split("=", 1)[0].strip()
        if key in _V6_PROTOS or key.startswith(("ipv6_", "nd_")):
            return "ipv6"
        if key in _V4_PROTOS or key.startswith(("nw_src", "nw_dst", "arp_")):
            return "ipv4"
    return None


def change_family(change) -> str | None:
    """The family a change of `plan`/`apply` is about (None: not about one): a flow's by its
    match, a host address's, route's or sysctl's by the name it prints."""
    if isinstance(change, FlowChange):
        flow = change.new if change.new is not None else change.old
        assert flow is not None   # a flow change has an old flow, a new one, or both
        return match_family(flow.match)
    if isinstance(change, (BridgeChange, PortChange)):
        return None
    # Imported here: host.model loads the netlink adapter, which the offline commands never
    # need; a host change only exists once the host layer is loaded.
    from ..host.model import Address, HostChange, HostRoute, Sysctl

    if not isinstance(change, HostChange):
        return None
    name = change.name
    if isinstance(change.obj, (Address, HostRoute)):
        try:
            return "ipv6" if ip_network(name.split()[0], strict=False).version == 6 else "ipv4"
        except (ValueError, IndexError):
            return None
    if isinstance(change.obj, Sysctl):
        return "ipv6" if ".ipv6." in name else "ipv4" if ".ipv4." in name else None
    return None


def count(families: Iterable[str | None]) -> dict[str, int]:
    """How many of each family (every family present, 0 where none)."""
    c = Counter(f for f in families if f is not None)
    return {f: c.get(f, 0) for f in FAMILIES}


@dataclasses.dataclass(frozen=True)
class FamilyStats:
    """The per-family numbers the agent exports after a reconcile (see agent/metrics.py)."""
    peers_with_subnet: dict[str, int]        # peers this node tunnels to with a pod subnet of the family
    flows: dict[str, int]                    # our flows matching the family
    overlay_routes: dict[str, int]           # table-10 rules sending a peer subnet of the family out
    subnets: tuple[tuple[str, str, str], ...] = ()   # this node's (family, subnet, gateway)
    underlay: tuple[str, str] | None = None          # (family, address) of this node's underlay


def family_stats(config: Config, flows: Iterable[Flow]) -> FamilyStats:
    """What a converged node holds, by family: from the topology and the flows installed."""
    local = config.node(config.local.node)
    peers = peers_of(config.cluster, config.nodes, config.local.node)
    tagged = [(f, match_family(f.match)) for f in flows]
    routes = [fam for f, fam in tagged
              if f.table == T_TO_PEERS and ("nw_dst=" in f.match or "ipv6_dst=" in f.match)]
    subnets: tuple = ()
    if local is not None:
        subnets = tuple((s, str(net), str(gw)) for s, net, gw in (
            ("ipv4", local.subnet, local.subnet and local.gateway),
            ("ipv6", local.subnet6, local.subnet6 and local.gateway6)) if net is not None)
    return FamilyStats(
        peers_with_subnet={"ipv4": sum(p.subnet is not None for p in peers),
                           "ipv6": sum(p.subnet6 is not None for p in peers)},
        flows=count(fam for _, fam in tagged),
        overlay_routes=count(routes),
        subnets=subnets,
        underlay=(local.underlay_family, str(local.ip)) if local is not None else None)
