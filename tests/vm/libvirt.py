"""libvirt for the VM tier: start what is not running, and afterwards stop by pid only that.

These machines have no systemd as PID 1, so nobody starts virtlogd/libvirtd; on a machine where
they run already (a laptop, a CI runner with systemd) nothing is started and nothing stopped.
vagrant-libvirt needs the storage pool `default`; the issue asks for libvirt's `default` network.

Where /dev/kvm exists but KVM is unusable (a nested VM whose CPU hides vmx/svm, as here), libvirt's
KVM capability probe of QEMU fails, so it re-probes QEMU on nearly every API call and defining one
domain takes minutes. When the tier starts libvirtd for the qemu driver, it therefore runs in a
private mount namespace whose /dev has everything but kvm: libvirt then probes TCG only, once.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

from tests.helpers import wait_for

URI = "qemu:///system"
SOCKET = "/var/run/libvirt/libvirt-sock"
POOL_DIR = "/var/lib/libvirt/images"


def virsh(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, check=check,
                          timeout=timeout)


def names(kind: str) -> set[str]:
    """Domains (list), networks (net-list) or pool `default` volumes (vol-list) that exist now."""
    args = {"domain": ["list", "--all", "--name"], "network": ["net-list", "--all", "--name"],
            "volume": ["vol-list", "default"]}[kind]
    out = virsh(*args).stdout.splitlines()
    if kind == "volume":  # a table: " Name  Path" header, dashes, then rows
        out = [line.split()[0] for line in out[2:] if line.strip()]
    return {n.strip() for n in out if n.strip()}


def _up() -> bool:
    try:
        return virsh("version", check=False, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:  # libvirtd probes QEMU's capabilities when it first starts
        return False


# Run "$@" in a private mount namespace (unshare -m) whose /dev lacks kvm; $0 is a scratch directory.
# libvirt's per-QEMU /dev namespace would copy /dev's many bind mounts: off (namespaces = [] in a
# qemu.conf seen only in this namespace).
HIDE_KVM = r"""
set -e
mount --make-rprivate /
{ cat /etc/libvirt/qemu.conf; echo 'namespaces = [ ]'; } >"$0.qemu.conf"
mount --bind "$0.qemu.conf" /etc/libvirt/qemu.conf
mount --rbind /dev "$0"
mount -t tmpfs -o mode=755 omvm-dev /dev
for e in "$0"/* "$0"/.[!.]*; do
  [ -e "$e" ] || [ -L "$e" ] || continue
  n=${e##*/}
  case $n in kvm|pts|ptmx) continue ;; esac
  if [ -L "$e" ]; then cp -P "$e" "/dev/$n"
  elif [ -d "$e" ]; then mkdir "/dev/$n"; mount --rbind "$e" "/dev/$n"
  else : >"/dev/$n"; mount --bind "$e" "/dev/$n"; fi
done
# A devpts of its own: QEMU (user libvirt-qemu) opens the serial console's PTY through it.
mkdir /dev/pts
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
exec "$@"
"""


class Libvirt:
    """Context manager: libvirt usable inside, back to how it was found afterwards."""

    def __init__(self, logdir: str, hide_kvm: bool):
        self.logdir = logdir
        self.hide_kvm = hide_kvm and os.path.exists("/dev/kvm")
        self.procs: list[subprocess.Popen] = []
        self.undo: list[list[str]] = []
        self.started_libvirtd = False

    def _daemon(self, exe: str, ready) -> None:
        log = open(os.path.join(self.logdir, f"{exe}.log"), "ab")
        argv = [exe]
        if exe == "libvirtd" and self.hide_kvm:
            scratch = os.path.join(self.logdir, "dev")
            os.makedirs(scratch, exist_ok=True)
            argv = ["unshare", "-m", "sh", "-c", HIDE_KVM, scratch, exe]
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        log.close()
        self.procs.append(p)
        wait_for(lambda: p.poll() is not None or ready(), timeout=180, interval=0.5, what=f"{exe} to start")
        if p.poll() is not None:
            raise RuntimeError(f"{exe} exited with {p.returncode}: see {self.logdir}/{exe}.log")

    def __enter__(self):
        try:
            if not _up():
                # virtlogd first: libvirtd hands each qemu's console log to it.
                if subprocess.run(["pgrep", "-x", "virtlogd"], capture_output=True).returncode != 0:
                    self._daemon("virtlogd", lambda: os.path.exists("/var/run/libvirt/virtlogd-sock"))
                self._daemon("libvirtd", _up)
                self.started_libvirtd = True
            if virsh("pool-info", "default", check=False).returncode != 0:
                os.makedirs(POOL_DIR, exist_ok=True)
                virsh("pool-define-as", "default", "dir", "--target", POOL_DIR)
                self.undo.append(["pool-undefine", "default"])
                virsh("pool-start", "default")
                self.undo.append(["pool-destroy", "default"])
            elif "running" not in virsh("pool-info", "default").stdout:
                virsh("pool-start", "default")
                self.undo.append(["pool-destroy", "default"])
            if "default" not in names("network"):
                virsh("net-define", "/usr/share/libvirt/networks/default.xml")
                self.undo.append(["net-undefine", "default"])
            if "default" not in virsh("net-list", "--name").stdout.split():
                virsh("net-start", "default")
                self.undo.append(["net-destroy", "default"])
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        if self.started_libvirtd:
            # Networks that libvirtd autostarted when the tier started it (Debian marks `default`
            # autostart) run a dnsmasq each, which outlives libvirtd: stop them with it.
            active = virsh("net-list", "--name", check=False).stdout.split()
            self.undo = [u for u in self.undo if u != ["net-destroy", "default"]]
            for net in active:
                virsh("net-destroy", net, check=False)
        for args in reversed(self.undo):
            virsh(*args, check=False)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if self.started_libvirtd:
            left = libvirt_dnsmasq_pids()
            if left:
                raise RuntimeError(f"libvirt's dnsmasq still runs after the tier stopped its networks: pids {left}")
        return False


def libvirt_dnsmasq_pids() -> list[int]:
    """dnsmasq processes that libvirt started for its networks (their config lives in its state dir)."""
    out = subprocess.run(["pgrep", "-f", "dnsmasq .*--conf-file=/var/lib/libvirt/dnsmasq/"],
                         capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def qemu_pids(prefix: str) -> list[int]:
    """qemu processes of domains named PREFIX*: none may outlive the tier."""
    out = subprocess.run(["pgrep", "-f", f"qemu-system.*-name guest={prefix}"], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def wait_gone(prefix: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while qemu_pids(prefix) and time.monotonic() < deadline:
        time.sleep(0.5)
