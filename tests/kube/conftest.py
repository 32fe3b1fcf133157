"""Fixtures for the Kubernetes source tests: a running source (the fake API server,
`apiserver`, and its `kubeconfig` are in tests/conftest.py)."""
from __future__ import annotations

import threading

import pytest

from ovs_mesh.sources.kubernetes_source import KubernetesSource
from topology.model import Cluster, Kubernetes


class Notifications:
    def __init__(self):
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            self.count += 1


@pytest.fixture
def start_source(kubeconfig, monkeypatch):
    """start_source(cluster=..., **kwargs) -> (source, notifications); stopped at teardown.
    Keyword arguments named like a `kubernetes:` key go to the options, the rest to the source."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    started = []

    def start(cluster: Cluster | None = None, **kwargs):
        kwargs.setdefault("backoff", (0.05, 0.3))
        kwargs.setdefault("request_timeout", 5.0)
        opts = {k: kwargs.pop(k) for k in ("resync_seconds", "underlay_family") if k in kwargs}
        src = KubernetesSource(cluster or Cluster(), Kubernetes(kubeconfig=kubeconfig, **opts), **kwargs)
        started.append(src)
        notes = Notifications()
        src.start(notes)
        return src, notes

    try:
        yield start
    finally:
        for src in started:
            src.stop()
