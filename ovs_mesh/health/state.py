"""The pure half of peer health: verdicts, jitter and the probe budget (no I/O, no clock).

A *round* for one peer and one pod family is two ICMP echoes sent together from
this node's gateway to the peer's gateway, through the overlay: a small one and
one of the full pod MTU that may not be fragmented.  Its outcome is
(`answered`: the small one or the big one came back, `mtu_ok`: the big one came
back).  The verdict follows the rounds:

- `unknown` until the first round ends (or until `failures` rounds in a row went
  unanswered: then `unreachable`);
- one answered round makes the peer `reachable` at once (RTT recorded);
- `failures` unanswered rounds in a row make it `unreachable`;
- a peer that answers small probes but not `failures` full-size ones in a row is
  `mtu-blackhole`: pod packets of the full MTU vanish on that path; one answered
  full-size probe makes it `reachable` again.
"""
from __future__ import annotations

import dataclasses

STATES = ("reachable", "unreachable", "mtu-blackhole", "unknown")
# The order in which a peer's families are summed up: the worst one decides.
WORST_FIRST = ("unreachable", "mtu-blackhole", "unknown", "reachable")


@dataclasses.dataclass(frozen=True)
class PeerHealth:
    """What the probes of one peer and one family have shown so far (times: wall clock)."""
    state: str = "unknown"
    failures: int = 0            # unanswered rounds in a row
    mtu_failures: int = 0        # rounds in a row whose full-size probe was lost
    rtt: float | None = None     # seconds, of the last answered small probe
    last_answer: float | None = None


def after_round(h: PeerHealth, answered: bool, mtu_ok: bool, rtt: float | None, now: float,
                failures: int) -> PeerHealth:
    """The verdict after one round (see the module docstring); `failures` is health.failures."""
    if not answered:
        n = h.failures + 1
        return dataclasses.replace(h, failures=n, state="unreachable" if n >= failures else h.state)
    m = 0 if mtu_ok else h.mtu_failures + 1
    return PeerHealth(state="mtu-blackhole" if m >= failures else "reachable", failures=0, mtu_failures=m,
                      rtt=rtt if rtt is not None else h.rtt, last_answer=now)


def worst(states) -> str:
    """One state for several families: the worst of them ("unknown" for none)."""
    found = set(states)
    return next((s for s in WORST_FIRST if s in found), "unknown")


def jittered(interval: float, jitter: float, r: float) -> float:
    """`interval` spread by +-`jitter` (a fraction) with `r` uniform in [0, 1): rounds of
    different peers and nodes do not fall into step."""
    return interval * (1.0 + jitter * (2.0 * r - 1.0))


@dataclasses.dataclass(frozen=True)
class Budget:
    """A token bucket of probe packets: `rate` per second, bursts of at most `rate`
    (one second's worth, and at least one round's 2 packets), so a node never sends
    more than that, whatever the peers."""
    rate: float
    tokens: float
    at: float

    @classmethod
    def full(cls, rate: float, now: float) -> Budget:
        return cls(rate, rate, now)

    def take(self, n: int, now: float) -> tuple[bool, Budget]:
        """(whether `n` packets may go now, the budget after)."""
        tokens = min(max(self.rate, 2.0), self.tokens + (now - self.at) * self.rate)
        if tokens >= n:
            return True, Budget(self.rate, tokens - n, now)
        return False, Budget(self.rate, tokens, now)

    def wait_for(self, n: int) -> float:
        """Seconds until `n` packets may go (0 when they may now), as of `at`."""
        return max(0.0, (n - self.tokens) / self.rate)


def summary(states: dict[str, str]) -> str:
    """"2 of 40 peers unreachable: node-7, node-9" (then the MTU black holes and the unknown)."""
    total = len(states)
    parts = []
    for state, word in (("unreachable", "unreachable"), ("mtu-blackhole", "with an MTU black hole"),
                        ("unknown", "not probed yet")):
        names = sorted(n for n, s in states.items() if s == state)
        if names:
            shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
            parts.append(f"{len(names)} of {total} peers {word}: {shown}")
    if not parts:
        return f"all {total} peers reachable" if total else "no peers"
    return "; ".join(parts)
