"""Lab fixtures: unique lab names, and `lab down` after every test, also on failure."""
import os
import secrets

import pytest

from tests.helpers import LAB_TOOLS, need, run_cli


def ovs_mesh(*args, check=True, timeout=300):
    """Alias of tests.helpers.run_cli for older tests: `ovs-mesh ARGS`, failing the test on an error by default."""
    return run_cli(*args, check=check, timeout=timeout)


def need_lab_tools():
    need(*LAB_TOOLS, root=True)


@pytest.fixture
def lab_name():
    """A fresh lab name ("t" + 4 hex, or OVS_MESH_TEST_LAB_PREFIX's letters + 4 hex); the lab is
    torn down afterwards whatever happened."""
    need_lab_tools()
    name = os.environ.get("OVS_MESH_TEST_LAB_PREFIX", "t")[:2] + secrets.token_hex(2)
    try:
        yield name
    finally:
        run_cli("lab", "down", "--name", name, timeout=300)


def flow_lab(prefix: str):
    """A 2-node VXLAN flow-mode lab with one pod per node, named PREFIX + 4 hex, torn down after
    (a module fixture's body: `yield from flow_lab("rs")`)."""
    from ovs_mesh.lab import build

    need_lab_tools()
    name = prefix + secrets.token_hex(2)
    try:
        yield build.up(name, nodes=2, tunnel="vxlan", mode="flow", pods_per_node=1, progress=lambda s: None)
    finally:
        build.down(name, progress=lambda s: None)
