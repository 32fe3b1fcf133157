"""Validate node entries (pure): the file's `nodes` list and the Kubernetes source's Nodes.

Per node: a DNS name, an underlay `ip` of either family (every node the same
family: the tunnels use one), and `subnet`: one pod subnet per cluster family,
written as "a", "a,b" or [a, b] (like Kubernetes' `spec.podCIDRs`).  Each
subnet lies in the cluster range of its family, has that family's node prefix
and overlaps no other node's; node IPs lie outside every pod range.

Two parts, because the file source re-reads a 5000-node file on every edit and
only a few entries change: `node_entry` is everything one entry's own fields
decide (a well-formed name, a usable IP of either family outside the pod
ranges, canonical subnets of the right size inside their family's range, the
families a subnet lacks), computed once per entry text and cluster and cached
by the caller (`ovs_mesh.config.items`, the Kubernetes source); `check_entries`
is the pass across entries (duplicate names and IPs, overlapping subnets per
family, one underlay family across nodes, capacity per family), a few dict
lookups per entry.  The full parse and the cached one run this same code, so
they report the same problems in the same order.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Callable
from ipaddress import ip_network
from typing import Any

from .addresses import LABEL, family_of, holds, inside, parse_cidr_list, parse_ip
from .checker import MISSING, NODE_NAME, Checker
from .errors import Problem, show
from .model import Cluster, Network, Node
from .options import keys_of

NODE_KEYS = keys_of("nodes[]")
_UNKNOWN = f"unknown key (allowed: {', '.join(sorted(NODE_KEYS))})"
_DNS = "must be a DNS name (lower case letters, digits, '-', '.')"


def check_nodes(raw_nodes: list, cluster: Cluster, path: str = "nodes",
                require_subnet: bool = False, limit: int | None = None,
                entries: Callable[[int, Any], Entry] | None = None
                ) -> tuple[list[Node], list[Problem], set[int]]:
    """Validate node entries.  Returns (good nodes, problems, indexes of bad entries).

    A node that conflicts with an earlier one (duplicate name or IP, overlapping
    subnet, another underlay family) is the bad one; the earlier keeps its place.
    With `require_subnet` every family of the cluster needs its subnet.
    `entries(i, raw)` gives each entry's own checks (`node_entry`) from a cache,
    when the caller has one.
    """
    c = Checker(limit)
    nodes, bad = check_node_list(c, raw_nodes, cluster, path, require_subnet, entries)
    return nodes, c.problems(), bad


def node_subnets_of(raw: Any) -> dict[str, Network]:
    """The subnets of a node entry that has passed validation, by family."""
    if raw is None:
        return {}
    items, _ = parse_cidr_list(raw)
    return {family_of(net): net for _, net, _ in items if net is not None}


def missing_subnets(cluster: Cluster, node: Node) -> str | None:
    """None when `node` has a subnet of every cluster family, else what it lacks:
    "subnet" (none at all, whatever the families) or "IPv6 subnet" / "IPv4 subnet"."""
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


@dataclasses.dataclass(frozen=True)
class Entry:
    """What one node entry's own fields say, in the order problems are reported.

    `steps`: ("problem", path suffix, value, reason) for a problem of its own, or
    ("name" | "ip" | "subnet", key, raw value, parsed value) where a cross-entry
    check goes; the key is a cheap-to-hash stand-in for the parsed value (ipaddress
    objects hash in Python, 5000 of them per parse would cost more than the rest):
    (version, integer) for an IP, (version, integer, prefix) for a subnet.
    `node`: the Node when the entry has no problem of its own; `mapping`: False
    for an entry that is not a mapping (a bad entry, with or without a problem)."""
    steps: tuple
    node: Node | None
    mapping: bool = True


def node_entry(raw: Any, cluster: Cluster, require_subnet: bool = False) -> Entry:
    """The checks of one entry of `nodes` that need no other entry."""
    if not isinstance(raw, dict):
        bad = () if raw is None else (("problem", "", raw, "must be a mapping"),)
        return Entry(bad, None, mapping=False)
    steps: list = [("problem", f".{show(k)}", raw[k], _UNKNOWN) for k in raw if k not in NODE_KEYS]
    name = raw.get("name", MISSING)
    if name is MISSING:
        steps.append(("problem", ".name", None, "required"))
    elif not isinstance(name, str) or not NODE_NAME.match(name):
        steps.append(("problem", ".name", name, _DNS))
    else:
        steps.append(("name", name, name, name))
    ip = _node_ip(steps, raw.get("ip", MISSING), cluster)
    subnets = _node_subnets(steps, raw.get("subnet", MISSING), cluster, require_subnet)
    key = raw.get("wireguard_public_key")
    reason = None if key is None else wireguard_key_problem(key)
    if reason:
        steps.append(("problem", ".wireguard_public_key", key, reason))
    if any(s[0] == "problem" for s in steps):
        return Entry(tuple(steps), None)
    return Entry(tuple(steps), Node(name=name, ip=ip, subnet=subnets.get("ipv4"), subnet6=subnets.get("ipv6"),
                                    wireguard_key=key))


def wireguard_key_problem(key: Any) -> str | None:
    """Why `key` is not a WireGuard public key (base64 of 32 bytes), None when it is."""
    if not isinstance(key, str):
        return "must be a WireGuard public key (base64 of 32 bytes)"
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32 or base64.b64encode(raw).decode() != key:
        return "must be a WireGuard public key (base64 of 32 bytes, as `wg pubkey` prints it)"
    return None


def _node_ip(steps: list, raw: Any, cluster: Cluster) -> Any:
    if raw is MISSING:
        steps.append(("problem", ".ip", None, "required"))
        return None
    ip, reason = parse_ip(raw)
    if reason:
        steps.append(("problem", ".ip", raw, reason))
        return None
    for cidr in cluster.cidrs:
        if holds(cidr, ip):
            steps.append(("problem", ".ip", raw, f"inside cluster.cidr {cidr}: node IPs must be outside the pod range"))
            return None
    steps.append(("ip", (ip.version, int(ip)), raw, ip))
    return ip


def _node_subnets(steps: list, raw: Any, cluster: Cluster, require: bool) -> dict[str, Network]:
    """The node's subnets by family; each problem reported on `.subnet` with the one value."""
    got: dict[str, Network] = {}
    families: set[str] = set()   # families written, valid or not
    if raw is MISSING or raw is None:
        if require:
            steps.append(("problem", ".subnet", None, "required (run `ovs-mesh allocate` to assign one)"))
        return got
    items, whole = parse_cidr_list(raw)
    if whole:
        steps.append(("problem", ".subnet", raw, whole))
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
            steps.append(("problem", ".subnet", item, reason))
        else:
            steps.append(("subnet", (net.version, int(net.network_address), net.prefixlen), item, net))
            got[family_of(net)] = net
    if require:
        for family in cluster.families:
            if family not in families:
                cidr = cidr_of(cluster, family)
                steps.append(("problem", ".subnet", raw, f"no {LABEL[family]} subnet: the cluster has {cidr} "
                                                         "(one subnet per family; `ovs-mesh allocate` assigns it)"))
    return got


def check_node_list(c: Checker, raw_nodes: list, cluster: Cluster, path: str, require_subnet: bool,
                    entries: Callable[[int, Any], Entry] | None = None) -> tuple[list[Node], set[int]]:
    """The node checks: each entry's own from `entries` (a cache) when given, then the pass across."""
    if entries is None:
        def entries(_i: int, raw: Any) -> Entry:
            return node_entry(raw, cluster, require_subnet)
    return check_entries(c.error, raw_nodes, cluster, path, entries)


def check_entries(error: Callable[[str, Any, str], None], raw_nodes: list, cluster: Cluster, path: str,
                  entries: Callable[[int, Any], Entry]) -> tuple[list[Node], set[int]]:
    """The pass across entries: (good nodes, indexes of bad entries); problems go to `error`.

    A node that conflicts with an earlier one (duplicate name or IP, overlapping
    subnet, another underlay family) is the bad one; the earlier keeps its place.
    The underlay family is the one of the first usable IP, even of an entry that
    is bad for another reason.  Valid subnets of one family all have one prefix
    inside one range, so two of them overlap exactly when they are equal: a dict
    finds it (the key holds the family)."""
    nodes: list[Node] = []
    bad: set[int] = set()
    seen: dict[str, dict] = {"name": {}, "ip": {}, "subnet": {}}
    underlay: tuple[int, int] | None = None   # IP version of the first usable node IP, its index
    for i, raw in enumerate(raw_nodes):
        e = entries(i, raw)
        failed = not e.mapping
        for step in e.steps:
            kind = step[0]
            if kind == "problem":
                error(f"{path}[{i}]{step[1]}", step[2], step[3])
                failed = True
                continue
            if kind == "ip":
                version = step[1][0]
                if underlay is None:
                    underlay = (version, i)
                elif underlay[0] != version:
                    family, first = family_of(step[3]), "IPv4" if underlay[0] == 4 else "IPv6"
                    error(f"{path}[{i}].ip", step[2],
                          f"an {LABEL[family]} underlay address, but {path}[{underlay[1]}].ip is {first}: "
                          "every node's ip must be of one family (the tunnels use one)")
                    failed = True
                    continue
            j = seen[kind].get(step[1])
            if j is not None:
                reason = (f"overlaps {path}[{j}].subnet {step[3]}" if kind == "subnet"
                          else f"duplicate of {path}[{j}].{kind}")
                error(f"{path}[{i}].{kind}", step[2], reason)
                failed = True
        if failed:
            bad.add(i)
            continue
        for step in e.steps:   # a good entry has no "problem" step
            seen[step[0]][step[1]] = i
        nodes.append(e.node)
    for family in cluster.families:
        cidr = cidr_of(cluster, family)
        _, prefix = node_prefix_of(cluster, family)
        capacity = 2 ** (prefix - cidr.prefixlen)
        if len(raw_nodes) > capacity:
            error(path, f"{len(raw_nodes)} nodes", f"more than cluster.cidr {cidr} holds at /{prefix} ({capacity})")
    return nodes, bad
