"""What the lab creates on the machine, and the one way each kind is released.

Every resource is recorded in the lab record (record.py) before it is made; a
record is a dict with a `kind`:

- `netns` (name): a network namespace; what still runs inside is stopped first
- `veth` (netns, name, peer_netns, peer_name): deleted from its namespace
- `ovs` (rundir, netns): a private ovsdb-server + ovs-vswitchd
- `proc` (pid, netns): a process we started in a namespace (echo servers)
- `agent` (node, netns, pidfile, local): an ovs-mesh agent (agents.py)
- `dir` (path): a directory, removed recursively
- `podman` (name, node, netns, cni_dir, conf): a pod container made by podman (podman.py)

`release()` is the one teardown dispatch: `lab down` and `lab remove-node`
both walk records newest first through it.
"""
from __future__ import annotations

import os
import shutil
import subprocess

from ovs_mesh.lab.daemons import OvsDaemons
from ovs_mesh.process import alive, stop_pid

from .record import LabError

NETNS_DIR = "/run/netns"
KILL_TIMEOUT = 3.0


def run(*args: str, netns: str | None = None, input: str | None = None, env: dict | None = None,
        check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a command (in namespace `netns`); with check, a non-zero exit raises LabError."""
    cmd = (["ip", "netns", "exec", netns] if netns else []) + list(args)
    p = subprocess.run(cmd, input=input, env=env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: exit {p.returncode}: {(p.stderr or p.stdout).strip()}")
    return p


def netns_exists(ns: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, ns))


def netns_list() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def netns_pids(ns: str) -> list[int]:
    p = run("ip", "netns", "pids", ns, check=False)
    return [int(x) for x in p.stdout.split()]


def add_netns(st, ns: str) -> None:
    """Record, then create, a namespace with lo up."""
    st.record("netns", name=ns)
    run("ip", "netns", "add", ns)
    run("ip", "-n", ns, "link", "set", "lo", "up")


def del_netns(ns: str, progress) -> None:
    """Stop what runs inside, then delete the namespace (if it exists)."""
    if netns_exists(ns):
        for pid in netns_pids(ns):
            kill(pid, ns)
        run("ip", "netns", "del", ns, check=False)
        progress(f"deleted namespace {ns}")


def kill(pid: int, netns: str | None) -> None:
    """Stop a process we started, if it still runs in our namespace (pid reuse guard)."""
    if netns and netns_exists(netns):
        if pid not in netns_pids(netns):
            return
    elif not alive(pid):
        return
    stop_pid(pid, KILL_TIMEOUT)


def release(r: dict, progress) -> None:
    """Remove one recorded resource; idempotent; `progress` hears of each namespace deleted.

    Agents are stopped by agents.stop_recorded, before anything else.
    """
    kind = r["kind"]
    if kind == "ovs":
        OvsDaemons(r["rundir"], netns=r["netns"]).stop()
    elif kind == "proc":
        kill(r["pid"], r.get("netns"))
    elif kind == "veth":
        if netns_exists(r["netns"]):
            run("ip", "-n", r["netns"], "link", "del", r["name"], check=False)
    elif kind == "netns":
        del_netns(r["name"], progress)
    elif kind == "dir":
        shutil.rmtree(r["path"], ignore_errors=True)
    elif kind == "podman" and netns_exists(r["netns"]):
        # A pod podman made (podman.py) that is still there (its DEL failed, or a crash): podman
        # removes it from the node's namespace, with the lab's containers.conf while it exists.
        env = {**os.environ, "CONTAINERS_CONF": r["conf"]} if os.path.exists(r["conf"]) else None
        run("nsenter", f"--net={NETNS_DIR}/{r['netns']}", "podman", "--network-config-dir", r["cni_dir"],
            "rm", "-f", "-t", "0", r["name"], env=env, check=False)
