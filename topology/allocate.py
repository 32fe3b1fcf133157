"""Subnet allocation: give nodes without a subnet the lowest free one.

Existing assignments never move; allocation is deterministic (nodes in file
order take the lowest free subnets in turn) so running it twice changes nothing.
"""
from __future__ import annotations

from ipaddress import IPv4Network
from typing import Iterable

from .model import Cluster


class AllocationError(ValueError):
    pass


def free_subnets(cluster: Cluster, taken: Iterable[IPv4Network]):
    """Yield the cluster's node subnets that overlap nothing in `taken`, lowest first."""
    taken = sorted(set(taken))
    for candidate in cluster.cidr.subnets(new_prefix=cluster.node_prefix):
        if not any(candidate.overlaps(t) for t in taken):
            yield candidate


def allocate(cluster: Cluster, current: list[IPv4Network | None]) -> list[IPv4Network]:
    """Fill the None entries of `current` with the lowest free subnets, in order."""
    free = free_subnets(cluster, [s for s in current if s is not None])
    out = []
    for s in current:
        if s is None:
            s = next(free, None)
            if s is None:
                raise AllocationError(f"cluster.cidr: {cluster.cidr}: no free /{cluster.node_prefix} left")
        out.append(s)
    return out


def allocate_file(path: str, dry_run: bool = False) -> list[tuple[str, IPv4Network]]:
    """Allocate subnets in a config file, keeping its comments and layout.

    The file must be valid apart from missing subnets (it is validated first,
    and again after, so a bad file is never written).  Written atomically.
    """
    import io
    import sys

    from .config import _yaml, load_yaml, parse_config
    from .files import write_atomic

    with open(path, encoding="utf-8") as f:
        doc = load_yaml(f.read(), path, round_trip=True)
    config = parse_config(doc, require_local=False)
    entries = doc.get("nodes") or []
    current = [None if e.get("subnet") is None else IPv4Network(e["subnet"]) for e in entries]
    result = allocate(config.cluster, current)
    changed = []
    for entry, old, new in zip(entries, current, result):
        if old is None:
            entry["subnet"] = str(new)
            changed.append((entry["name"], new))
    if not changed:
        return []
    buf = io.StringIO()
    _yaml().dump(doc, buf)
    parse_config(load_yaml(buf.getvalue(), path, round_trip=True), require_local=False)
    if dry_run:
        sys.stdout.write(buf.getvalue())
        return changed
    write_atomic(path, buf.getvalue())
    return changed
