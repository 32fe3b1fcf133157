"""When the agent reconciles: why (a `Reason`), coalescing, backoff, periodic resync.

Everything that can make OVS differ from the topology only *kicks* the
scheduler; the worker asks `wait()` for the next pass, runs it, and reports
the outcome with `done(ok)`.  A burst of kicks that lands while a pass runs
(or within `settle` seconds) costs one more pass, not one per kick.  A kick
that finds the worker idle for `settle` seconds or more is answered at once:
a lone event does not wait for a burst that is not coming.
"""
from __future__ import annotations

import dataclasses
import enum
import threading
import time


class Reason(enum.Enum):
    START = "start"
    SOURCE = "source changed"
    SIGHUP = "SIGHUP"
    RESYNC = "periodic resync"
    RETRY = "retry"
    OVSDB_RECONNECTED = "ovsdb-server reconnected: full resync"
    OVSDB_ROWS = "OVSDB rows we own changed"
    VSWITCHD_STARTED = "ovs-vswitchd (re)started"
    FLOWS = "flows with our cookie changed"
    RESTORE_WAIT = "flow-restore-wait set: restore the pipeline, then clear it"
    EVENT = "event"

    @property
    def loud(self) -> bool:
        """A converged pass for this reason is logged at INFO (others at DEBUG)."""
        return self in (Reason.START, Reason.SIGHUP, Reason.OVSDB_RECONNECTED, Reason.VSWITCHD_STARTED,
                        Reason.RESTORE_WAIT)


@dataclasses.dataclass(frozen=True)
class Kick:
    reason: Reason
    detail: str = ""   # what the log says, when more than the reason's name

    def __str__(self) -> str:
        return self.detail or self.reason.value


@dataclasses.dataclass(frozen=True)
class Pass:
    """One due reconcile pass and the kicks it answers."""
    kicks: tuple[Kick, ...]

    @property
    def reasons(self) -> set[Reason]:
        return {k.reason for k in self.kicks}

    def __str__(self) -> str:
        return ", ".join(dict.fromkeys(str(k) for k in self.kicks)) or Reason.EVENT.value


class Scheduler:
    MAX_KICKS = 100   # distinct kicks remembered per pass, for the log line

    def __init__(self, resync: float, backoff: tuple[float, float] = (0.1, 10.0), settle: float = 0.02,
                 clock=time.monotonic, sleep=time.sleep):
        self.resync, self.settle, self.clock, self.sleep = resync, settle, clock, sleep
        self.backoff_min, self.backoff_max = backoff
        self.backoff = self.backoff_min
        self.retry_at: float | None = None
        self.next_resync = clock() + resync
        self.passed_at = float("-inf")   # when the last pass ended
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._kicks: dict[Kick, None] = {}   # distinct, in arrival order
        self._reset = False
        self.stopped = threading.Event()

    def kick(self, reason: Reason, detail: str = "", reset_backoff: bool = False) -> None:
        with self._lock:
            if len(self._kicks) < self.MAX_KICKS:
                self._kicks[Kick(reason, detail)] = None
            self._reset = self._reset or reset_backoff
        self._dirty.set()

    def stop(self) -> None:
        self.stopped.set()
        self._dirty.set()

    def wait(self, heartbeat=lambda: None) -> Pass | None:
        """Block until a pass is due (None once stopped); `heartbeat()` on every turn."""
        while not self.stopped.is_set():
            heartbeat()
            now = self.clock()
            with self._lock:
                reset, self._reset = self._reset, False
            if reset and self.retry_at is not None:
                self.retry_at, self.backoff = now, self.backoff_min
            if self.retry_at is not None:
                if now < self.retry_at:
                    self.stopped.wait(min(self.retry_at - now, 0.05))
                    continue
                extra: tuple[Kick, ...] = (Kick(Reason.RETRY),)
            elif self._dirty.is_set():
                extra = ()
            elif now >= self.next_resync:
                extra = (Kick(Reason.RESYNC),)
            else:
                self._dirty.wait(min(self.next_resync - now, 0.5))
                continue
            if self.stopped.is_set():
                break
            if self.settle and now - self.passed_at < self.settle:
                self.sleep(self.settle)  # in a burst: let the rest of it land in one pass
            self._dirty.clear()
            with self._lock:
                kicks, self._kicks = tuple(self._kicks), {}
            # A retry or resync names only itself, as the log always did.
            return Pass(extra) if extra else Pass(kicks)
        return None

    def done(self, ok: bool, max_backoff: float | None = None) -> None:
        """The pass ended; a failed one is retried after the backoff (at most `max_backoff`
        seconds, when given: while ovs-vswitchd waits for a restore, retries stay quick)."""
        self.passed_at = self.clock()
        if ok:
            self.retry_at, self.backoff = None, self.backoff_min
            self.next_resync = self.clock() + self.resync
        else:
            if max_backoff is not None:
                self.backoff = min(self.backoff, max_backoff)
            self.retry_at = self.clock() + self.backoff
            self.backoff = min(self.backoff * 2, self.backoff_max)
