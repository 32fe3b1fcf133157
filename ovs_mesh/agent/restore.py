"""Put the pipeline back while a starting ovs-vswitchd waits for it, then let it forward.

Why: a new ovs-vswitchd starts with empty OpenFlow tables and, unless told otherwise, flushes
the kernel datapath's flows at once: every pod on the node loses its traffic until the agent
has noticed and reinstalled everything (10-18 s measured on emulated VMs).  With
`other_config:flow-restore-wait=true` set before it starts, it keeps the datapath's flows (the
kernel goes on forwarding on them) and waits; the agent installs the complete pipeline through
the bridge's management socket, then clears the flag, and only then is the datapath flushed
and every packet matched against the restored tables.

Who sets the flag: ovs-mesh's start hook for ovs-vswitchd (`install-service` installs it as a
drop-in of ovs-vswitchd.service; see `flow-restore` beside it), which also writes ovs-mesh's mark
(`external_ids:ovs-mesh-flow-restore`, the Unix time) and arms a guard that clears the flag
after `BOUND` seconds whatever happens.  The agent clears only a flag carrying that mark: one
that somebody else set (`ovs-ctl restart` restoring its saved flows) is theirs to clear.

The rules (unit-tested with fakes in tests/unit/test_restore.py):
- never cleared before a full pass succeeded with the flag set and the running ovs-vswitchd
  holds every flow of it (counted through the management socket) and every port of ours at its
  requested ofport (`complete`);
- never left set past `BOUND` seconds from the mark's time (or from when the agent first saw
  it): `expire` clears it anyway, from the watcher's thread, even while a pass hangs;
- a restore that fails raises; the pass is retried with the usual backoff, still a full one.
Clearing is one OVSDB transaction conditional on the mark, read back from the cache afterwards.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ovsdb_client.rows import RestoreWait
from topology.errors import Transient

LOG = logging.getLogger(__name__)
BOUND = 30.0           # seconds: the flag never stays set longer than this (the guard's bound too)
READ_BACK = 2.0        # seconds the cache may take to show the cleared flag


class RestoreIncomplete(Transient):
    """The pipeline is not all in yet (or the flag did not clear): the pass is retried."""


class FlowRestore:
    """The agent's side of flow-restore-wait.  `observe` (watcher thread) and `complete`
    (worker) may run at once: the state is locked.  `on_done(seconds, how)` counts a restore
    that ended ("restored" by the agent, "bound" when the bound cleared it)."""

    def __init__(self, bound: float = BOUND, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 on_done: Callable[[float, str], None] | None = None):
        self.bound, self.clock, self.monotonic = bound, clock, monotonic
        self.on_done = on_done or (lambda seconds, how: None)
        self._lock = threading.Lock()
        self.flag = RestoreWait()            # the last reading
        self._seen: tuple[str, float] | None = None   # (mark, monotonic time first seen)

    # -- readings ---------------------------------------------------------
    def observe(self, flag: RestoreWait) -> bool:
        """Record a reading of the flag; True when a flag of ours appears (a restore is due)."""
        with self._lock:
            self.flag = flag
            if not flag.ours:
                self._seen = None
                return False
            assert flag.mark is not None   # ours
            if self._seen is not None and self._seen[0] == flag.mark:
                return False
            self._seen = (flag.mark, self.monotonic())
            return True

    @property
    def pending(self) -> bool:
        """A flag of ours is set: the next pass must be a full one, then `complete`."""
        with self._lock:
            return self.flag.ours

    def waited(self) -> float:
        """Seconds the current flag of ours has been set (0 without one)."""
        with self._lock:
            return self._waited()

    def _waited(self) -> float:
        if not self.flag.ours or self._seen is None:
            return 0.0
        seen = self.monotonic() - self._seen[1]
        since = self.flag.since
        return max(seen, self.clock() - since) if since is not None else seen

    # -- actions ----------------------------------------------------------
    def complete(self, ovsdb, flows, want_flows: int, ports: dict[str, int]) -> bool:
        """After a full pass that installed `want_flows` flows and our `ports` (name -> requested
        ofport): when a flag of ours is set, check the running ovs-vswitchd holds them all, then
        clear the flag and read it back.  True when it cleared one; raises RestoreIncomplete."""
        flag = ovsdb.restore_wait()
        self.observe(flag)
        if not flag.ours:
            return False
        have = flows.count()
        if have != want_flows:
            raise RestoreIncomplete(f"flow-restore-wait kept: {have} of our {want_flows} flows in ovs-vswitchd")
        health = ovsdb.health(ports) if ports else {}
        wrong = sorted(n for n, want in ports.items() if want and health[n].ofport != want)
        if wrong:
            raise RestoreIncomplete(f"flow-restore-wait kept: ports not at their ofport yet: {', '.join(wrong[:5])}")
        return self._clear(ovsdb, flag, "restored")

    def expire(self, ovsdb) -> bool:
        """Clear a flag of ours that has been set for `bound` seconds (True when it did)."""
        with self._lock:
            flag, late = self.flag, self._waited() >= self.bound
        if not late:
            return False
        LOG.warning("flow-restore-wait set for %.0f s without a complete restore: clearing it "
                    "(ovs-vswitchd forwards with the flows it has)", self.bound)
        return self._clear(ovsdb, flag, "bound")

    def _clear(self, ovsdb, flag: RestoreWait, how: str) -> bool:
        with self._lock:
            waited = self._waited()
        cleared = ovsdb.clear_restore_wait(flag.mark)
        deadline = self.monotonic() + READ_BACK
        while True:
            now = ovsdb.restore_wait()
            if not (now.set and now.mark == flag.mark):
                break
            if self.monotonic() >= deadline:
                raise RestoreIncomplete("flow-restore-wait still set after clearing it")
            time.sleep(0.05)
        self.observe(now)
        if cleared:
            LOG.info("flow-restore-wait cleared (%s) after %.2f s: ovs-vswitchd forwards", how, waited)
            self.on_done(waited, how)
        return cleared
