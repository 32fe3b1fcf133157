"""Start and stop a private ovsdb-server + ovs-vswitchd in a directory of their own.

Used by the one-machine lab (one pair per node namespace), the sandbox tests
and the benchmarks.  Daemons are stopped by the pid in their pidfile, never by
name, so nothing else on the machine is touched.
"""
from __future__ import annotations

import os
import signal
import subprocess

from ..process import daemon_pid, stop_pid, wait_until

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"


class OvsDaemons:
    def __init__(self, rundir: str, netns: str | None = None, dummy: bool = False,
                 ovsdb_args: tuple[str, ...] = ()):
        self.rundir = os.path.abspath(rundir)
        self.netns = netns
        self.dummy = dummy
        self.ovsdb_args = tuple(ovsdb_args)

    @property
    def db_sock(self) -> str:
        return os.path.join(self.rundir, "db.sock")

    @property
    def remote(self) -> str:
        return f"unix:{self.db_sock}"

    @property
    def env(self) -> dict:
        d = self.rundir
        return {**os.environ, "OVS_RUNDIR": d, "OVS_LOGDIR": d, "OVS_DBDIR": d, "OVS_SYSCONFDIR": d}

    def _cmd(self, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *args] if self.netns else args

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        p = subprocess.run(self._cmd(list(args)), env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")
        return p.stdout

    def vsctl(self, *args: str, **kw) -> str:
        return self.run("ovs-vsctl", f"--db={self.remote}", "--timeout=30", *args, **kw)

    def ofctl(self, *args: str, **kw) -> str:
        from ..ovs.openflow import OFCTL

        return self.run(*OFCTL, *args, **kw)

    def appctl(self, *args: str, **kw) -> str:
        return self.run("ovs-appctl", "-t", self.vswitchd_ctl(), *args, **kw)

    def mgmt(self, bridge: str) -> str:
        return f"unix:{os.path.join(self.rundir, bridge + '.mgmt')}"

    def pid(self, daemon: str) -> int | None:
        return daemon_pid(self.rundir, daemon)

    def vswitchd_ctl(self) -> str:
        return os.path.join(self.rundir, f"ovs-vswitchd.{self.pid('ovs-vswitchd')}.ctl")

    def start(self) -> OvsDaemons:
        os.makedirs(self.rundir, exist_ok=True)
        db = os.path.join(self.rundir, "conf.db")
        if not os.path.exists(db):
            self.run("ovsdb-tool", "create", db, SCHEMA)
        self.start_ovsdb()
        self.vsctl("--no-wait", "init")
        self.start_vswitchd()
        return self

    def start_ovsdb(self) -> None:
        if self.pid("ovsdb-server") is None:
            self.run("ovsdb-server", os.path.join(self.rundir, "conf.db"),
                     f"--remote=punix:{self.db_sock}", "--pidfile", "--detach", "--log-file",
                     "--no-chdir", *self.ovsdb_args)
        _wait(lambda: os.path.exists(self.db_sock), "ovsdb-server socket")

    def start_vswitchd(self) -> None:
        if self.pid("ovs-vswitchd") is None:
            extra = ["--enable-dummy"] if self.dummy else []
            self.run("ovs-vswitchd", self.remote, "--pidfile", "--detach", "--log-file", "--no-chdir",
                     *extra)
        _wait(lambda: os.path.exists(self.vswitchd_ctl()), "ovs-vswitchd control socket")

    def stop_daemon(self, daemon: str, sig=signal.SIGTERM, timeout: float = 10) -> None:
        pid = self.pid(daemon)
        if pid is not None:
            stop_pid(pid, timeout, sig)

    def stop(self) -> None:
        self.stop_daemon("ovs-vswitchd")
        self.stop_daemon("ovsdb-server")


def _wait(cond, what: str, timeout: float = 10) -> None:
    if not wait_until(cond, timeout):
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
