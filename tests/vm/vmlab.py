"""The VM tier's lab handle: vagrant and ssh against the VMs, diagnostics, and the step timings."""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import threading
import time

from tests.helpers import REPO

VAGRANT_DIR = os.path.join(REPO, "vagrant")
BOX = "ovs-mesh/bookworm"
TIMES: dict[str, float] = {}
LOADS: dict[str, str] = {}  # step -> the load average when it ended (the machine is shared)

TOOLS = ("vagrant", "virsh", "libvirtd", "virtlogd", "qemu-system-x86_64", "qemu-img", "mmdebstrap",
         "mkfs.vfat", "mcopy", "syslinux", "sfdisk", "ssh", "rsync")


class StepTimeout(AssertionError):
    pass


def run_logged(argv: list[str], log: str, timeout: float, what: str, **kw) -> subprocess.CompletedProcess:
    """ARGV with its output appended to LOG, every line prefixed with the seconds since the start.
    On timeout the whole process group (vagrant's ssh/rsync children too) is killed."""
    start = time.monotonic()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(argv)}\n")
        f.flush()
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                             start_new_session=True, **kw)
        lines: list[str] = []

        def pump():
            for line in p.stdout:
                lines.append(line)
                f.write(f"[{time.monotonic() - start:7.1f}] {line}")
                f.flush()
        t = threading.Thread(target=pump, daemon=True)
        t.start()
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            t.join(10)
            raise StepTimeout(f"{what}: no result after {timeout:.0f} s (killed); last output:\n"
                              + _clean("".join(lines))) from None
        except BaseException:  # interrupted (Ctrl-C): its own session would outlive us
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            raise
        t.join(10)
    return subprocess.CompletedProcess(argv, p.returncode, "".join(lines), "")


def _clean(out: str, keep: int = 80) -> str:
    """The messages, without progress bars and Ruby backtraces."""
    lines = [ln for ln in re.split(r"[\r\n]|\x1b\[K", out)
             if ln.strip() and "Progress:" not in ln and not ln.endswith("Retrying...")
             and not re.match(r"\s*(E\s+)?/usr/", ln)]
    return "\n".join(lines[-keep:])


class Lab:
    def __init__(self, tmp: str, prefix: str, wheels: str):
        self.tmp, self.prefix = tmp, prefix
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("OVS_MESH_", "NODES"))}
        self.console_dir = os.path.join(tmp, "console")
        os.makedirs(self.console_dir, exist_ok=True)
        os.chmod(tmp, 0o711)  # QEMU (user libvirt-qemu) writes the consoles in there
        os.chmod(self.console_dir, 0o777)
        self.env.update(NODES="3", OVS_MESH_BOX=BOX, OVS_MESH_LIBVIRT_PREFIX=prefix,
                        OVS_MESH_LIBVIRT_DRIVER=os.environ.get("OVS_MESH_LIBVIRT_DRIVER", "qemu"),
                        OVS_MESH_WHEELHOUSE=wheels, OVS_MESH_CONSOLE_LOG_DIR=self.console_dir,
                        VAGRANT_DEFAULT_PROVIDER="libvirt",
                        VAGRANT_DOTFILE_PATH=os.path.join(tmp, "dot"), VAGRANT_CHECKPOINT_DISABLE="1")
        self.nodes = ["node-1", "node-2", "node-3"]
        self.destroyed = False
        self.ssh_config = os.path.join(tmp, "ssh_config")
        self.log = os.path.join(tmp, "vagrant.log")

    def vagrant(self, *args: str, timeout: float = 900, **env) -> subprocess.CompletedProcess:
        """`vagrant ARGS` in vagrant/; its output also goes to vagrant.log in the lab's temp dir."""
        p = run_logged(["vagrant", *args], self.log, timeout, f"vagrant {' '.join(args)}", cwd=VAGRANT_DIR,
                       env={**self.env, **env})
        if p.returncode != 0:
            raise AssertionError(f"vagrant {' '.join(args)}: exit {p.returncode}\n" + _clean(p.stdout))
        return p

    def provision_all(self, timeout: float = 1500, **env) -> None:
        """`vagrant provision` of every VM at once (vagrant itself provisions one machine after
        another): one vagrant process per VM, each with its own log."""
        procs = {}
        start = time.monotonic()
        for node in self.nodes:
            log = open(os.path.join(self.tmp, f"provision-{node}.log"), "w")
            procs[node] = (subprocess.Popen(["vagrant", "provision", node], cwd=VAGRANT_DIR, env={**self.env, **env},
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log)
        failed = []
        for node, (p, log) in procs.items():
            timed_out = False
            try:
                p.wait(timeout=max(1, timeout - (time.monotonic() - start)))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                timed_out = True
            except BaseException:
                for q, _ in procs.values():
                    if q.poll() is None:
                        os.killpg(q.pid, signal.SIGKILL)
                raise
            log.close()
            with open(log.name, errors="replace") as f:
                out = f.read()
            with open(self.log, "a") as f:
                f.write(f"\n$ vagrant provision {node}  (exit {p.returncode})\n{out}")
            if timed_out:
                failed.append(f"{node}: vagrant provision: no result after {timeout:.0f} s (killed)\n{_clean(out, 40)}")
            elif p.returncode != 0:
                failed.append(f"{node}: vagrant provision: exit {p.returncode}\n{_clean(out, 40)}")
        assert not failed, "\n".join(failed)

    def refresh_ssh(self) -> None:
        self.close_ssh()
        cfg = self.vagrant("ssh-config", *self.nodes, timeout=180).stdout
        with open(self.ssh_config, "w") as f:
            f.write(cfg)
            f.write(f"\nHost *\n  ControlMaster auto\n  ControlPath {self.tmp}/cm-%n\n  ControlPersist 300\n")

    def close_ssh(self) -> None:
        if os.path.exists(self.ssh_config):
            for node in self.nodes:
                if os.path.exists(os.path.join(self.tmp, f"cm-{node}")):
                    subprocess.run(["ssh", "-F", self.ssh_config, "-O", "exit", node], capture_output=True,
                                   timeout=30)

    def ssh(self, node: str, command: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        """COMMAND as root on NODE (one shell command line)."""
        try:
            p = subprocess.run(["ssh", "-F", self.ssh_config, "-o", "BatchMode=yes", "-o", "ConnectTimeout=30",
                                node, "sudo", "sh", "-c", shlex.quote(command)],
                               capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise StepTimeout(f"{node}: {command}: no result after {timeout:.0f} s") from None
        if check:
            assert p.returncode == 0, f"{node}: {command}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    def check(self, **env) -> subprocess.CompletedProcess:
        """vagrant/check.sh across the VMs: must pass in full."""
        via = (f"ssh -F {self.ssh_config} -o BatchMode=yes -o ConnectTimeout=30 {{node}} sudo")
        p = run_logged([os.path.join(VAGRANT_DIR, "check.sh")], self.log, 900, "check.sh", cwd=VAGRANT_DIR,
                       env={**self.env, "OVS_MESH_VIA": via, **env})
        assert p.returncode == 0, f"check.sh: exit {p.returncode}\n{p.stdout[-8000:]}"
        return p

    def diagnostics(self) -> str:
        """What to look at when a step failed: each VM's units, the agent's and OVS's journal, the
        datapath, and the tail of its serial console; the end of vagrant's log."""
        out = []
        for node in self.nodes:
            out.append(f"===== {node}")
            try:
                if not os.path.exists(self.ssh_config):
                    raise OSError("no ssh config: the VMs did not come up")
                p = self.ssh(node, "systemctl --failed --no-legend; systemctl is-active ovs-mesh openvswitch-switch; "
                                   "journalctl -b --no-pager -n 60 -u ovs-mesh; "
                                   "journalctl -b --no-pager -n 20 -u ovs-vswitchd -u ovsdb-server; "
                                   "ovs-vsctl show | head -40; ovs-dpctl show", timeout=60, check=False)
                out.append(p.stdout + p.stderr)
            except (StepTimeout, OSError) as e:
                out.append(f"(ssh: {e})")
            console = os.path.join(self.console_dir, f"{node}.log")
            if os.path.exists(console):
                with open(console, errors="replace") as f:  # without colours and "Job ... running" spinners
                    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", f.read())
                lines = [ln for ln in re.split(r"[\r\n]+", text) if ln.strip() and "running (" not in ln]
                out.append(f"--- {node} serial console (last 40 lines)\n" + "\n".join(lines[-40:]))
        if os.path.exists(self.log):
            with open(self.log, errors="replace") as f:
                out.append("===== vagrant.log (last 60 lines)\n" + "".join(f.readlines()[-60:]))
        return "\n".join(out)


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def timed(name: str):
    class _T:
        def __enter__(self):
            self.t = time.monotonic()

        def __exit__(self, *exc):
            TIMES[name] = round(time.monotonic() - self.t, 1)
            LOADS[name] = loadavg()
    return _T()
