"""Kubernetes Node objects -> validated mesh peers (pure: no API calls, no logging).

Why this exists: the list/watch loop (`kubernetes_source.py`) only keeps the
raw fields of each Node; this module decides which of them make a peer and
says why the others do not, in the Node's own field names.

Which fields, per family (dual-stack):
  - pod subnets: ``spec.podCIDRs`` (one per family, as kube-controller-manager
    allocates them with ``--cluster-cidr=v4,v6``), or ``spec.podCIDR`` on a
    Node without podCIDRs.  A Node needs one of every family the cluster has;
    extra families are ignored (a dual-stack Node in an IPv4-only mesh is an
    IPv4 peer).
  - underlay address: the first ``InternalIP`` of the *underlay family*; a
    Node with InternalIPs of both families uses the one of that family.
The underlay family (`underlay_family`) is ``kubernetes.underlay_family`` when
given, else the family of the cluster's first range: IPv4 for an IPv4 or
dual-stack cluster, IPv6 for an IPv6-only one.  It comes from the shared
config, not from the local Node's address, so that every agent picks the same
family (the tunnels use one) even when Nodes differ, and before the local
Node is seen.

Validation is `topology.config.check_nodes`, the same rules as the file
source; its messages are rewritten with the Kubernetes names and fields, e.g.
``node worker-3: spec.podCIDR: 10.245.0.0/24: outside cluster.cidr 10.244.0.0/16``.
A Node missing a family gets its own line, e.g.
``node worker-3: spec.podCIDRs: [10.244.3.0/24]: no IPv6 pod CIDR, the cluster has fd00:10:244::/56``.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

from topology.config import check_nodes
from topology.model import Cluster, Node
from topology.nodes import Entry, node_entry

LABEL = {"ipv4": "IPv4", "ipv6": "IPv6"}
IP_FIELD = "status.addresses[InternalIP]"
_PATH = re.compile(r"node\[(\d+)\]\.(\w+)")

# A problem: (level, message); keyed by (node name, message) so that each is logged once.
Problems = dict[tuple[str, str], tuple[int, str]]


@dataclasses.dataclass(frozen=True)
class NodeObject:
    """What the mesh reads of one Node: compared whole, so heartbeats change nothing."""
    name: str
    internal_ips: tuple = ()     # every InternalIP address, in the Node's order (raw values)
    pod_cidrs: tuple = ()        # spec.podCIDRs, or (spec.podCIDR,) when podCIDRs is absent
    pod_cidr: Any = None         # spec.podCIDR (the primary one)
    cidrs_field: str = "spec.podCIDRs"


def node_object(obj: dict) -> NodeObject | None:
    """The fields of a raw Node dict; None without a usable metadata.name."""
    name = (obj.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        return None
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    addresses = status.get("addresses") or []
    ips = tuple(a.get("address") for a in (addresses if isinstance(addresses, list) else [])
                if isinstance(a, dict) and a.get("type") == "InternalIP")
    primary = spec.get("podCIDR")
    cidrs = spec.get("podCIDRs")
    if isinstance(cidrs, list) and cidrs:
        return NodeObject(name, ips, tuple(cidrs), primary, "spec.podCIDRs")
    return NodeObject(name, ips, (primary,) if primary is not None else (), primary, "spec.podCIDR")


def default_underlay_family(cluster: Cluster) -> str:
    """IPv6 for an IPv6-only cluster, else IPv4 (see the module docstring)."""
    return "ipv6" if cluster.families == ("ipv6",) else "ipv4"


def _family(value: Any) -> str:
    """The family a value claims to be (IPv6 if it has a colon); malformed values keep
    their claim so that validation names them."""
    return "ipv6" if isinstance(value, str) and ":" in value else "ipv4"


def _listed(values) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


def _cidr_of(cluster: Cluster, family: str):
    return cluster.cidr if family == "ipv4" else cluster.cidr6


def select(o: NodeObject, cluster: Cluster, underlay: str) -> tuple[dict | None, tuple[str, int, str] | None]:
    """(entry for check_nodes, None) or (None, (problem key, level, message)) for one Node."""
    if not o.pod_cidrs:
        return None, ("no-cidr", logging.INFO, f"node {o.name}: spec.podCIDR: not set yet: waiting for it")
    if not o.internal_ips:
        return None, ("no-ip", logging.WARNING, f"node {o.name}: status.addresses: no InternalIP address: "
                                                "skipped")
    ip = next((a for a in o.internal_ips if _family(a) == underlay), None)
    if ip is None:
        shown = o.internal_ips[0] if len(o.internal_ips) == 1 else _listed(o.internal_ips)
        return None, ("ip-family", logging.WARNING,
                      f"node {o.name}: {IP_FIELD}: {shown}: not an {LABEL[underlay]} address: the underlay "
                      f"is {LABEL[underlay]} (kubernetes.underlay_family): skipped")
    subnets = []
    for family in cluster.families:
        cidr = next((c for c in o.pod_cidrs if _family(c) == family), None)
        if cidr is None:
            return None, ("cidr-family", logging.WARNING,
                          f"node {o.name}: {o.cidrs_field}: {_listed(o.pod_cidrs)}: no {LABEL[family]} pod "
                          f"CIDR, the cluster has {_cidr_of(cluster, family)}: skipped")
        subnets.append(cidr)
    return {"name": o.name, "ip": ip, "subnet": subnets[0] if len(subnets) == 1 else subnets}, None


def validate(objects: dict[str, NodeObject], cluster: Cluster, underlay: str, cache: dict | None = None
             ) -> tuple[tuple[Node, ...], Problems, dict]:
    """The good peers, every problem, and the cache for the next call.  Nodes are checked in
    name order, so of two overlapping Nodes the later name is the one skipped, whatever order
    they came in.  `cache`: name -> (its NodeObject, what `select` made of it, its entry's own
    checks, `topology.nodes.node_entry`) of the previous call, for this `cluster` and
    `underlay`: a Node whose object is the very one cached is not looked at again (the source
    keeps the object of a Node that did not change), and one that changed keeps its entry's
    checks while the entry (name, InternalIP, podCIDRs) is the same; only the Nodes still
    listed are returned, so a Node that left drops out."""
    raw: list[dict] = []
    entries: list[Entry] = []
    problems: Problems = {}
    cache, kept = cache or {}, {}
    for name in sorted(objects):
        o, hit = objects[name], cache.get(name)
        if hit is None or hit[0] is not o:
            entry, problem = select(o, cluster, underlay)
            checked: Entry | None = None
            if entry is not None:
                checked = hit[3] if hit is not None and hit[1] == entry else node_entry(entry, cluster)
            hit = (o, entry, problem, checked)
        kept[name] = hit
        _, entry, problem, checked = hit
        if problem is not None:
            _, level, msg = problem
            problems[(name, msg)] = (level, msg)
        else:
            assert entry is not None and checked is not None   # select gave an entry, not a problem
            raw.append(entry)
            entries.append(checked)
    # `select` already gave every entry a podCIDR of each cluster family (or skipped the Node
    # with its own line): check_nodes need not report missing ones again.
    good, errors, _ = check_nodes(raw, cluster, path="node", require_subnet=False, entries=lambda i, _r: entries[i])
    for err in errors:  # keyed by names, not list positions, which shift as Nodes come and go
        msg = explain(err, raw, objects)
        m = _PATH.fullmatch(err.path)
        key = (raw[int(m.group(1))]["name"], msg) if m else ("", re.sub(r"\d+ nodes", "N nodes", msg))
        problems[key] = (logging.WARNING, msg + ": skipped")
    return tuple(sorted(good, key=_name)), problems, kept   # names are unique among the good ones


def _name(node: Node) -> str:
    return node.name


def _field(attr: str, value: str, obj: NodeObject | None) -> str:
    """Where a check_nodes field came from on the Node: an IPv4 podCIDR (or the primary
    one) is spec.podCIDR, a second-family one spec.podCIDRs."""
    if attr == "ip":
        return IP_FIELD
    if attr == "name":
        return "metadata.name"
    if attr != "subnet":
        return attr
    if _family(value) == "ipv4" or (obj is not None and value == obj.pod_cidr):
        return "spec.podCIDR"
    return "spec.podCIDRs"


def explain(err, raw: list[dict], objects: dict[str, NodeObject]) -> str:
    """``node[3].subnet: V: overlaps node[1].subnet N`` -> Kubernetes names and fields."""
    def name(i: str) -> str:
        return raw[int(i)]["name"] if int(i) < len(raw) else f"#{i}"

    def inner(m: re.Match) -> str:
        n = name(m.group(1))
        return f"node {n}'s {_field(m.group(2), err.value, objects.get(n))}"

    m = _PATH.fullmatch(err.path)
    if not m:
        return str(err)
    n = name(m.group(1))
    rest = f"{err.value}: {_PATH.sub(inner, err.reason)}"
    return f"node {n}: {_field(m.group(2), err.value, objects.get(n))}: {rest}"


def describe(node: Node) -> str:
    """`name ip subnet[,subnet6]` for the peer added/changed log lines."""
    return f"{node.name} {node.ip} {','.join(str(s) for s in node.subnets)}"
