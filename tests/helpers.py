"""Small builders shared by the test tiers."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import time

from ruamel.yaml import YAML

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def base_config(n: int = 3, tunnel: str = "vxlan", mode: str = "flow", **cluster) -> dict:
    return {
        "cluster": {"cidr": "10.244.0.0/16", "node_prefix": 24, "tunnel": tunnel, "mode": mode, **cluster},
        "nodes": [{"name": f"node-{i}", "ip": f"192.168.56.{10 + i}", "subnet": f"10.244.{i}.0/24"}
                  for i in range(1, n + 1)],
        "local": {"node": "node-1", "datapath": "dummy", "host": False},
    }


def write_config(path: str, data: dict) -> str:
    y = YAML(typ="safe", pure=True)
    y.default_flow_style = False
    with open(path, "w") as f:
        y.dump(copy.deepcopy(data), f)
    return path


def run_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ovs_mesh", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, **(env or {})})


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
