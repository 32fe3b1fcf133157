"""Notice when Open vSwitch no longer holds what the agent installed.

Three cheap checks, run by one thread every 0.1 s:
- OVSDB: when the IDL's change_seqno moves, read our rows (bridge obr0, its
  tagged ports and interfaces) and compare with the last reconcile's desired
  state; someone deleting our port shows up here.  A new session seqno means the
  connection to ovsdb-server dropped and came back: full resync.
- ovs-vswitchd: its pidfile naming a new live process means a restart (its
  flow tables start empty): resync at once, with the retry backoff reset.
- Flows: every 0.5 s `ovs-ofctl dump-aggregate` counts the flows with our
  cookie; a count different from the last desired state's means flows were
  lost or added behind our back.

What was read while a pass was changing OVS (`Agent.epoch` moved or is odd)
is not judged, but read again: the agent's own changes are not drift.
The watcher only calls `kick(reason, detail, reset_backoff)`: the worker does the work.
"""
from __future__ import annotations

import logging
import threading
import time

from ..ovs.model import BRIDGE, OvsState
from ..ovs.openflow import OpenFlow
from ..process import daemon_pid
from .schedule import Reason

LOG = logging.getLogger(__name__)


def owned_rows(client) -> OvsState:
    """What we own in OVSDB now (bridge and ports, no flows), comparable with the desired state."""
    owned = client.read(BRIDGE)
    return OvsState(owned.bridge, owned.ports)


def settled(agent, epoch: int) -> bool:
    """No pass changed OVS since `epoch` was read, nor was one changing it then
    (`Agent.epoch` is odd while a pass changes OVS): what was read can be judged."""
    return epoch % 2 == 0 and agent.epoch == epoch


class OvsWatcher:
    def __init__(self, agent, interval: float = 0.1, flow_interval: float = 0.5):
        self.agent = agent
        self.interval, self.flow_interval = interval, flow_interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ovs-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        self._last_client = self._last_seqno = self._last_change = None
        self._last_pid = daemon_pid(self.agent.rundir, "ovs-vswitchd") if self.agent.rundir else None
        self._flows_seen = True
        self._next_flow_check = 0.0
        self._failing: set[str] = set()
        while not self._stop.wait(self.interval):
            for check in (self._check_ovsdb, self._check_vswitchd):
                try:
                    check()
                    self._failing.discard(check.__name__)
                except Exception:  # the watcher must outlive any surprise; say so once
                    if check.__name__ not in self._failing:
                        self._failing.add(check.__name__)
                        LOG.warning("OVS watcher: %s failed", check.__name__, exc_info=True)

    def _check_ovsdb(self) -> None:
        a = self.agent
        client = a.session.ovsdb
        if client is None:
            return
        if client is not self._last_client:
            self._last_client, self._last_seqno, self._last_change = client, client.session_seqno(), None
        connected = client.connected()
        seqno = client.session_seqno()
        if connected and seqno != self._last_seqno:
            self._last_seqno = seqno
            a.kick(Reason.OVSDB_RECONNECTED, reset_backoff=True)
        elif connected and client.change_seqno() != self._last_change:
            epoch, change = a.epoch, client.change_seqno()
            expected = a.expected_rows
            differs = expected is not None and owned_rows(client) != expected
            if not settled(a, epoch):
                self._last_change = None    # the agent was changing OVS: look again next turn
            else:
                self._last_change = change
                if differs:
                    a.kick(Reason.OVSDB_ROWS)
        a.session.note_connected(connected)

    def _check_vswitchd(self) -> None:
        a = self.agent
        rundir = a.rundir
        if not rundir:
            return
        pid = daemon_pid(rundir, "ovs-vswitchd")
        if pid != self._last_pid:
            if pid is not None:
                a.kick(Reason.VSWITCHD_STARTED, f"ovs-vswitchd (re)started as pid {pid}", reset_backoff=True)
            else:
                LOG.warning("ovs-vswitchd is not running (no live pid in %s)", rundir)
            self._last_pid = pid
        now = time.monotonic()
        if pid is None or now < self._next_flow_check or a.expected_flows is None:
            return
        self._next_flow_check = now + self.flow_interval
        epoch, expected = a.epoch, a.expected_flows
        count = OpenFlow(rundir, BRIDGE).count()
        if count is None:
            self._flows_seen = False
            return
        if not settled(a, epoch):
            return   # the agent was changing flows: count again next turn
        if count != expected:
            a.kick(Reason.FLOWS, f"{count} flows with our cookie, expected {expected}",
                   reset_backoff=not self._flows_seen)
        self._flows_seen = True
