"""`ovs-mesh install-service`: put the systemd unit and an example config in place.

The unit and the example config ship inside the package (ovs_mesh/agent/data;
deploy/systemd/ links to them), so an installed ovs-mesh can install itself.
ExecStart points at the ovs-mesh executable doing the install (a virtualenv's
console script, typically).  An existing config is never overwritten.  The pod
guard's CNI plugin (`ovs-mesh-guard`, beside that executable) is linked into the
runtime's plugin directory /opt/cni/bin, where the conflist's `ovs-mesh-guard`
is looked for; a file there that is not our link is left alone (and said).

It also installs ovs-mesh's start hook of ovs-vswitchd: the script `flow-restore`
(/usr/local/lib/ovs-mesh/flow-restore) and a drop-in of ovs-vswitchd.service that runs it
before every start of ovs-vswitchd (flow-restore-wait, bounded: see agent/restore.py); and the
start of ovs-monitor-ipsec used with cluster.encryption ipsec: the wrapper
/usr/local/lib/ovs-mesh/ovs-monitor-ipsec (Debian's monitor with its VXLAN/Geneve connection
names read right, see that file) and a drop-in of openvswitch-ipsec.service that starts it.
`uninstall-service` removes the unit, the drop-ins and the scripts, and leaves the config, the
state directory and what the agent installed in OVS (`ovs-mesh teardown` removes that).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

from ovs_mesh.files import write_atomic
from ovs_mesh.host import services

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
UNIT_NAME = "ovs-mesh.service"
HOOK = "flow-restore"
HOOK_PATH = "usr/local/lib/ovs-mesh/" + HOOK
DROP_IN = "50-ovs-mesh-flow-restore.conf"
DROP_IN_DIR = "etc/systemd/system/ovs-vswitchd.service.d"
MONITOR = "ovs-monitor-ipsec"
MONITOR_PATH = "usr/local/lib/ovs-mesh/" + MONITOR
MONITOR_DROP_IN = services.MONITOR_DROP_IN.lstrip("/")   # the agent checks that it is there
# (path under the root, packaged file, mode): the hooks and drop-ins of other units
HOOKS = ((HOOK_PATH, HOOK, 0o755), (os.path.join(DROP_IN_DIR, DROP_IN), DROP_IN, 0o644),
         (MONITOR_PATH, MONITOR, 0o755), (MONITOR_DROP_IN, os.path.basename(MONITOR_DROP_IN), 0o644))
DEFAULT_EXEC = "/usr/local/bin/ovs-mesh"
CNI_BIN = "opt/cni/bin"
GUARD = "ovs-mesh-guard"


def data_text(name: str) -> str:
    with open(os.path.join(DATA, name), encoding="utf-8") as f:
        return f.read()


def default_exec() -> str:
    argv0 = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if os.path.basename(argv0) == "ovs-mesh" and os.access(argv0, os.X_OK):
        return argv0
    beside = os.path.join(os.path.dirname(sys.executable), "ovs-mesh")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("ovs-mesh") or DEFAULT_EXEC


def unit_text(exec_path: str) -> str:
    return data_text(UNIT_NAME).replace(DEFAULT_EXEC + " ", exec_path + " ")


def install_service(root: str = "/", exec_path: str | None = None, dry_run: bool = False,
                    enable: bool = True) -> list[str]:
    """Install; returns the lines describing what was (or would be) done."""
    exec_path = exec_path or default_exec()
    unit_path = os.path.join(root, "etc/systemd/system", UNIT_NAME)
    config_path = os.path.join(root, "etc/ovs-mesh/config.yaml")
    unit = unit_text(exec_path)
    done = []
    try:
        with open(unit_path, encoding="utf-8") as f:
            current = f.read()
    except OSError:
        current = None
    if current == unit:
        done.append(f"unchanged {unit_path}")
    else:
        done.append(f"write {unit_path} (ExecStart={exec_path})")
        if not dry_run:
            os.makedirs(os.path.dirname(unit_path), exist_ok=True)
            _write(unit_path, unit, 0o644)
    if os.path.exists(config_path):
        done.append(f"keep existing {config_path}")
    else:
        done.append(f"write example {config_path} (edit it: nodes and local.node)")
        if not dry_run:
            os.makedirs(os.path.dirname(config_path), exist_ok=True)
            _write(config_path, data_text("config.yaml"), 0o644)
    for rel, name, mode in HOOKS:
        done.append(_ensure(os.path.join(root, rel), data_text(name), mode, dry_run))
    cni_dir = os.path.join(root, "etc/cni/net.d")  # writable for the unit only if it exists
    if not os.path.isdir(cni_dir):
        done.append(f"create {cni_dir}")
        if not dry_run:
            os.makedirs(cni_dir, exist_ok=True)
    done += _link_guard(root, os.path.join(os.path.dirname(exec_path), GUARD), dry_run)
    if enable and os.path.abspath(root) == "/":
        for cmd in (["systemctl", "daemon-reload"], ["systemctl", "enable", UNIT_NAME]):
            done.append("run " + " ".join(cmd))
            if not dry_run:
                subprocess.run(cmd, check=True)
        done.append(f"then: edit {config_path}; systemctl start {UNIT_NAME}; journalctl -u {UNIT_NAME} -f")
    return done


def _ensure(path: str, text: str, mode: int, dry_run: bool) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text and os.stat(path).st_mode & 0o7777 == mode:
                return f"unchanged {path}"
    except OSError:
        pass
    if not dry_run:
        _write(path, text, mode)
    return f"write {path}"


def uninstall_service(root: str = "/", dry_run: bool = False) -> list[str]:
    """Stop and disable the agent, remove the unit, the drop-ins and the scripts they run (only
    files with our content's names; the config and /var/lib/ovs-mesh stay)."""
    live = os.path.abspath(root) == "/"
    done = []
    if live:
        cmd = ["systemctl", "disable", "--now", UNIT_NAME]
        done.append("run " + " ".join(cmd))
        if not dry_run:
            subprocess.run(cmd, check=False)
    for rel in (os.path.join("etc/systemd/system", UNIT_NAME), *(h[0] for h in HOOKS)):
        path = os.path.join(root, rel)
        if os.path.lexists(path):
            done.append(f"remove {path}")
            if not dry_run:
                os.unlink(path)
    for rel in sorted({os.path.dirname(h[0]) for h in HOOKS}):
        path = os.path.join(root, rel)
        if os.path.isdir(path) and not os.listdir(path) and not dry_run:
            os.rmdir(path)
    link = os.path.join(root, CNI_BIN, GUARD)
    if os.path.islink(link) and os.path.basename(os.readlink(link)) == GUARD:
        done.append(f"remove {link}")
        if not dry_run:
            os.unlink(link)
    if live:
        done.append("run systemctl daemon-reload")
        if not dry_run:
            subprocess.run(["systemctl", "daemon-reload"], check=False)
    done.append("kept: /etc/ovs-mesh, /var/lib/ovs-mesh and what the agent installed in OVS "
                "(`ovs-mesh teardown` removes that)")
    return done


def _link_guard(root: str, target: str, dry_run: bool) -> list[str]:
    """/opt/cni/bin/ovs-mesh-guard -> the guard plugin beside ovs-mesh (a link of ours only)."""
    link = os.path.join(root, CNI_BIN, GUARD)
    if os.path.islink(link) and os.readlink(link) == target:
        return [f"unchanged {link}"]
    if os.path.lexists(link) and not os.path.islink(link):
        return [f"keep existing {link} (not a link of ours): check that it is ovs-mesh's guard plugin"]
    if not dry_run:
        os.makedirs(os.path.dirname(link), exist_ok=True)
        tmp = link + ".ovs-mesh-new"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, link)
    return [f"link {link} -> {target} (the pod guard's CNI plugin)"]


def _write(path: str, text: str, mode: int) -> None:
    write_atomic(path, text, mode)
