"""Follow the flow changes of one bridge as ovs-vswitchd makes them (`ovs-ofctl monitor watch:`).

Why: counting our flows (`dump-aggregate`) sees a flow added or deleted behind our back, but
not one whose actions someone rewrote (`ovs-ofctl mod-flows ... actions=drop` keeps the count
and blackholes that peer until the next full pass).  OpenFlow's flow monitor streams every
change of the tables instead: ovs-vswitchd sends each added, modified and deleted flow to the
monitoring connection as it happens (and a PAUSED/RESUMED pair when that connection falls too
far behind, in which case changes were lost).

`FlowMonitor` runs one `ovs-ofctl monitor <bridge> watch:!initial` and parses its lines on a
thread of its own into `FlowEvent`s kept in a bounded queue; `FlowIndex` says whether an event
matches what the agent installed.  The monitor prints no priority (its formatter omits it) and
prints a flow without actions as nothing, so events are judged by (table, match, actions).
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable

from .model import Flow, ours
from .openflow import OFCTL

LOG = logging.getLogger(__name__)
MAX_QUEUED = 200_000   # events kept between two looks; beyond this the monitor reports an overflow
RESTART_INTERVAL = 0.5   # seconds between two starts of the monitor


@dataclasses.dataclass(frozen=True)
class FlowEvent:
    """One flow update: kind ADDED, MODIFIED or DELETED (or PAUSED/RESUMED/OVERFLOW: changes lost)."""
    kind: str
    table: int = 0
    cookie: str = ""
    match: str = ""
    actions: str = "drop"

    @property
    def lost(self) -> bool:
        """Changes were not reported: what OVS holds is unknown."""
        return self.kind in ("PAUSED", "RESUMED", "OVERFLOW")

    @property
    def key(self) -> tuple[int, str, str]:
        return (self.table, self.match, self.actions)


def parse_update(line: str) -> FlowEvent | None:
    """A line of `ovs-ofctl monitor` -> its event (None for headers and anything else).

    ` event=MODIFIED table=10 cookie=0x6f76736d00000001 ip,nw_dst=10.244.2.0/24 actions=drop`
    (DELETED lines carry `reason=...` after the kind; timeouts may follow the table)."""
    line = line.strip()
    if not line.startswith("event="):
        return None
    head, sep, actions = line.partition(" actions=")
    fields = head.split(" ")
    kind = fields[0][6:]
    if kind in ("PAUSED", "RESUMED"):
        return FlowEvent(kind)
    if kind not in ("ADDED", "MODIFIED", "DELETED", "INITIAL"):
        return None
    table, cookie, match = 0, "", ""
    for i, f in enumerate(fields[1:], 1):
        if f.startswith("table="):
            table = int(f[6:])
        elif f.startswith("cookie="):
            cookie = f[7:]
            match = " ".join(fields[i + 1:])
            break
    return FlowEvent(kind, table, cookie, match, actions.strip() if sep and actions.strip() else "drop")


class FlowIndex:
    """The flows the agent installed, by what the monitor prints of them: (table, match, actions)
    -> how many (several priorities may share a match).  Built by a full pass, kept in step by
    the incremental ones."""

    def __init__(self, flows: Iterable[Flow] = ()):
        self._n: collections.Counter = collections.Counter((f.table, f.match, f.actions) for f in flows)

    def change(self, removed: Iterable[Flow], added: Iterable[Flow]) -> None:
        n = self._n
        for f in removed:
            k = (f.table, f.match, f.actions)
            n[k] -= 1
            if n[k] <= 0:
                del n[k]
        for f in added:
            n[(f.table, f.match, f.actions)] += 1

    def __contains__(self, key: tuple[int, str, str]) -> bool:
        return self._n.get(key, 0) > 0

    def __len__(self) -> int:
        return sum(self._n.values())

    def drift(self, event: FlowEvent) -> bool:
        """The event shows one of our flows other than installed: an unknown flow of ours added or
        changed, or an installed one deleted.  Flows of other cookies are not ours to judge."""
        if event.lost:
            return True
        if not ours(event.cookie):
            return False
        if event.kind == "DELETED":
            return event.key in self
        return event.key not in self


# SIGTERM to the monitor when the thread that started it (the watcher's) ends, even when the agent is
# SIGKILLed: no monitor outlives its agent.  setpriv (util-linux) sets it between fork and exec.
_DIE_WITH_PARENT = ("setpriv", "--pdeathsig", "TERM") if shutil.which("setpriv") else ()


class FlowMonitor:
    """`ovs-ofctl monitor` on a bridge's management socket, its events queued for `take()`.

    `start()` launches it (a no-op while it runs); it ends when ovs-vswitchd closes the socket
    (a restart): `running` is then false and the watcher starts it again once the socket is back."""

    def __init__(self, rundir: str, bridge: str):
        self.rundir, self.bridge = rundir, bridge
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._events: collections.deque[FlowEvent] = collections.deque()
        self._overflow = False
        self.started = 0    # how many times it was (re)started
        self._last_start = float("-inf")

    @property
    def socket(self) -> str:
        return os.path.join(self.rundir, self.bridge + ".mgmt")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> bool:
        """Start following (True when it started now; False while it runs, without the socket, or
        within RESTART_INTERVAL of the last start: a stale socket refuses it until ovs-vswitchd is back)."""
        now = time.monotonic()
        if self.running or not os.path.exists(self.socket) or now - self._last_start < RESTART_INTERVAL:
            return False
        self._last_start = now
        self.stop()
        # Its own control socket in the OVS run directory (ovs-ofctl monitor serves one).
        ctl = os.path.join(self.rundir, f"ovs-mesh-monitor.{os.getpid()}.ctl")
        try:
            # It prints what it receives on stderr (flushed per message; stdout would be buffered).
            proc = subprocess.Popen([*_DIE_WITH_PARENT, *OFCTL, "--no-names", f"--unixctl={ctl}", "monitor",
                                     f"unix:{self.socket}", "watch:!initial"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, bufsize=1 << 16)
        except OSError as e:
            LOG.debug("cannot start ovs-ofctl monitor: %s", e)
            return False
        self._proc = proc
        self.started += 1
        threading.Thread(target=self._read, args=(proc,), name="flow-monitor", daemon=True).start()
        return True

    def _read(self, proc: subprocess.Popen) -> None:
        out = proc.stderr
        assert out is not None   # stderr=PIPE
        with out:
            for line in out:
                ev = parse_update(line)
                if ev is None:
                    continue
                with self._lock:
                    if len(self._events) < MAX_QUEUED:
                        self._events.append(ev)
                    else:
                        self._overflow = True
        proc.wait()

    def take(self) -> list[FlowEvent]:
        """The events since the last take (an OVERFLOW event first when some were dropped)."""
        with self._lock:
            out = list(self._events)
            self._events.clear()
            if self._overflow:
                out.insert(0, FlowEvent("OVERFLOW"))
                self._overflow = False
        return out

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
