"""One `ovs-mesh agent` per lab node, as a real node runs it.

Every node namespace runs `ovs-mesh --config <lab>/topology.yaml --local
<node>/local.yaml agent`: all agents read the one shared topology file, so
editing that file (atomically) changes the lab within a second.  Each agent is
recorded in the lab state (kind "agent", with its pid file) before it starts,
logs to `<node>/agent.log`, and counts as ready when it has written the status
file of a successful reconcile (`<node>/ovs/ovs-mesh.status.json`, the one
`ovs-mesh status` reads) after it started.  Agents are stopped by the pid in
their pid file (SIGTERM, then SIGKILL after a deadline), never by name.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from ovs_mesh.daemons import _alive
from ovs_mesh.status import STATUS_FILE
from ovs_mesh.files import write_atomic

from .state import LabError, LabState
from .topology import write_yaml

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class AgentError(LabError):
    """An agent did not start, get ready or stop."""


def local_section(node: dict, underlay_bridge: str, underlay_if: str) -> dict:
    return {"node": node["name"], "ovsdb": f"unix:{node['rundir']}/db.sock", "datapath": "netdev",
            "host": True, "underlay_bridge": underlay_bridge, "underlay_interface": underlay_if,
            "cni_conf": node["cni_conf"]}


def write_local(node: dict, local: dict) -> None:
    write_yaml(node["local"], local)


def args(st: LabState, node: dict, *extra: str) -> list[str]:
    """`ovs-mesh --config <lab>/topology.yaml --local <node>/local.yaml EXTRA` (run it in the node's namespace)."""
    from .build import OVS_MESH

    return [*OVS_MESH, "--config", st.topology_path, "--local", node["local"], *extra]


def command(st: LabState, node: dict, *extra: str) -> list[str]:
    """args() inside the node namespace."""
    return ["ip", "netns", "exec", node["ns"], *args(st, node, *extra)]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pid_of(node: dict) -> int | None:
    """The live agent of this node (pid file, checked against the command line: pid reuse)."""
    try:
        with open(node["agent_pidfile"]) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError, KeyError):
        return None
    cmd = _cmdline(pid)
    if not _alive(pid) or " agent" not in cmd or node["local"] not in cmd:
        return None
    return pid


def last_status(node: dict) -> dict | None:
    try:
        with open(os.path.join(node["rundir"], STATUS_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def start(st: LabState, node: dict) -> tuple[int, float]:
    """Start the node's agent (recorded first); returns (pid, wall-clock start time)."""
    if pid_of(node) is not None:
        raise AgentError(f"{node['name']}: agent already runs as pid {pid_of(node)}")
    st.record("agent", node=node["name"], netns=node["ns"], pidfile=node["agent_pidfile"],
              local=node["local"])
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")}
    since = time.time()
    with open(node["agent_log"], "ab") as log:
        p = subprocess.Popen(command(st, node, "agent", "--metrics", "off"), stdin=subprocess.DEVNULL,
                             stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                             close_fds=True)
    write_atomic(node["agent_pidfile"], f"{p.pid}\n")
    _CHILDREN[p.pid] = p
    return p.pid, since


_CHILDREN: dict[int, subprocess.Popen] = {}  # reaped when stopped (no zombies in long test runs)


def wait_ready(node: dict, pid: int, since: float, timeout: float = READY_TIMEOUT) -> dict:
    """Wait for the agent's first successful reconcile after `since`; returns its status record."""
    deadline = time.monotonic() + timeout
    while True:
        s = last_status(node)
        if s is not None and s.get("time", 0) >= since:
            return s
        if not _alive(pid):
            raise AgentError(f"{node['name']}: agent (pid {pid}) exited before it was ready:\n{log_tail(node)}")
        if time.monotonic() > deadline:
            raise AgentError(f"{node['name']}: agent (pid {pid}) not ready after {timeout:.0f}s:\n{log_tail(node)}")
        time.sleep(0.02)


def wait_log(node: dict, pid: int, text: str, offset: int = 0, timeout: float = READY_TIMEOUT) -> None:
    """Wait until the agent's log (from byte `offset`) contains `text`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(node["agent_log"], "rb") as f:
                f.seek(offset)
                if text.encode() in f.read():
                    return
        except OSError:
            pass
        if not _alive(pid):
            raise AgentError(f"{node['name']}: agent (pid {pid}) exited:\n{log_tail(node)}")
        if time.monotonic() > deadline:
            raise AgentError(f"{node['name']}: no {text!r} in the agent log after {timeout:.0f}s:\n"
                             f"{log_tail(node)}")
        time.sleep(0.02)


def log_tail(node: dict, lines: int = 15) -> str:
    try:
        with open(node["agent_log"], errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_pid(pid: int, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> bool:
    """Send `sig`; after `timeout` seconds still alive: SIGKILL.  True when it had to be killed."""
    killed = False
    for s in (sig, signal.SIGKILL):
        try:
            os.kill(pid, s)
        except ProcessLookupError:
            break
        killed = s == signal.SIGKILL
        deadline = time.monotonic() + (timeout if s != signal.SIGKILL else 5)
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        if not _alive(pid):
            break
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.wait(timeout=5)
    return killed and sig != signal.SIGKILL


def stop(node: dict, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int | None:
    """Stop the node's agent if it runs; returns the pid it had."""
    pid = pid_of(node)
    if pid is not None:
        stop_pid(pid, sig, timeout)
    return pid


def stop_recorded(rec: dict, timeout: float = STOP_TIMEOUT) -> int | None:
    """Stop an agent from its state record (used by `lab down`, also after a crash)."""
    return stop({"name": rec["node"], "agent_pidfile": rec["pidfile"], "local": rec["local"]},
                timeout=timeout)


def restart(st: LabState, node: dict, sig: int = signal.SIGTERM, timeout: float = READY_TIMEOUT) -> dict:
    """Stop the agent with `sig`, start a new one and wait until it is ready.

    Returns {"old_pid", "pid", "changes" (of the new agent's first reconcile),
    "problems", "seconds" (start to ready)}.
    """
    old = stop(node, sig)
    pid, since = start(st, node)
    t0 = time.monotonic()
    s = wait_ready(node, pid, since, timeout)
    return {"old_pid": old, "pid": pid, "changes": len(s.get("changes", [])),
            "problems": s.get("problems", []), "seconds": time.monotonic() - t0}
