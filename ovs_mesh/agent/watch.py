"""Notice when Open vSwitch no longer holds what the agent installed.

Cheap checks, run by one thread every 0.1 s:
- OVSDB: when the IDL's change_seqno moves, read our rows (bridge obr0, its
  tagged ports and interfaces) and compare with the last reconcile's desired
  state; someone deleting our port shows up here.  A new session seqno means the
  connection to ovsdb-server dropped and came back: full resync.
- flow-restore-wait: a flag set by ovs-mesh's start hook of ovs-vswitchd means a
  restore is due (a full pass, then `restore.FlowRestore.complete` clears it);
  one set for longer than the bound is cleared here, even while a pass hangs.
- ovs-vswitchd: its pidfile naming a new live process means a restart (its
  flow tables start empty): resync at once, with the retry backoff reset.
- kbr0's neighbours: while ovs-vswitchd is down or waiting, kbr0 keeps probing
  its remote pods' MACs longer (`host.neigh_hold`), and goes back to the
  default once it forwards again.
- Flows: `ovs.monitor.FlowMonitor` streams every flow change of obr0; a change
  of one of our flows that does not match what the agent installed (a flow of
  ours deleted, or added or rewritten other than installed: `mod-flows
  actions=drop`) kicks a repair pass within the tick.  As a backstop (and
  every 0.5 s while the monitor is not running) `ovs-ofctl dump-aggregate`
  counts the flows with our cookie.

What the watcher compares with comes from the agent through `Expectations`,
a small locked object: the worker writes it, the watcher reads one consistent
snapshot (`Expected`) per check.  What was read while a pass was changing OVS
(the epoch moved or is odd) is not judged, but read again: the agent's own
changes are not drift (flow events seen meanwhile are judged once the pass is
over, against what it installed).  The watcher only calls `kick(reason,
detail, reset_backoff)`, `restore.expire` and `seen(daemon)`: the worker does
the work.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

from ..host.neigh_hold import NeighbourHold
from ..ovs.model import BRIDGE, OvsState
from ..ovs.monitor import FlowEvent, FlowIndex, FlowMonitor
from ..ovs.openflow import OpenFlow
from ..process import daemon_pid
from .restore import FlowRestore
from .schedule import Reason

LOG = logging.getLogger(__name__)


def owned_rows(client) -> OvsState:
    """What we own in OVSDB now (bridge and ports, no flows), comparable with the desired state."""
    owned = client.read(BRIDGE)
    return OvsState(owned.bridge, owned.ports)


@dataclasses.dataclass(frozen=True)
class Expected:
    """What OVS should hold after the agent's last pass, as the watcher reads it at once."""
    rundir: str | None = None        # where ovs-vswitchd's pidfile and the bridge's socket are
    rows: OvsState | None = None     # our bridge and ports (None: nothing to compare with yet)
    flows: int | None = None         # how many flows carry our cookie (None: not known yet)
    index: FlowIndex | None = None   # those flows, as the flow monitor prints them
    epoch: int = 0                   # odd while a pass changes OVS


class Expectations:
    """The one object the agent's worker and its watcher share: the worker sets what
    OVS should hold and brackets its changes (`changing`), the watcher takes a
    snapshot (`now`).  Every access holds the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._now = Expected()

    def now(self) -> Expected:
        with self._lock:
            return self._now

    def update(self, **fields) -> None:
        """Set some of `Expected`'s fields (rundir, rows, flows, index)."""
        with self._lock:
            self._now = dataclasses.replace(self._now, **fields)

    @contextlib.contextmanager
    def changing(self) -> Iterator[None]:
        """Bracket a change of OVS: the watcher does not judge what it reads meanwhile."""
        self._step()
        try:
            yield
        finally:
            self._step()

    def _step(self) -> None:
        with self._lock:
            self._now = dataclasses.replace(self._now, epoch=self._now.epoch + 1)


def settled(expected: Expectations, epoch: int) -> bool:
    """No pass changed OVS since `epoch` was read, nor was one changing it then
    (the epoch is odd while a pass changes OVS): what was read can be judged."""
    return epoch % 2 == 0 and expected.now().epoch == epoch


class OvsWatcher:
    """`expected`: what the agent installed; `session`: its NodeSession (the OVSDB client,
    `note_connected`); `kick`: the agent's `kick`; `restore`: its FlowRestore; `seen(daemon)`:
    called when ovs-vswitchd restarted or the OVSDB connection came back."""

    SLOW_FLOW_CHECK = 10   # the count backstop runs this many times less often while the monitor runs
    # ovs-ofctl monitor follows a moment after it is started (its process starts, connects and
    # subscribes): a flow rewritten in between would go unseen, and the count cannot tell a
    # rewrite. So this long after each (re)start, one full pass compares every flow.
    MONITOR_ATTACH = 0.5

    def __init__(self, expected: Expectations, session, kick: Callable[..., None],
                 interval: float = 0.1, flow_interval: float = 0.5, restore: FlowRestore | None = None,
                 seen: Callable[[str], None] | None = None, monitor: bool | None = None,
                 neigh: NeighbourHold | None = None):
        self.expected, self.session, self.kick = expected, session, kick
        self.neigh = neigh
        self.interval, self.flow_interval = interval, flow_interval
        self.restore = restore
        self.seen = seen or (lambda daemon: None)
        # OVS_MESH_FLOW_MONITOR=0 turns the flow monitor off (the count backstop then runs every
        # flow_interval; a rewritten flow waits for the periodic resync): bench/watcher.py's baseline.
        self.use_monitor = monitor if monitor is not None else (
            os.environ.get("OVS_MESH_FLOW_MONITOR", "1").strip().lower() not in ("0", "off", "no", "false"))
        self.monitor: FlowMonitor | None = None
        self._compare_at: float | None = None   # when to run the full comparison after a monitor start
        self._events: list[FlowEvent] = []   # read while a pass changed OVS: judged after it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ovs-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.monitor is not None:
            self.monitor.stop()

    def _run(self) -> None:
        self._last_client = self._last_seqno = self._last_change = None
        rundir = self.expected.now().rundir
        self._last_pid = daemon_pid(rundir, "ovs-vswitchd") if rundir else None
        self._flows_seen = True
        self._next_flow_check = 0.0
        self._failing: set[str] = set()
        while not self._stop.wait(self.interval):
            for check in (self._check_ovsdb, self._check_restore, self._check_vswitchd, self._check_neighbours,
                          self._check_flows):
                try:
                    check()
                    self._failing.discard(check.__name__)
                except Exception:  # the watcher must outlive any surprise; say so once
                    if check.__name__ not in self._failing:
                        self._failing.add(check.__name__)
                        LOG.warning("OVS watcher: %s failed", check.__name__, exc_info=True)

    def _check_ovsdb(self) -> None:
        client = self.session.ovsdb
        if client is None:
            return
        if client is not self._last_client:
            self._last_client, self._last_seqno, self._last_change = client, client.session_seqno(), None
        connected = client.connected()
        seqno = client.session_seqno()
        if connected and seqno != self._last_seqno:
            self._last_seqno = seqno
            self.seen("ovsdb-server")
            self.kick(Reason.OVSDB_RECONNECTED, reset_backoff=True)
        elif connected and client.change_seqno() != self._last_change:
            expected, change = self.expected.now(), client.change_seqno()
            differs = expected.rows is not None and owned_rows(client) != expected.rows
            if not settled(self.expected, expected.epoch):
                self._last_change = None    # the agent was changing OVS: look again next turn
            else:
                self._last_change = change
                if differs:
                    self.kick(Reason.OVSDB_ROWS)
        self.session.note_connected(connected)

    def _check_restore(self) -> None:
        """A flag of ours newly set: restore now; one set past the bound: clear it."""
        client, restore = self.session.ovsdb, self.restore
        if client is None or restore is None or not client.connected():
            return
        flag = client.restore_wait()
        if restore.observe(flag):
            self.kick(Reason.RESTORE_WAIT, "flow-restore-wait set by the start of ovs-vswitchd: restoring",
                      reset_backoff=True)
        elif flag.ours:
            restore.expire(client)

    def _check_vswitchd(self) -> None:
        rundir = self.expected.now().rundir
        if not rundir:
            return
        pid = daemon_pid(rundir, "ovs-vswitchd")
        if pid != self._last_pid:
            if pid is not None:
                self.seen("ovs-vswitchd")
                self.kick(Reason.VSWITCHD_STARTED, f"ovs-vswitchd (re)started as pid {pid}", reset_backoff=True)
            else:
                LOG.warning("ovs-vswitchd is not running (no live pid in %s)", rundir)
            self._last_pid = pid

    def _check_neighbours(self) -> None:
        if self.neigh is None or not self.expected.now().rundir:
            return
        client = self.session.ovsdb
        connected = client is not None and client.connected()
        waiting = self.restore is not None and self.restore.flag.set
        self.neigh.tick(vswitchd_up=self._last_pid is not None, waiting=waiting, connected=connected)

    def _check_flows(self) -> None:
        expected = self.expected.now()
        rundir = expected.rundir
        if not rundir or self._last_pid is None:
            return
        monitor = self._monitor(rundir)
        if monitor is not None:
            if monitor.start():   # (again): what changed while it was not following is unknown
                self._next_flow_check = 0.0
                self._compare_at = time.monotonic() + self.MONITOR_ATTACH
            self._judge(monitor.take())
        now = time.monotonic()
        if self._compare_at is not None and now >= self._compare_at:
            self._compare_at = None
            if monitor is not None and monitor.running:
                self.kick(Reason.FLOWS, "the flow monitor started following: one full comparison covers "
                                        "what changed before it did")
        if now < self._next_flow_check or expected.flows is None:
            return
        slow = monitor is not None and monitor.running
        self._next_flow_check = now + self.flow_interval * (self.SLOW_FLOW_CHECK if slow else 1)
        count = OpenFlow(rundir, BRIDGE).count()
        if count is None:
            self._flows_seen = False
            return
        if not settled(self.expected, expected.epoch):
            self._next_flow_check = 0.0
            return   # the agent was changing flows: count again next turn
        if count != expected.flows:
            self.kick(Reason.FLOWS, f"{count} flows with our cookie, expected {expected.flows}",
                      reset_backoff=not self._flows_seen)
        self._flows_seen = True

    def _monitor(self, rundir: str) -> FlowMonitor | None:
        if not self.use_monitor:
            return None
        if self.monitor is not None and self.monitor.rundir != rundir:
            self.monitor.stop()
            self.monitor = None
        if self.monitor is None:
            self.monitor = FlowMonitor(rundir, BRIDGE)
        return self.monitor

    def _judge(self, events: list[FlowEvent]) -> None:
        """Events of flow changes: kick a repair when one shows drift.  Judged only against what
        a finished pass installed; read during a pass, they wait for its end."""
        self._events.extend(events)
        if not self._events:
            return
        expected = self.expected.now()
        if expected.index is None:
            self._events.clear()   # nothing installed yet to compare with: the first pass repairs anything
            return
        if expected.epoch % 2:
            return
        bad = next((ev for ev in self._events if expected.index.drift(ev)), None)
        if not settled(self.expected, expected.epoch):
            return   # a pass started meanwhile: judge these again after it
        self._events.clear()
        if bad is not None:
            what = (f"flow monitor: {bad.kind.lower()}" if bad.lost else
                    f"flow {bad.kind.lower()} behind our back: table={bad.table} {bad.match} actions={bad.actions}")
            self.kick(Reason.FLOWS, what, reset_backoff=True)
