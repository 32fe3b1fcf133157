"""Fixtures for the Kubernetes source tests: a fake API server and a running source."""
from __future__ import annotations

import os
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from fake_apiserver import FakeApiServer  # noqa: E402

from topology.kubernetes_source import KubernetesSource  # noqa: E402
from topology.model import Cluster  # noqa: E402


def wait_for(pred, timeout: float = 5.0, what: str = "condition"):
    """Poll pred() until it returns a truthy value; fail with the last value after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


class Notifications:
    def __init__(self):
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            self.count += 1


@pytest.fixture
def apiserver():
    server = FakeApiServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def kubeconfig(apiserver, tmp_path):
    return apiserver.kubeconfig(str(tmp_path / "kubeconfig"))


@pytest.fixture
def start_source(kubeconfig, monkeypatch):
    """start_source(cluster=..., **kwargs) -> (source, notifications); stopped at teardown."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    started = []

    def start(cluster: Cluster | None = None, **kwargs):
        kwargs.setdefault("backoff", (0.05, 0.3))
        kwargs.setdefault("request_timeout", 5.0)
        src = KubernetesSource(cluster or Cluster(), kubeconfig, **kwargs)
        started.append(src)
        notes = Notifications()
        src.start(notes)
        return src, notes

    try:
        yield start
    finally:
        for src in started:
            src.stop()
