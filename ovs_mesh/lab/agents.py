"""One `ovs-mesh agent` per lab node, as a real node runs it.

Every node namespace runs `ovs-mesh --config <lab>/topology.yaml --local
<node>/local.yaml agent`: all agents read the one shared topology file, so
editing that file (atomically) changes the lab within a second.  Each agent is
recorded in the lab state (kind "agent", with its pid file) before it starts,
logs to `<node>/agent.log`, keeps its last good inventory in `<node>/state`,
and counts as ready when it has written the status file of a successful
reconcile (`<node>/ovs/ovs-mesh.status.json`, the one `ovs-mesh status` reads)
after it started.  It serves its metrics on METRICS
inside its namespace.  Agents are stopped by the pid in
their pid file (SIGTERM, then SIGKILL after a deadline), never by name.
A node without an agent is configured with one `ovs-mesh apply` (apply_once).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from ovs_mesh.files import write_atomic
from ovs_mesh.process import alive, stop_pid
from ovs_mesh.reconcile.status_file import STATUS_FILE

from .nodes import local_section
from .record import LabError, LabState, Node
from .resources import run
from .topology import write_yaml

OVS_MESH = [sys.executable, "-m", "ovs_mesh"]
# Each agent serves /metrics on the loopback of its own node namespace (one per node: no clash).
METRICS = "127.0.0.1:9476"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class AgentError(LabError):
    """An agent did not start, get ready or stop."""


def write_local(node: Node) -> None:
    """The node's local.yaml (its `local` section): what its agent reads beside the topology."""
    write_yaml(node.local, local_section(node))


def args(st: LabState, node: Node, *extra: str) -> list[str]:
    """`ovs-mesh --config <lab>/topology.yaml --local <node>/local.yaml EXTRA` (run it in the node's namespace)."""
    return [*OVS_MESH, "--config", st.topology_path, "--local", node.local, *extra]


def command(st: LabState, node: Node, *extra: str) -> list[str]:
    """args() inside the node namespace."""
    return ["ip", "netns", "exec", node.ns, *args(st, node, *extra)]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pid_of(node: Node) -> int | None:
    """The live agent of this node (pid file, checked against the command line: pid reuse)."""
    return _pid_from(node.agent_pidfile, node.local)


def _pid_from(pidfile: str, local: str) -> int | None:
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    cmd = _cmdline(pid)
    if not alive(pid) or " agent" not in cmd or local not in cmd:
        return None
    return pid


def last_status(node: Node) -> dict | None:
    try:
        with open(os.path.join(node.rundir, STATUS_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def start(st: LabState, node: Node) -> tuple[int, float]:
    """Start the node's agent (recorded first); returns (pid, wall-clock start time)."""
    if pid_of(node) is not None:
        raise AgentError(f"{node.name}: agent already runs as pid {pid_of(node)}")
    st.record("agent", node=node.name, netns=node.ns, pidfile=node.agent_pidfile, local=node.local)
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")}
    since = time.time()
    with open(node.agent_log, "ab") as log:
        p = subprocess.Popen(command(st, node, "agent", "--metrics", METRICS if node.ns else "off",
                                     "--state-dir", os.path.join(node.dir, "state")),
                             stdin=subprocess.DEVNULL,
                             stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                             close_fds=True)
    write_atomic(node.agent_pidfile, f"{p.pid}\n")
    _CHILDREN[p.pid] = p
    return p.pid, since


_CHILDREN: dict[int, subprocess.Popen] = {}  # reaped when stopped (no zombies in long test runs)


def wait_ready(node: Node, pid: int, since: float, timeout: float = READY_TIMEOUT) -> dict:
    """Wait for the agent's first successful reconcile after `since`; returns its status record."""
    deadline = time.monotonic() + timeout
    while True:
        s = last_status(node)
        if s is not None and s.get("time", 0) >= since:
            return s
        if not alive(pid):
            raise AgentError(f"{node.name}: agent (pid {pid}) exited before it was ready:\n{log_tail(node)}")
        if time.monotonic() > deadline:
            raise AgentError(f"{node.name}: agent (pid {pid}) not ready after {timeout:.0f}s:\n{log_tail(node)}")
        time.sleep(0.02)


def wait_log(node: Node, pid: int, text: str, offset: int = 0, timeout: float = READY_TIMEOUT) -> None:
    """Wait until the agent's log (from byte `offset`) contains `text`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(node.agent_log, "rb") as f:
                f.seek(offset)
                if text.encode() in f.read():
                    return
        except OSError:
            pass
        if not alive(pid):
            raise AgentError(f"{node.name}: agent (pid {pid}) exited:\n{log_tail(node)}")
        if time.monotonic() > deadline:
            raise AgentError(f"{node.name}: no {text!r} in the agent log after {timeout:.0f}s:\n"
                             f"{log_tail(node)}")
        time.sleep(0.02)


def log_tail(node: Node, lines: int = 15) -> str:
    try:
        with open(node.agent_log, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(pid: int, sig: int, timeout: float) -> None:
    stop_pid(pid, timeout, sig)
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.wait(timeout=5)


def stop(node: Node, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int | None:
    """Stop the node's agent if it runs; returns the pid it had."""
    pid = pid_of(node)
    if pid is not None:
        _stop(pid, sig, timeout)
    return pid


def stop_recorded(rec: dict, timeout: float = STOP_TIMEOUT) -> int | None:
    """Stop an agent from its state record (used by `lab down`, also after a crash)."""
    pid = _pid_from(rec["pidfile"], rec["local"])
    if pid is not None:
        _stop(pid, signal.SIGTERM, timeout)
    return pid


def restart(st: LabState, node: Node, sig: int = signal.SIGTERM, timeout: float = READY_TIMEOUT) -> dict:
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


def apply_once(st: LabState, n: Node) -> str:
    """Run `ovs-mesh apply` once in the node's namespace (shared topology + its local file)."""
    p = run(*args(st, n, "apply"), netns=n.ns, check=False, timeout=120)
    if p.returncode != 0:
        raise LabError(f"{n.name}: ovs-mesh apply: exit {p.returncode}: {(p.stderr or p.stdout).strip()}")
    return p.stdout.strip().splitlines()[0] if p.stdout.strip() else "ok"


def wait_converged(st: LabState, n: Node, timeout: float = 30) -> dict:
    """Poll `ovs-mesh status --json` in the node until OVS matches the topology file now."""
    deadline = time.monotonic() + timeout
    while True:
        p = run(*args(st, n, "status", "--json"), netns=n.ns, check=False)
        try:
            data = json.loads(p.stdout)
        except ValueError:
            data = {"converged": False, "problems": [(p.stderr or p.stdout).strip()]}
        if data.get("converged"):
            return data
        if time.monotonic() > deadline:
            raise LabError(f"{n.name}: not converged after {timeout:.0f}s: {data.get('problems')}\n"
                           f"{log_tail(n)}")
        time.sleep(0.1)
