"""Validate node entries (pure): the file's `nodes` list and the Kubernetes source's Nodes.

Per node: a DNS name, an underlay `ip` of either family (every node the same
family: the tunnels use one), and `subnet`: one pod subnet per cluster family,
written as "a", "a,b" or [a, b] (like Kubernetes' `spec.podCIDRs`).  Each
subnet lies in the cluster range of its family, has that family's node prefix
and overlaps no other node's; node IPs lie outside every pod range.
"""
from __future__ import annotations

from ipaddress import ip_network
from typing import Any

from .addresses import LABEL, family_of, inside, parse_cidr_list, parse_ip
from .checker import MISSING, NODE_NAME, Checker
from .errors import Problem
from .model import Address, Cluster, Network, Node

NODE_KEYS = ("name", "ip", "subnet")


def check_nodes(raw_nodes: list, cluster: Cluster, path: str = "nodes",
                require_subnet: bool = False, limit: int | None = None
                ) -> tuple[list[Node], list[Problem], set[int]]:
    """Validate node entries.  Returns (good nodes, problems, indexes of bad entries).

    A node that conflicts with an earlier one (duplicate name or IP, overlapping
    subnet, another underlay family) is the bad one; the earlier keeps its place.
    With `require_subnet` every family of the cluster needs its subnet.
    """
    c = Checker(limit)
    nodes, bad = check_node_list(c, raw_nodes, cluster, path, require_subnet)
    return nodes, c.problems(), bad


def node_subnets_of(raw: Any) -> dict[str, Network]:
    """The subnets of a node entry that has passed validation, by family."""
    if raw is None:
        return {}
    items, _ = parse_cidr_list(raw)
    return {family_of(net): net for _, net, _ in items if net is not None}


def missing_subnets(cluster: Cluster, node: Node) -> str | None:
    """None when `node` has a subnet of every cluster family, else what it lacks:
    "subnet" (none at all, as before dual-stack) or "IPv6 subnet" / "IPv4 subnet"."""
    have = {"ipv4": node.subnet, "ipv6": node.subnet6}
    missing = [f for f in cluster.families if have[f] is None]
    if not missing:
        return None
    if len(missing) == len(cluster.families):
        return "subnet"
    return f"{LABEL[missing[0]]} subnet"


def node_prefix_of(cluster: Cluster, family: str) -> tuple[str, int]:
    """(config key, prefix length) of a family's node subnets."""
    if family == "ipv4":
        return "node_prefix", cluster.node_prefix
    return "node_prefix_ipv6", cluster.node_prefix6


def cidr_of(cluster: Cluster, family: str) -> Network | None:
    return cluster.cidr if family == "ipv4" else cluster.cidr6


def subnet_problem(net: Network, cluster: Cluster) -> str | None:
    """Why `net` cannot be a node subnet of `cluster` (None when it can)."""
    family = family_of(net)
    cidr = cidr_of(cluster, family)
    if cidr is None:
        ranges = ", ".join(str(x) for x in cluster.cidrs)
        return f"an {LABEL[family]} subnet, but the cluster has no {LABEL[family]} range (cluster.cidr {ranges})"
    if not inside(net, cidr):
        return f"outside cluster.cidr {cidr}"
    key, prefix = node_prefix_of(cluster, family)
    if net.prefixlen != prefix:
        return f"wrong size: cluster.{key} is /{prefix}"
    return None


class _Seen:
    """What earlier good nodes hold: names, IPs, subnets (valid subnets of one family all
    have one prefix inside one range, so two overlap exactly when they are equal)."""

    def __init__(self) -> None:
        self.names: dict[str, int] = {}
        self.ips: dict[Address, int] = {}
        self.subnets: dict[Network, int] = {}
        self.underlay: tuple[str, int] | None = None   # family of the first node IP, its index


def check_node_list(c: Checker, raw_nodes: list, cluster: Cluster, path: str,
                    require_subnet: bool) -> tuple[list[Node], set[int]]:
    nodes: list[Node] = []
    bad: set[int] = set()
    seen = _Seen()
    for i, raw in enumerate(raw_nodes):
        p = f"{path}[{i}]"
        before = c.count
        entry = c.mapping(p, raw, NODE_KEYS)
        if not isinstance(raw, dict):
            bad.add(i)
            continue
        name = entry.get("name", MISSING)
        if name is MISSING:
            c.error(f"{p}.name", None, "required")
        elif not isinstance(name, str) or not NODE_NAME.match(name):
            c.error(f"{p}.name", name, "must be a DNS name (lower case letters, digits, '-', '.')")
        elif name in seen.names:
            c.error(f"{p}.name", name, f"duplicate of {path}[{seen.names[name]}].name")
        ip = _node_ip(c, p, i, entry.get("ip", MISSING), cluster, seen, path)
        subnets = _node_subnets(c, p, entry.get("subnet", MISSING), cluster, seen, path, require_subnet)
        if c.count > before:
            bad.add(i)
            continue
        seen.names[name] = i
        seen.ips[ip] = i
        for net in subnets.values():
            seen.subnets[net] = i
        nodes.append(Node(name=name, ip=ip, subnet=subnets.get("ipv4"), subnet6=subnets.get("ipv6")))
    for family in cluster.families:
        cidr = cidr_of(cluster, family)
        _, prefix = node_prefix_of(cluster, family)
        capacity = 2 ** (prefix - cidr.prefixlen)
        if len(raw_nodes) > capacity:
            c.error(path, f"{len(raw_nodes)} nodes",
                    f"more than cluster.cidr {cidr} holds at /{prefix} ({capacity})")
    return nodes, bad


def _node_ip(c: Checker, p: str, i: int, raw: Any, cluster: Cluster, seen: _Seen,
             path: str) -> Address | None:
    if raw is MISSING:
        c.error(f"{p}.ip", None, "required")
        return None
    ip, reason = parse_ip(raw)
    if reason:
        c.error(f"{p}.ip", raw, reason)
        return None
    for cidr in cluster.cidrs:
        if cidr.version == ip.version and int(ip) >> (cidr.max_prefixlen - cidr.prefixlen) == \
                int(cidr.network_address) >> (cidr.max_prefixlen - cidr.prefixlen):
            c.error(f"{p}.ip", raw, f"inside cluster.cidr {cidr}: node IPs must be outside the pod range")
            return None
    family = family_of(ip)
    if seen.underlay is None:
        seen.underlay = (family, i)
    elif seen.underlay[0] != family:
        first, j = seen.underlay
        c.error(f"{p}.ip", raw, f"an {LABEL[family]} underlay address, but {path}[{j}].ip is {LABEL[first]}: "
                                "every node's ip must be of one family (the tunnels use one)")
        return None
    if ip in seen.ips:
        c.error(f"{p}.ip", raw, f"duplicate of {path}[{seen.ips[ip]}].ip")
        return None
    return ip


def _node_subnets(c: Checker, p: str, raw: Any, cluster: Cluster, seen: _Seen, path: str,
                  require: bool) -> dict[str, Network]:
    """The node's subnets by family; each problem reported on `p.subnet` with the one value."""
    got: dict[str, Network] = {}
    families: set[str] = set()   # families written, valid or not
    if raw is MISSING or raw is None:
        if require:
            c.error(f"{p}.subnet", None, "required (run `ovs-mesh allocate` to assign one)")
        return got
    items, whole = parse_cidr_list(raw)
    if whole:
        c.error(f"{p}.subnet", raw, whole)
        return got
    for item, net, reason in items:
        if net is None:
            try:   # the family of a bad value, so that it is not reported missing as well
                families.add(family_of(ip_network(item, strict=False)))
            except (TypeError, ValueError):
                pass
        else:
            families.add(family_of(net))
            reason = subnet_problem(net, cluster)
        if reason:
            c.error(f"{p}.subnet", item, reason)
        elif net in seen.subnets:
            c.error(f"{p}.subnet", item, f"overlaps {path}[{seen.subnets[net]}].subnet {net}")
        else:
            got[family_of(net)] = net
    if require:
        for family in cluster.families:
            if family not in families:
                cidr = cidr_of(cluster, family)
                c.error(f"{p}.subnet", raw, f"no {LABEL[family]} subnet: the cluster has {cidr} "
                                            "(one subnet per family; `ovs-mesh allocate` assigns it)")
    return got
