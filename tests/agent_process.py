"""`ovs-mesh agent` as a real process, for the agent tests and the agent benchmark.

`AgentProc` starts the agent with NOTIFY_SOCKET pointing at a unix datagram
socket it binds (so the sd_notify protocol is exercised for real), collects its
stderr in a file, serves its metrics on a free port, and offers polling helpers
with deadlines.  `bench/agent.py` drives the same class.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import urllib.error
import urllib.request

from tests.helpers import CLI, REPO, wait_for, write_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
            except TimeoutError:
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


def _write(path: str, data: dict | str) -> None:
    if isinstance(data, str):
        with open(path, "w") as f:
            f.write(data)
    else:
        write_config(path, data)


class AgentProc:
    def __init__(self, ovs, workdir: str, data: dict, resync: float = 60, extra_env: dict | None = None):
        self.ovs = ovs
        self.workdir = workdir
        self.config = os.path.join(workdir, "config.yaml")
        _write(self.config, data)
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

    def write(self, data: dict | str, atomic: bool = False):
        """The config file now holds `data` (a document, or YAML text); `atomic`: by rename."""
        if atomic:
            tmp = os.path.join(self.workdir, ".config.yaml.new")
            _write(tmp, data)
            os.replace(tmp, self.config)
        else:
            _write(self.config, data)

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


