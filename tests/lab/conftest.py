"""Lab fixtures: unique lab names, and `lab down` after every test, also on failure."""
import os
import secrets
import shutil
import subprocess
import sys

import pytest

from tests.conftest import need_root

OVS_MESH = [sys.executable, "-m", "ovs_mesh"]


def need_lab_tools():
    need_root()
    missing = [t for t in ("ovs-vswitchd", "ovsdb-server", "ip", "ping", "ethtool") if shutil.which(t) is None]
    missing += [p for p in ("/usr/lib/cni/bridge", "/usr/lib/cni/host-local") if not os.path.exists(p)]
    if missing:
        pytest.skip(f"missing lab tools: {', '.join(missing)} (apt-get install openvswitch-switch "
                    "containernetworking-plugins iputils-ping ethtool)")


def ovs_mesh(*args, check=True, timeout=300):
    p = subprocess.run([*OVS_MESH, *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"ovs-mesh {' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture
def lab_name():
    """A fresh lab name ("t" + 4 hex); the lab is torn down afterwards whatever happened."""
    need_lab_tools()
    name = "t" + secrets.token_hex(2)
    try:
        yield name
    finally:
        ovs_mesh("lab", "down", "--name", name, check=False)
