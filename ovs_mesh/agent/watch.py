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

The watcher only calls `kick(reason, reset_backoff)`: the worker does the work.
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
import time

from ..process import alive as _alive
from ..state import BRIDGE, COOKIE_MATCH

LOG = logging.getLogger(__name__)
_FLOW_COUNT = re.compile(r"flow_count=(\d+)")
MONITORING = 6  # ovs.db.idl.Idl.IDL_S_MONITORING


def ovsdb_connected(client) -> bool:
    """The IDL is connected and has its monitor data (its cache is current)."""
    idl = client.idl
    session = getattr(idl, "_session", None)
    if session is None or not session.is_connected():
        return False
    return getattr(idl, "state", MONITORING) == getattr(idl, "IDL_S_MONITORING", MONITORING)


def session_seqno(client) -> int | None:
    session = getattr(client.idl, "_session", None)
    return session.get_seqno() if session is not None else None


def owned_rows(client):
    """What we own in OVSDB now (bridge and ports, no flows), comparable with the desired state."""
    state, _, _ = client.read(BRIDGE)
    return state


def vswitchd_pid(rundir: str) -> int | None:
    try:
        with open(os.path.join(rundir, "ovs-vswitchd.pid")) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def flow_count(rundir: str, bridge: str = BRIDGE) -> int | None:
    """Flows with our cookie on the bridge, or None when vswitchd cannot tell."""
    mgmt = os.path.join(rundir, bridge + ".mgmt")
    if not os.path.exists(mgmt):
        return None
    try:
        p = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-aggregate", f"unix:{mgmt}", COOKIE_MATCH],
                           capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = _FLOW_COUNT.search(p.stdout) if p.returncode == 0 else None
    return int(m.group(1)) if m else None


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
        self._last_pid = vswitchd_pid(self.agent.rundir) if self.agent.rundir else None
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
        client = a.client
        if client is None:
            return
        if client is not self._last_client:
            self._last_client, self._last_seqno, self._last_change = client, session_seqno(client), None
        connected = ovsdb_connected(client)
        seqno = session_seqno(client)
        if connected and seqno != self._last_seqno:
            self._last_seqno = seqno
            a.kick("ovsdb-server reconnected: full resync", reset_backoff=True)
        elif connected and client.idl.change_seqno != self._last_change:
            self._last_change = client.idl.change_seqno
            expected = a.expected_rows
            if expected is not None and owned_rows(client) != expected:
                a.kick("OVSDB rows we own changed")
        a.note_ovsdb_connected(connected)

    def _check_vswitchd(self) -> None:
        a = self.agent
        rundir = a.rundir
        if not rundir:
            return
        pid = vswitchd_pid(rundir)
        if pid != self._last_pid:
            if pid is not None:
                a.kick(f"ovs-vswitchd (re)started as pid {pid}", reset_backoff=True)
            else:
                LOG.warning("ovs-vswitchd is not running (no live pid in %s)", rundir)
            self._last_pid = pid
        now = time.monotonic()
        if pid is None or now < self._next_flow_check or a.expected_flows is None:
            return
        self._next_flow_check = now + self.flow_interval
        count = flow_count(rundir)
        if count is None:
            self._flows_seen = False
            return
        if count != a.expected_flows:
            a.kick(f"{count} flows with our cookie, expected {a.expected_flows}",
                   reset_backoff=not self._flows_seen)
        self._flows_seen = True
