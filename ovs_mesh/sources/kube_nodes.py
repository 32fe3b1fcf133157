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

Who keeps a contested subnet or address.  The API is written by many (every
kubelet, the controller manager, operators), so one Node that claims another's
pod subnet or InternalIP must not take it over.  The Nodes are checked in
*seniority* order, and of two that claim one value the later one is kept out:
the local node first (a claim on what this node holds is the claimant's
problem, never ours), then the older ``metadata.creationTimestamp`` (set by
the API server; a Node without a valid one comes last), then the name.  Every
agent sees the same objects, so every agent keeps the same Nodes out (only a
claimant of an agent's own node is judged otherwise on that one agent).  When
the holder leaves, the claimant is the holder from then on.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import re
from datetime import UTC, datetime
from typing import Any

from topology.config import check_nodes
from topology.errors import show
from topology.model import Cluster, Node
from topology.nodes import Entry, node_entry

LABEL = {"ipv4": "IPv4", "ipv6": "IPv6"}
IP_FIELD = "status.addresses[InternalIP]"
_PATH = re.compile(r"node\[(\d+)\]\.(\w+)")

# Why a Node is not a peer, as the metrics and `status` count it: a small fixed set, whatever
# the Nodes say, so that the series stay bounded.
SUBNET_TAKEN = "subnet-taken"      # its pod subnet is held by another Node
ADDRESS_TAKEN = "address-taken"    # its InternalIP is held by another Node
INVALID = "invalid"                # a field the mesh cannot use (malformed, outside the range, ...)
INCOMPLETE = "incomplete"          # no podCIDR (of every family) or no InternalIP yet
REASONS = (SUBNET_TAKEN, ADDRESS_TAKEN, INVALID, INCOMPLETE)
QUOTED = 5   # values of a list quoted in one message; the rest are counted


@dataclasses.dataclass(frozen=True)
class Problem:
    """Why one Node (or, with name "", the Node set) is not used: `reason` is one of REASONS
    (None for a problem of the whole set, such as more Nodes than the range holds)."""
    level: int
    message: str
    reason: str | None = INVALID


# Keyed by (node name, message) so that each is logged once.
Problems = dict[tuple[str, str], Problem]


@dataclasses.dataclass(frozen=True)
class NodeObject:
    """What the mesh reads of one Node: compared whole, so heartbeats change nothing."""
    name: str
    internal_ips: tuple = ()     # every InternalIP address, in the Node's order (raw values)
    pod_cidrs: tuple = ()        # spec.podCIDRs, or (spec.podCIDR,) when podCIDRs is absent
    pod_cidr: Any = None         # spec.podCIDR (the primary one)
    cidrs_field: str = "spec.podCIDRs"
    created: Any = None          # metadata.creationTimestamp (raw): the Node's seniority
    wireguard_key: Any = None    # metadata.annotations[WIREGUARD_ANNOTATION] (raw)


# The Node annotation holding a node's WireGuard public key (read with cluster.encryption wireguard;
# written by that node's own agent).
WIREGUARD_ANNOTATION = "ovs-mesh.io/wireguard-public-key"


def _mapping(value: Any) -> dict:
    """A field that should be a mapping; anything else (a garbage-typed field) reads as empty."""
    return value if isinstance(value, dict) else {}


def node_object(obj: dict) -> NodeObject | None:
    """The fields of a raw Node dict; None without a usable metadata.name.  Fields of the
    wrong type read as absent (the Node is then incomplete, and says so)."""
    meta = _mapping(obj.get("metadata"))
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        return None
    spec = _mapping(obj.get("spec"))
    status = _mapping(obj.get("status"))
    addresses = status.get("addresses") or []
    ips = tuple(a.get("address") for a in (addresses if isinstance(addresses, list) else [])
                if isinstance(a, dict) and a.get("type") == "InternalIP")
    primary = spec.get("podCIDR")
    cidrs = spec.get("podCIDRs")
    created = meta.get("creationTimestamp")
    key = _mapping(meta.get("annotations")).get(WIREGUARD_ANNOTATION)
    if isinstance(cidrs, list) and cidrs:
        return NodeObject(name, ips, tuple(cidrs), primary, "spec.podCIDRs", created, key)
    return NodeObject(name, ips, (primary,) if primary is not None else (), primary, "spec.podCIDR", created, key)


def created_at(o: NodeObject) -> float | None:
    """metadata.creationTimestamp in seconds since the epoch; None when missing or malformed."""
    if not isinstance(o.created, str):
        return None
    try:
        t = datetime.fromisoformat(o.created.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def seniority(o: NodeObject, local: str | None = None) -> tuple:
    """The order in which Nodes hold what they claim (see the module docstring): the local
    node, then the older creationTimestamp (none: last), then the name."""
    t = created_at(o)
    return (o.name != local, math.inf if t is None else t, o.name)


def _why_held(holder: NodeObject | None, claimant: NodeObject | None, local: str | None) -> str:
    if holder is None or claimant is None:
        return "checked first"
    if holder.name == local:
        return "the local node"
    if seniority(holder)[1] < seniority(claimant)[1]:
        return "created earlier"
    return "the same creationTimestamp, name first"


def default_underlay_family(cluster: Cluster) -> str:
    """IPv6 for an IPv6-only cluster, else IPv4 (see the module docstring)."""
    return "ipv6" if cluster.families == ("ipv6",) else "ipv4"


def _family(value: Any) -> str:
    """The family a value claims to be (IPv6 if it has a colon); malformed values keep
    their claim so that validation names them."""
    return "ipv6" if isinstance(value, str) and ":" in value else "ipv4"


def _listed(values) -> str:
    """At most QUOTED values of a list, each quoted short, and a count of the rest: a Node
    with 5000 addresses gets a line of normal length."""
    shown = [show(v) for v in values[:QUOTED]]
    more = f", ... ({len(values) - QUOTED} more)" if len(values) > QUOTED else ""
    return "[" + ", ".join(shown) + more + "]"


def _cidr_of(cluster: Cluster, family: str):
    return cluster.cidr if family == "ipv4" else cluster.cidr6


def select(o: NodeObject, cluster: Cluster, underlay: str) -> tuple[dict | None, Problem | None]:
    """(entry for check_nodes, None) or (None, the problem) for one Node."""
    if not o.pod_cidrs:
        return None, Problem(logging.INFO, f"node {o.name}: spec.podCIDR: not set yet: waiting for it",
                             INCOMPLETE)
    if not o.internal_ips:
        return None, Problem(logging.WARNING, f"node {o.name}: status.addresses: no InternalIP address: "
                                              "skipped", INCOMPLETE)
    ip = next((a for a in o.internal_ips if _family(a) == underlay), None)
    if ip is None:
        shown = show(o.internal_ips[0]) if len(o.internal_ips) == 1 else _listed(o.internal_ips)
        return None, Problem(logging.WARNING,
                             f"node {o.name}: {IP_FIELD}: {shown}: not an {LABEL[underlay]} address: the "
                             f"underlay is {LABEL[underlay]} (kubernetes.underlay_family): skipped", INCOMPLETE)
    subnets = []
    for family in cluster.families:
        cidr = next((c for c in o.pod_cidrs if _family(c) == family), None)
        if cidr is None:
            return None, Problem(logging.WARNING,
                                 f"node {o.name}: {o.cidrs_field}: {_listed(o.pod_cidrs)}: no {LABEL[family]} "
                                 f"pod CIDR, the cluster has {_cidr_of(cluster, family)}: skipped", INCOMPLETE)
        subnets.append(cidr)
    entry = {"name": o.name, "ip": ip, "subnet": subnets[0] if len(subnets) == 1 else subnets}
    if cluster.encryption == "wireguard" and o.wireguard_key is not None:
        entry["wireguard_public_key"] = o.wireguard_key   # checked with the rest of the entry
    return entry, None


def validate(objects: dict[str, NodeObject], cluster: Cluster, underlay: str, cache: dict | None = None,
             local: str | None = None) -> tuple[tuple[Node, ...], Problems, dict]:
    """The good peers, every problem, and the cache for the next call.  Nodes are checked in
    seniority order (`seniority`: `local` first, then the older, then the name), so of two
    Nodes that claim one subnet or address the junior one is kept out, whatever order they
    came in.  `cache`: name -> (its NodeObject, what `select` made of it, its entry's own
    checks, `topology.nodes.node_entry`) of the previous call, for this `cluster` and
    `underlay`: a Node whose object is the very one cached is not looked at again (the source
    keeps the object of a Node that did not change), and one that changed keeps its entry's
    checks while the entry (name, InternalIP, podCIDRs) is the same; only the Nodes still
    listed are returned, so a Node that left drops out."""
    raw: list[dict] = []
    entries: list[Entry] = []
    problems: Problems = {}
    cache, kept = cache or {}, {}
    for o in sorted(objects.values(), key=lambda o: seniority(o, local)):
        hit = cache.get(o.name)
        if hit is None or hit[0] is not o:
            entry, problem = select(o, cluster, underlay)
            checked: Entry | None = None
            if entry is not None:
                checked = hit[3] if hit is not None and hit[1] == entry else node_entry(entry, cluster)
            hit = (o, entry, problem, checked)
        kept[o.name] = hit
        _, entry, problem, checked = hit
        if problem is not None:
            problems[(o.name, problem.message)] = problem
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
        if not m:
            problems[("", re.sub(r"\d+ nodes", "N nodes", msg))] = Problem(logging.WARNING, msg + ": skipped", None)
            continue
        name = raw[int(m.group(1))]["name"]
        held = _HELD.search(err.reason)
        if held is None:
            problems[(name, msg)] = Problem(logging.WARNING, msg + ": skipped", INVALID)
            continue
        holder = raw[int(held.group(1))]["name"]
        why = _why_held(objects.get(holder), objects.get(name), local)
        reason = SUBNET_TAKEN if m.group(2) == "subnet" else ADDRESS_TAKEN
        problems[(name, msg)] = Problem(logging.WARNING, f"{msg}: kept out: node {holder} holds it ({why})", reason)
    return tuple(sorted(good, key=_name)), problems, kept   # names are unique among the good ones


# check_entries' reason for a value an earlier entry holds: "overlaps node[3].subnet ..." or
# "duplicate of node[3].ip".
_HELD = re.compile(r"^(?:overlaps|duplicate of) node\[(\d+)\]\.")


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
