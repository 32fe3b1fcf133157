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
