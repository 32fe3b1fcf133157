"""Node entries: the checks of one entry on its own, and the checks across entries.

Why two parts: the file source re-reads a 5000-node file on every edit, and
only a few entries change.  `node_entry` is everything one entry's own fields
decide (well-formed name, a unicast IP outside the pod range, a canonical subnet
of the right size inside it), computed once per entry text and cluster and
cached by the caller; `check_entries` is the pass across entries (duplicate
names and IPs, overlapping subnets, capacity), a few dict lookups per entry.
Both paths, the full parse and the cached one, run this same code, so they
report the same problems in the same order.
"""
from __future__ import annotations

import dataclasses
import re
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from typing import Any, Callable

from .errors import show
from .model import Cluster, Node

NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
NODE_KEYS = ("name", "ip", "subnet")
MISSING = object()
_UNKNOWN = f"unknown key (allowed: {', '.join(sorted(NODE_KEYS))})"
_DNS = "must be a DNS name (lower case letters, digits, '-', '.')"


def parse_network(raw: Any) -> tuple[IPv4Network | None, str | None]:
    """A canonical IPv4 CIDR, or (None, reason)."""
    if not isinstance(raw, str):
        return None, "must be an IPv4 CIDR like 10.244.0.0/16"
    try:
        net = ip_network(raw, strict=False)
    except ValueError:
        return None, "not an IPv4 CIDR"
    if net.version != 4 or "/" not in raw:
        return None, "not an IPv4 CIDR"
    if str(net) != raw:
        return None, f"not canonical: host bits set (did you mean {net}?)"
    return net, None


def parse_node_ip(raw: Any, cluster: Cluster | None) -> tuple[IPv4Address | None, str | None]:
    """A unicast IPv4 address usable as a tunnel endpoint, or (None, reason)."""
    if not isinstance(raw, str):
        return None, "must be an IPv4 address"
    try:
        ip = ip_address(raw)
    except ValueError:
        return None, "not an IPv4 address"
    if ip.version != 4:
        return None, "not an IPv4 address"
    for bad, reason in (
        (ip.is_unspecified, "not unicast: unspecified"),
        (ip.is_loopback, "not unicast: loopback"),
        (ip.is_multicast, "not unicast: multicast"),
        (ip == IPv4Address("255.255.255.255"), "not unicast: broadcast"),
        (ip.is_reserved, "not unicast: reserved (240.0.0.0/4)"),
        (ip.is_link_local, "not usable: link-local"),
    ):
        if bad:
            return None, reason
    if cluster is not None and ip in cluster.cidr:
        return None, f"inside cluster.cidr {cluster.cidr}: node IPs must be outside the pod range"
    return ip, None


def check_subnet(subnet: IPv4Network, cluster: Cluster) -> str | None:
    if not subnet.subnet_of(cluster.cidr):
        return f"outside cluster.cidr {cluster.cidr}"
    if subnet.prefixlen != cluster.node_prefix:
        return f"wrong size: cluster.node_prefix is /{cluster.node_prefix}"
    return None


@dataclasses.dataclass(frozen=True)
class Entry:
    """What one node entry's own fields say, in the order problems are reported.

    `steps`: ("problem", path suffix, value, reason) for a problem of its own, or
    ("name" | "ip" | "subnet", key, raw value, parsed value) where a cross-entry
    check goes; the key is a cheap-to-hash stand-in for the parsed value (ipaddress
    objects hash in Python, 5000 of them per parse would cost more than the rest).
    `node`: the Node when the entry has no problem of its own; `mapping`: False
    for an entry that is not a mapping (a bad entry, with or without a problem)."""
    steps: tuple
    node: Node | None
    mapping: bool = True


def node_entry(raw: Any, cluster: Cluster, require_subnet: bool = False) -> Entry:
    """The checks of one entry of `nodes` that need no other entry."""
    if not isinstance(raw, dict):
        steps = () if raw is None else (("problem", "", raw, "must be a mapping"),)
        return Entry(steps, None, mapping=False)
    steps: list = [("problem", f".{show(k)}", raw[k], _UNKNOWN) for k in raw if k not in NODE_KEYS]
    name = raw.get("name", MISSING)
    if name is MISSING:
        steps.append(("problem", ".name", None, "required"))
    elif not isinstance(name, str) or not NODE_NAME.match(name):
        steps.append(("problem", ".name", name, _DNS))
    else:
        steps.append(("name", name, name, name))
    ip_raw = raw.get("ip", MISSING)
    ip = None
    if ip_raw is MISSING:
        steps.append(("problem", ".ip", None, "required"))
    else:
        ip, reason = parse_node_ip(ip_raw, cluster)
        steps.append(("problem", ".ip", ip_raw, reason) if reason else ("ip", (ip.version, int(ip)), ip_raw, ip))
    subnet = None
    sub_raw = raw.get("subnet", MISSING)
    if sub_raw in (MISSING, None):
        if require_subnet:
            steps.append(("problem", ".subnet", None, "required (run `ovs-mesh allocate` to assign one)"))
    else:
        subnet, reason = parse_network(sub_raw)
        reason = reason or check_subnet(subnet, cluster)
        steps.append(("problem", ".subnet", sub_raw, reason) if reason
                     else ("subnet", (subnet.version, int(subnet.network_address), subnet.prefixlen), sub_raw, subnet))
        if reason:
            subnet = None
    own = sum(1 for s in steps if s[0] == "problem")
    return Entry(tuple(steps), None if own else Node(name=name, ip=ip, subnet=subnet))


def check_entries(error: Callable[[str, Any, str], None], raw_nodes: list, cluster: Cluster, path: str,
                  entries: Callable[[int, Any], Entry]) -> tuple[list[Node], set[int]]:
    """The pass across entries: (good nodes, indexes of bad entries); problems go to `error`.

    A node that conflicts with an earlier one (duplicate name or IP, overlapping
    subnet) is the bad one; the earlier keeps its place.  Valid subnets all have
    cluster.node_prefix and lie in the cluster range, so two of them overlap
    exactly when they are equal: a dict finds it."""
    nodes: list[Node] = []
    bad: set[int] = set()
    seen: dict[str, dict] = {"name": {}, "ip": {}, "subnet": {}}
    for i, raw in enumerate(raw_nodes):
        e = entries(i, raw)
        failed = not e.mapping
        for step in e.steps:
            kind = step[0]
            if kind == "problem":
                error(f"{path}[{i}]{step[1]}", step[2], step[3])
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
    capacity = 2 ** (cluster.node_prefix - cluster.cidr.prefixlen)
    if len(raw_nodes) > capacity:
        error(path, f"{len(raw_nodes)} nodes",
              f"more than cluster.cidr {cluster.cidr} holds at /{cluster.node_prefix} ({capacity})")
    return nodes, bad
