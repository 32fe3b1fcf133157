"""Subnet allocation: give nodes without a subnet the lowest free one.

Existing assignments never move; allocation is deterministic (nodes in file
order take the lowest free subnets in turn) so running it twice changes nothing.
"""
from __future__ import annotations

from ipaddress import IPv4Network
from typing import Iterable

from .errors import InputError, Problem
from .model import Cluster


class AllocationError(InputError):
    """The range has no free subnet left (exit 2, like every bad input).  Validation
    rejects more nodes than the range holds first, so this guards direct callers."""


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
                raise AllocationError([Problem("cluster.cidr", str(cluster.cidr),
                                               f"no free /{cluster.node_prefix} left")])
        out.append(s)
    return out
