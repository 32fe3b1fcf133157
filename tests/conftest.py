"""Suite-wide rules and the fixtures more than one directory uses.

Tiers: every test gets one marker by its directory (registered in setup.cfg),
so `pytest -m unit` is the fast loop:

- unit: tests/unit, tests/kube (pure code; the Kubernetes source against an
  in-process API server)
- sandbox: tests/sandbox, tests/agent (a private OVS with the dummy datapath)
- lab: tests/lab, tests/host, tests/vagrant (root, network namespaces, real packets)
- vm: tests/vm (virtual machines: three Debian VMs booted by Vagrant with
  libvirt, the kernel datapath, ovs-mesh.service under systemd); the slowest
  tier, collected last; `-m "not vm"` leaves it out of a local loop.

A module whose tests belong to another tier says so itself
(`pytestmark = pytest.mark.unit`, as tests/host/test_pure.py does): an
explicit tier marker is never overridden.

In CI (CI set in the environment) a skipped test is a failure: tests that need
root, network namespaces or OVS must run there.  Tests skip through one rule,
tests.helpers.need().
"""
import os

import pytest

from tests.helpers import need_root, sandbox_ovs

__all__ = ["need_root"]  # kept importable from here for tests that do so

TIERS = ("unit", "sandbox", "lab", "vm")
TIER_OF_DIR = {"unit": "unit", "kube": "unit", "sandbox": "sandbox", "agent": "sandbox",
               "lab": "lab", "host": "lab", "vagrant": "lab", "vm": "vm"}
TESTS = os.path.dirname(os.path.abspath(__file__))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(item.get_closest_marker(t) for t in TIERS):
            continue
        rel = os.path.relpath(str(item.path), TESTS).split(os.sep)
        tier = TIER_OF_DIR.get(rel[0]) if len(rel) > 1 else None
        if tier:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI={os.environ['CI']}), which counts as a failure: {reason}"


@pytest.fixture
def ovs():
    """A real ovsdb-server + ovs-vswitchd (dummy datapath) in a temp dir of its own."""
    with sandbox_ovs() as daemons:
        yield daemons


@pytest.fixture
def apiserver():
    """A local HTTP server speaking the Kubernetes list/watch protocol for Node objects."""
    from tests.kube.fake_apiserver import FakeApiServer

    server = FakeApiServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def kubeconfig(apiserver, tmp_path):
    return apiserver.kubeconfig(str(tmp_path / "kubeconfig"))
