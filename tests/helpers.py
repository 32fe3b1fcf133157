"""Small builders shared by the test tiers: configs, the one CLI runner, the one "tool missing" rule."""
from __future__ import annotations

import contextlib
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
from ruamel.yaml import YAML

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = [sys.executable, "-m", "ovs_mesh"]   # how every test runs ovs-mesh (the venv's code)

# Debian package of each tool a test may need: the skip message says what to install.
PACKAGES = {"ovs-vswitchd": "openvswitch-switch", "ovsdb-server": "openvswitch-switch",
            "ovs-pki": "openvswitch-common", "ip": "iproute2", "ping": "iputils-ping", "ethtool": "ethtool",
            "nsenter": "util-linux", "systemd-analyze": "systemd", "vagrant": "vagrant",
            "/usr/lib/cni/bridge": "containernetworking-plugins",
            "/usr/lib/cni/host-local": "containernetworking-plugins",
            "podman": "podman", "runc": "runc", "mmdebstrap": "mmdebstrap", "/bin/busybox": "busybox-static"}
LAB_TOOLS = ("ovs-vswitchd", "ovsdb-server", "ip", "ping", "ethtool", "/usr/lib/cni/bridge",
             "/usr/lib/cni/host-local")


def need(*tools: str, root: bool = False) -> None:
    """Skip unless every tool (a command on PATH, or an absolute path) is there, and root if asked.

    The one rule for missing tools: the skip names what is missing and its Debian
    package; with CI set, tests/conftest.py turns every skip into a failure.
    """
    if root and os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, OVS daemons)")
    missing = [t for t in tools if not (os.access(t, os.X_OK) if os.path.isabs(t) else shutil.which(t))]
    if missing:
        pkgs = sorted({PACKAGES[t] for t in missing if t in PACKAGES})
        pytest.skip(f"missing: {', '.join(missing)}" + (f" (apt-get install {' '.join(pkgs)})" if pkgs else ""))


def need_root() -> None:
    need(root=True)


def run_cli(*args: str, netns: str | None = None, check: bool = False, env: dict | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """`ovs-mesh ARGS` (inside network namespace `netns`); check=True fails the test on a non-zero exit."""
    cmd = (["ip", "netns", "exec", netns] if netns else []) + [*CLI, *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                       env={**os.environ, **(env or {})})
    if check and p.returncode != 0:
        raise AssertionError(f"ovs-mesh {' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def allocate_cli(path, text: str, comments: tuple[str, ...]) -> tuple[str, str]:
    """Write TEXT to PATH and run `ovs-mesh allocate` on it: exit 0, every one of COMMENTS kept,
    and a second run changes nothing. Returns (the first run's output, the file it wrote)."""
    path.write_text(text)
    r = run_cli("--config", str(path), "allocate")
    assert r.returncode == 0, r.stderr
    written = path.read_text()
    assert all(c in written for c in comments), written
    again = run_cli("--config", str(path), "allocate")
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert path.read_text() == written
    return r.stdout, written


def base_config(n: int = 3, tunnel: str = "vxlan", mode: str = "flow", **cluster) -> dict:
    return {
        "cluster": {"cidr": "10.244.0.0/16", "node_prefix": 24, "tunnel": tunnel, "mode": mode, **cluster},
        "nodes": [{"name": f"node-{i}", "ip": f"192.168.56.{10 + i}", "subnet": f"10.244.{i}.0/24"}
                  for i in range(1, n + 1)],
        "local": {"node": "node-1", "datapath": "dummy", "host": False},
    }


def base_config_v6(n: int = 3, family: str = "dual", underlay: str | None = None, tunnel: str = "vxlan",
                   mode: str = "flow", **cluster) -> dict:
    """base_config of the contract's dual-stack shape: `family` dual (10.244.0.0/16 and
    fd00:10:244::/56) or ipv6 (the IPv6 range only); node-i has 10.244.i.0/24 and/or
    fd00:10:244:i::/64 and the underlay address 192.168.56.(10+i) or fd00:56::(10+i)
    (`underlay`: ipv4 or ipv6; default ipv6 for an IPv6-only cluster, else ipv4)."""
    underlay = underlay or ("ipv6" if family == "ipv6" else "ipv4")
    data = base_config(n, tunnel, mode, **cluster)
    data["cluster"]["cidr"] = "fd00:10:244::/56" if family == "ipv6" else "10.244.0.0/16,fd00:10:244::/56"
    for i, node in enumerate(data["nodes"], 1):
        if underlay == "ipv6":
            node["ip"] = f"fd00:56::{10 + i}"
        v6 = f"fd00:10:244:{i}::/64"
        node["subnet"] = v6 if family == "ipv6" else [node["subnet"], v6]
    return data


def sandbox_config(ovs, n: int = 2, **cluster) -> dict:
    """base_config(n) for node-1 on a sandbox OVS (dummy datapath, no host networking)."""
    data = base_config(n, **cluster)
    data["local"]["ovsdb"] = ovs.remote
    return data


def write_config(path: str, data: dict) -> str:
    y = YAML(typ="safe", pure=True)
    y.default_flow_style = False
    with open(path, "w") as f:
        y.dump(copy.deepcopy(data), f)
    return path


@contextlib.contextmanager
def sandbox_ovs(prefix: str = "ovsm-sb-", **kw):
    """A private ovsdb-server + ovs-vswitchd (dummy datapath) in a temp dir, removed on the way out."""
    from ovs_mesh.lab.daemons import OvsDaemons

    need("ovs-vswitchd", "ovsdb-server")
    d = tempfile.mkdtemp(prefix=prefix)
    daemons = OvsDaemons(d, dummy=True, **kw)
    try:
        daemons.start()
        yield daemons
    finally:
        daemons.stop()
        shutil.rmtree(d, ignore_errors=True)


def wait_for(pred, timeout: float = 5.0, what: str = "condition", interval: float = 0.02):
    """Poll pred() until it returns a truthy value; fail with the last value after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def installed_flows(installed) -> frozenset:
    """Every flow in the agent's record (`agent.installed.Installed`), to compare with OVS."""
    return installed.fixed.flows.union(*(p.flows for p in installed.peers.values()))
