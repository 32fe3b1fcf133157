"""Passive peer health (pure): when each peer last sent us anything, from the packet
counts of its receive flows (table 20) in successive full-pass flow dumps.  A count
that grew since the last dump means the peer sent between the two dumps; the time of
the dump that saw it grow is what `status` shows (its precision: one resync)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..ovs.model import T_FROM_PEERS, Flow


def peer_packets(rx: Mapping[Flow, int], parts: Mapping[str, Iterable[Flow]]) -> dict[str, int]:
    """Peer -> packets its receive flows have counted (peers with no such flow in `rx` left out)."""
    out = {}
    for name, flows in parts.items():
        counts = [rx[f] for f in flows if f.table == T_FROM_PEERS and f in rx]
        if counts:
            out[name] = sum(counts)
    return out


def last_sent(before: Mapping[str, int], now_counts: Mapping[str, int], when: float) -> dict[str, float]:
    """The peers seen sending since `before` (their count grew, or is new and not 0) -> `when`."""
    return {name: when for name, n in now_counts.items() if n > before.get(name, 0)}
