"""Run `ovs-mesh agent` as a real process against a sandbox OVS (dummy datapath).

`AgentProc` starts the agent with NOTIFY_SOCKET pointing at a unix datagram
socket the test binds (so the sd_notify protocol is exercised for real),
collects its stderr in a file, and offers polling helpers with deadlines.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request

import pytest

from tests.helpers import CLI, REPO, sandbox_config, wait_for, write_config

from ovs_mesh.state import COOKIE_MATCH


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def our_flows(ovs) -> str:
    return ovs.ofctl("--no-stats", "dump-flows", ovs.mgmt("obr0"), COOKIE_MATCH, check=False)


def flow_lines(ovs) -> list[str]:
    return sorted(line.strip() for line in our_flows(ovs).splitlines() if "cookie=" in line)


class NotifySocket:
    """A bound unix datagram socket collecting sd_notify messages."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.messages.append(data.decode())

    def fields(self) -> list[str]:
        return [line for m in list(self.messages) for line in m.split("\n")]

    def close(self):
        self._stop = True
        self._thread.join(timeout=2)
        self.sock.close()


class AgentProc:
    def __init__(self, ovs, workdir: str, data: dict, resync: float = 60, extra_env: dict | None = None):
        self.ovs = ovs
        self.workdir = workdir
        self.config = os.path.join(workdir, "config.yaml")
        write_config(self.config, data)
        self.port = free_port()
        self.notify = NotifySocket(os.path.join(workdir, "notify.sock"))
        self.resync = resync
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None
        self.logs: list[str] = []
        self.starts = 0

    @property
    def log_path(self) -> str:
        return os.path.join(self.workdir, f"agent{self.starts}.log")

    def start(self):
        self.starts += 1
        env = {**os.environ, "NOTIFY_SOCKET": self.notify.path, "PYTHONUNBUFFERED": "1", **self.extra_env}
        env.pop("JOURNAL_STREAM", None)
        self._log = open(self.log_path, "w")
        self.logs.append(self.log_path)
        self.proc = subprocess.Popen(
            [*CLI, "--config", self.config, "agent",
             "--metrics", f"127.0.0.1:{self.port}", "--resync", str(self.resync)],
            cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def wait_ready(self, timeout: float = 20):
        n_before = sum(1 for f in self.notify.fields() if f == "READY=1")
        return wait_for(lambda: self._ready_count() > n_before or (self.proc.poll() is not None and
                                                                  self.fail("agent exited")),
                        timeout, "READY=1")

    def _ready_count(self):
        return sum(1 for f in self.notify.fields() if f == "READY=1")

    def fail(self, why):
        raise AssertionError(f"{why}; log:\n{self.log()}")

    def write(self, data: dict, atomic: bool = False):
        if atomic:
            tmp = os.path.join(self.workdir, ".config.yaml.new")
            write_config(tmp, data)
            os.replace(tmp, self.config)
        else:
            write_config(self.config, data)

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metric(self, name: str) -> float | None:
        try:
            _, text = self.http("/metrics")
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 10) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._log.close()
        return rc

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.proc is not None:
            self._log.close()


@pytest.fixture
def agent_factory(ovs):
    made: list[AgentProc] = []
    workdir = tempfile.mkdtemp(prefix="ovsm-ag-", dir=ovs.rundir)

    def make(data=None, **kw) -> AgentProc:
        a = AgentProc(ovs, workdir, data if data is not None else sandbox_config(ovs), **kw)
        made.append(a)
        return a

    try:
        yield make
    finally:
        for a in made:
            a.kill()
            a.notify.close()
