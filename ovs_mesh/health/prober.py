"""Probe every peer through the overlay: ICMP echoes from this node's gateway to each
peer's gateway, one thread, one raw socket per pod family.

The path is the one pod traffic takes: kbr0 -> obr0 (table 0 accepts the gateway,
it is in this node's subnet) -> the tunnel -> the peer's tables 20 and 30 -> its
kbr0, whose kernel answers, and back the same way.  An answer counts only when it
comes from the peer's gateway address, carries this prober's random identifier and
the random token of that very probe: a pod cannot forge one.  It never sees the
probe (unicast between two gateways), and the pipeline drops what a pod sends with
a source it does not own (nftables on kbr0 refuse a pod claiming its gateway, table
0 any address outside its node's subnet, a peer's table 20 any source that is not
the sender's).  In stp mode the probe takes the same way through the bridges, but
nothing checks sources there (docs/security.md).

Each round sends two echoes at once: a small one and one of the full pod MTU (kbr0's
MTU) with fragmentation forbidden (IPv4 DF, IPv6 DONTFRAG, the path MTU cache
ignored), so that a path that loses large packets shows as `mtu-blackhole`.  The
verdicts come from `state.after_round`; rounds are `health.interval` apart (+-10 %
jitter) and all rounds together send at most `health.max_probes_per_second`
packets (a token bucket: with many peers the rounds space out instead).
"""
from __future__ import annotations

import collections
import dataclasses
import heapq
import json
import logging
import os
import random
import select
import socket
import threading
import time

from topology.mesh import peers_of
from topology.model import Config, Health

from ..files import write_atomic
from .packets import TOKEN, echo, open_socket, parse_reply, received_at
from .state import Budget, PeerHealth, after_round, jittered

LOG = logging.getLogger(__name__)
HEALTH_FILE = "ovs-mesh.health.json"
KBR = "kbr0"
JITTER = 0.1
# The thread wakes at most every TICK seconds: it sends every round due by the next wake-up
# and reads the answers that came meanwhile in one go (their RTT is the kernel's receive
# timestamp minus the send time, so batching costs no precision); one wake-up per packet
# cost 3.7 % of a core at 200 probes per second.
TICK = 0.05
SMALL = 64                  # bytes of a small probe's ICMP message
WRITE_EVERY = 10.0          # at most this many seconds (or one interval) between two writes of the health file

@dataclasses.dataclass(frozen=True)
class Target:
    """One peer and one pod family: from our gateway `src` to its gateway `dst`."""
    peer: str
    family: str
    src: str
    dst: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.peer, self.family)


def targets(config: Config) -> list[Target]:
    """What to probe (pure): every peer, in each family both it and this node have a subnet of.
    Nothing without the host side (local.host false): there is no kbr0 to probe from."""
    if not config.local.host or config.node(config.local.node) is None:
        return []
    local = config.local_node
    out = []
    for p in peers_of(config.cluster, config.nodes, config.local.node):
        if local.subnet is not None and p.subnet is not None:
            out.append(Target(p.name, "ipv4", str(local.gateway), str(p.gateway)))
        if local.subnet6 is not None and p.subnet6 is not None:
            out.append(Target(p.name, "ipv6", str(local.gateway6), str(p.gateway6)))
    return out


def kbr_mtu(default: int = 1450) -> int:
    """The pod MTU as kbr0 has it (what a pod's full-size packet is)."""
    try:
        with open(f"/sys/class/net/{KBR}/mtu") as f:
            return int(f.read())
    except (OSError, ValueError):
        return default


class _Round:
    __slots__ = ("target", "sent", "token", "small", "big", "open", "seqs")

    def __init__(self, target: Target, sent: float, token: bytes):
        self.target, self.sent, self.token = target, sent, token   # sent: wall clock, as kernel timestamps
        self.seqs: list[int] = []
        self.small: float | None = None     # RTT of the small probe, once answered
        self.big = False                    # the full-size probe was answered
        self.open = 2                       # probes not answered yet


class Prober:
    """Probes the peers of the last config `update` gave it, on its own thread.

    `snapshot()` is what the metrics read; the health file (`<rundir>/ovs-mesh.health.json`)
    what `ovs-mesh status` reads.  `note_sent` takes the passive evidence (when each peer
    last sent us a packet).  Sockets, clocks and randomness can be replaced by tests."""

    def __init__(self, rundir: str | None = None, *, opener=open_socket, mtu=kbr_mtu,
                 clock=time.monotonic, wall=time.time, rand=random.random):
        self.rundir = rundir
        self._open, self._mtu, self._clock, self._wall, self._rand = opener, mtu, clock, wall, rand
        self._lock = threading.Lock()
        self._pending: tuple[Health, list[Target], frozenset[str]] | None = None
        self._settings = Health()
        self._targets: dict[tuple[str, str], Target] = {}
        self._health: dict[tuple[str, str], PeerHealth] = {}
        self._last_sent: dict[str, float] = {}
        self._socks: dict[str, socket.socket] = {}
        self._src: dict[str, str] = {}
        self._refused: set[tuple[str, str]] = set()   # sockets that could not be opened (said once)
        self._ident = random.getrandbits(16)
        self._seq = 0
        self._due: list[tuple[float, int, tuple[str, str]]] = []
        self._n = 0
        self._rounds: dict[tuple[str, int], tuple[_Round, bool]] = {}   # (family, seq) -> (round, is it the big one)
        self._deadlines: collections.deque[tuple[float, _Round]] = collections.deque()
        self._budget: Budget | None = None      # made from the first settings
        self._size = {"ipv4": 1450, "ipv6": 1450}
        self._dirty = True
        self._written = 0.0
        self.sent = 0               # probe packets sent (for the benchmark and the tests)
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None

    # -- from other threads --------------------------------------------------
    def update(self, config: Config) -> None:
        """Probe the peers of `config` with its health settings (from the next loop turn)."""
        with self._lock:
            self._pending = (config.health, targets(config) if config.health.enabled else [],
                             frozenset(n.name for n in config.nodes if n.name != config.local.node))
        os.write(self._wake_w, b"x")

    def note_sent(self, last_sent: dict[str, float]) -> None:
        """Passive evidence: peer -> when (wall clock) it was last seen sending us a packet."""
        with self._lock:
            self._last_sent.update(last_sent)

    def snapshot(self) -> tuple[dict[tuple[str, str], PeerHealth], dict[str, float]]:
        with self._lock:
            return dict(self._health), dict(self._last_sent)

    def start(self) -> Prober:
        self._thread = threading.Thread(target=self.run, name="health", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(10)
        for s in self._socks.values():
            s.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # -- the thread ------------------------------------------------------------
    def run(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.turn()
            except Exception:   # a bug must not end the probes: log, and go on after a pause
                LOG.exception("health prober")
                wait = 1.0
            self.wait(wait)

    def wait(self, seconds: float) -> None:
        """Sleep until `update` or `stop` is called or `seconds` (at least TICK) pass; read the answers."""
        ready, _, _ = select.select([self._wake_r], [], [], max(TICK, seconds))
        if ready:
            os.read(self._wake_r, 4096)
        now = self._clock()
        for family, s in self._socks.items():
            self._receive(family, s, now)

    def turn(self) -> float:
        """Take new settings, end the rounds past their deadline, send the due ones;
        returns how long to wait at most."""
        now = self._clock()
        self._take_pending(now)
        timeout = self._settings.timeout
        while self._deadlines and self._deadlines[0][0] <= now:
            self._finish(self._deadlines.popleft()[1], now)
        blocked = 0.0
        while self._due and self._budget is not None and self._due[0][0] <= now + TICK:
            ok, self._budget = self._budget.take(2, now)
            if not ok:
                blocked = self._budget.wait_for(2)
                break
            _, _, key = heapq.heappop(self._due)
            target = self._targets.get(key)
            if target is None:
                continue
            self._send_round(target, now, now + timeout)
            self._push(key, now + jittered(self._settings.interval, JITTER, self._rand()))
        self._maybe_write(now)
        waits = [min(WRITE_EVERY, self._settings.interval)]
        if self._deadlines:
            waits.append(self._deadlines[0][0] - now)
        if blocked:
            waits.append(blocked)
        elif self._due:
            waits.append(self._due[0][0] - now)
        return max(0.0, min(waits))

    def _push(self, key, when: float) -> None:
        self._n += 1
        heapq.heappush(self._due, (when, self._n, key))

    def _take_pending(self, now: float) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        settings, wanted, names = pending
        if self._budget is None or settings.max_probes_per_second != self._settings.max_probes_per_second:
            self._budget = Budget.full(float(settings.max_probes_per_second), now)
        self._settings = settings
        mtu = self._mtu()
        self._size = {"ipv4": mtu - 20, "ipv6": mtu - 40}
        new = {t.key: t for t in wanted}
        for family in {t.family for t in wanted}:
            src = next(t.src for t in wanted if t.family == family)
            if self._src.get(family) != src:
                old = self._socks.pop(family, None)
                if old is not None:
                    old.close()
                try:
                    self._socks[family] = self._open(family, src)
                    self._src[family] = src
                except OSError as e:   # said once per family and address, not at every pass
                    LOG.log(logging.DEBUG if (family, src) in self._refused else logging.WARNING,
                            "health: cannot open the %s probe socket from %s: %s (its peers stay unknown)",
                            family, src, e)
                    self._refused.add((family, src))
                    self._src.pop(family, None)
        # a family without a socket is not probed: unknown, not falsely unreachable
        new = {k: t for k, t in new.items() if t.family in self._socks}
        wanted = list(new.values())
        for key in new:
            if key not in self._targets:   # first rounds spread over one interval
                self._push(key, now + self._rand() * settings.interval)
        with self._lock:
            for key in set(self._health) - set(new):
                del self._health[key]
            for name in set(self._last_sent) - names:   # passive evidence also where nothing is probed
                del self._last_sent[name]
            for key in new:
                self._health.setdefault(key, PeerHealth())
        self._targets = new
        self._dirty = True

    def _send_round(self, t: Target, now: float, deadline: float) -> None:
        s = self._socks.get(t.family)
        rnd = _Round(t, self._wall(), os.urandom(TOKEN))
        self._deadlines.append((deadline, rnd))
        if s is None:
            return   # no socket: the round times out unanswered
        for big in (False, True):
            self._seq = (self._seq + 1) & 0xFFFF
            self._rounds[(t.family, self._seq)] = (rnd, big)
            rnd.seqs.append(self._seq)
            size = self._size[t.family] if big else SMALL
            try:
                s.sendto(echo(t.family, self._ident, self._seq, rnd.token, size), (t.dst, 0))
                self.sent += 1
            except OSError as e:
                # EMSGSIZE (the route's MTU is below the pod MTU), no route, no buffer:
                # the probe is lost, as it would be on the wire
                LOG.debug("health: probe to %s %s (%d bytes): %s", t.peer, t.dst, size, e)

    def _receive(self, family: str, s: socket.socket, now: float) -> None:
        for _ in range(4096):
            try:
                data, anc, _flags, addr = s.recvmsg(65535, 64)
            except OSError:   # BlockingIOError: nothing more to read
                return
            got = parse_reply(family, data)
            if got is None or got[0] != self._ident:
                continue
            hit = self._rounds.get((family, got[1]))
            if hit is None:
                continue
            rnd, big = hit
            if got[2] != rnd.token or addr[0] != rnd.target.dst or rnd.open <= 0:
                continue
            del self._rounds[(family, got[1])]
            rnd.open -= 1
            if big:
                rnd.big = True
            else:
                rnd.small = max(0.0, (received_at(anc) or self._wall()) - rnd.sent)
            if rnd.open == 0:
                self._finish(rnd, now)

    def _finish(self, rnd: _Round, now: float) -> None:
        if rnd.open < 0:
            return   # already finished (answered before its deadline)
        rnd.open = -1
        for seq in rnd.seqs:
            self._rounds.pop((rnd.target.family, seq), None)
        key = rnd.target.key
        if key not in self._targets or self._targets[key] != rnd.target:
            return
        answered = rnd.small is not None or rnd.big
        rtt = rnd.small
        with self._lock:
            old = self._health.get(key, PeerHealth())
            new = after_round(old, answered, rnd.big, rtt, self._wall(), self._settings.failures)
            self._health[key] = new
        if new.state != old.state:
            self._dirty = True
            LOG.log(logging.INFO if old.state != "unknown" or new.state != "reachable" else logging.DEBUG,
                    "health: %s (%s) is %s (was %s)", rnd.target.peer, rnd.target.family, new.state, old.state)

    def _maybe_write(self, now: float) -> None:
        every = min(WRITE_EVERY, self._settings.interval)
        # a changed verdict is written within a second, or within n / 1000 seconds at n peers: the
        # file costs about 5 us per peer, and verdicts change all the time while the first rounds run
        soon = max(1.0, len(self._targets) / 1000)
        if self.rundir is None or not (self._dirty and now - self._written >= soon or now - self._written >= every):
            return
        self._dirty, self._written = False, now
        try:
            write_atomic(os.path.join(self.rundir, HEALTH_FILE), json.dumps(self.record()))
        except OSError:
            LOG.debug("cannot write the health file", exc_info=True)

    def record(self) -> dict:
        """What the health file holds: the settings, and per peer and family the verdict."""
        health, sent = self.snapshot()
        peers: dict[str, dict] = {}
        for (name, family), h in health.items():
            peers.setdefault(name, {})[family] = {"state": h.state, "rtt": h.rtt, "last_answer": h.last_answer,
                                                  "failures": h.failures}
        for name, when in sent.items():
            peers.setdefault(name, {})["last_sent"] = when
        s = self._settings
        return {"time": self._wall(), "interval": s.interval, "failures": s.failures, "peers": peers}
