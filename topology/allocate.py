"""Subnet allocation: give nodes without a subnet the lowest free one, per family.

Existing assignments never move; allocation is deterministic (nodes in file
order take the lowest free subnets in turn) so running it twice changes nothing.
A dual-stack cluster allocates each family on its own: a node with an IPv4
subnet and none of IPv6 keeps the one and gets the other.
"""
from __future__ import annotations

from collections.abc import Iterable

from .errors import InputError, Problem
from .model import Cluster, Network


class AllocationError(InputError):
    """The range has no free subnet left (exit 2, like every bad input).  Validation
    rejects more nodes than the range holds first, so this guards direct callers."""


def _range(cluster: Cluster, family: str | None) -> tuple[Network, int]:
    """(cluster range, node prefix) of `family` (None: the cluster's first family)."""
    family = family or cluster.families[0]
    if family == "ipv4":
        return cluster.cidr, cluster.node_prefix
    return cluster.cidr6, cluster.node_prefix6


def free_subnets(cluster: Cluster, taken: Iterable[Network], family: str | None = None):
    """Yield the node subnets of one family that overlap nothing in `taken`, lowest first."""
    cidr, prefix = _range(cluster, family)
    mine = {t for t in taken if t.version == cidr.version}
    exact = {t for t in mine if t.prefixlen == prefix}   # validated subnets: a set lookup each
    other = sorted(mine - exact)
    for candidate in cidr.subnets(new_prefix=prefix):
        if candidate not in exact and not any(candidate.overlaps(t) for t in other):
            yield candidate


def allocate(cluster: Cluster, current: list[Network | None], family: str | None = None) -> list[Network]:
    """Fill the None entries of `current` (subnets of one family: `family`, by default
    the cluster's first) with the lowest free subnets, in order."""
    cidr, prefix = _range(cluster, family)
    free = free_subnets(cluster, [s for s in current if s is not None], family)
    out = []
    for s in current:
        if s is None:
            s = next(free, None)
            if s is None:
                raise AllocationError([Problem("cluster.cidr", str(cidr), f"no free /{prefix} left")])
        out.append(s)
    return out
