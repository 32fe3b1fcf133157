"""The one place that asks whether a process lives and stops one by its pid.

Used by the OpenFlow client and the agent's vswitchd watcher (`daemon_pid`: which
vswitchd runs now), the lab's private OVS daemons, its agents and its echo servers.  Processes are always stopped
by pid, never by name, so nothing else on the machine is touched.
"""
from __future__ import annotations

import os
import signal
import time

KILL_TIMEOUT = 5.0   # how long SIGKILL gets before stop_pid gives up


def alive(pid: int) -> bool:
    """True if `pid` runs.  A zombie (exited, not yet reaped by its parent) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, it is just not ours to signal
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def wait_until(cond, timeout: float, interval: float = 0.02) -> bool:
    """Poll cond() until it is true (True) or `timeout` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def stop_pid(pid: int, timeout: float = 10.0, sig: int = signal.SIGTERM) -> bool:
    """Send `sig`; if the process still runs after `timeout` seconds, SIGKILL it.

    Returns True when it had to be killed (it ignored `sig` for `timeout` s);
    False when it exited on `sig`, was already gone, or `sig` was SIGKILL.
    Waits at most KILL_TIMEOUT more after SIGKILL.
    """
    for s in (sig, signal.SIGKILL):
        try:
            os.kill(pid, s)
        except ProcessLookupError:
            return False
        if wait_until(lambda: not alive(pid), timeout if s != signal.SIGKILL else KILL_TIMEOUT, 0.01):
            return s == signal.SIGKILL and sig != signal.SIGKILL
        if s == signal.SIGKILL:
            break
    return sig != signal.SIGKILL


def daemon_pid(rundir: str, daemon: str) -> int | None:
    """The live pid in `<rundir>/<daemon>.pid` (e.g. ovs-vswitchd), or None."""
    try:
        with open(os.path.join(rundir, f"{daemon}.pid")) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None  # a killed daemon may linger as a zombie
