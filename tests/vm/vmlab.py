"""The VM tier's lab handle: vagrant and ssh against the VMs, and the step timings."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import time

from tests.helpers import REPO

VAGRANT_DIR = os.path.join(REPO, "vagrant")
BOX = "ovs-mesh/bookworm"
TIMES: dict[str, float] = {}

TOOLS = ("vagrant", "virsh", "libvirtd", "virtlogd", "qemu-system-x86_64", "qemu-img", "mmdebstrap",
         "mkfs.vfat", "mcopy", "syslinux", "sfdisk", "ssh", "rsync")


class Lab:
    def __init__(self, tmp: str, prefix: str, wheels: str):
        self.tmp, self.prefix = tmp, prefix
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("OVS_MESH_", "NODES"))}
        self.env.update(NODES="3", OVS_MESH_BOX=BOX, OVS_MESH_LIBVIRT_PREFIX=prefix,
                        OVS_MESH_LIBVIRT_DRIVER=os.environ.get("OVS_MESH_LIBVIRT_DRIVER", "qemu"),
                        OVS_MESH_WHEELHOUSE=wheels, VAGRANT_DEFAULT_PROVIDER="libvirt",
                        VAGRANT_DOTFILE_PATH=os.path.join(tmp, "dot"), VAGRANT_CHECKPOINT_DISABLE="1")
        self.nodes = ["node-1", "node-2", "node-3"]
        self.destroyed = False
        self.ssh_config = os.path.join(tmp, "ssh_config")

    def vagrant(self, *args: str, timeout: float = 900, **env) -> subprocess.CompletedProcess:
        """`vagrant ARGS` in vagrant/; its output also goes to vagrant.log in the lab's temp dir."""
        log = os.path.join(self.tmp, "vagrant.log")
        with open(log, "a") as f:
            f.write(f"\n$ vagrant {' '.join(args)}\n")
            start = f.tell()
        with open(log, "a") as f:
            p = subprocess.run(["vagrant", *args], cwd=VAGRANT_DIR, env={**self.env, **env}, stdout=f,
                               stderr=subprocess.STDOUT, text=True, timeout=timeout)
        with open(log) as f:
            f.seek(start)
            p.stdout = f.read()
        if p.returncode != 0:  # the messages, without progress bars and Ruby backtraces
            lines = [ln for ln in re.split(r"[\r\n]|\x1b\[K", p.stdout)
                     if ln.strip() and "Progress:" not in ln and not re.match(r"\s*(E\s+)?/usr/", ln)]
            raise AssertionError(f"vagrant {' '.join(args)}: exit {p.returncode}\n" + "\n".join(lines[-80:]))
        return p

    def refresh_ssh(self) -> None:
        with open(self.ssh_config, "w") as f:
            f.write(self.vagrant("ssh-config", *self.nodes, timeout=120).stdout)

    def ssh(self, node: str, command: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        """COMMAND as root on NODE (one shell command line)."""
        p = subprocess.run(["ssh", "-F", self.ssh_config, "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
                            node, "sudo", "sh", "-c", shlex.quote(command)],
                           capture_output=True, text=True, timeout=timeout)
        if check:
            assert p.returncode == 0, f"{node}: {command}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    def check(self, **env) -> subprocess.CompletedProcess:
        """vagrant/check.sh across the VMs: must pass in full."""
        p = subprocess.run([os.path.join(VAGRANT_DIR, "check.sh")], cwd=VAGRANT_DIR, env={**self.env, **env},
                           capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, f"check.sh: exit {p.returncode}\n{p.stdout[-8000:]}\n{p.stderr[-4000:]}"
        return p


def timed(name: str):
    class _T:
        def __enter__(self):
            self.t = time.monotonic()

        def __exit__(self, *exc):
            TIMES[name] = round(time.monotonic() - self.t, 1)
    return _T()
