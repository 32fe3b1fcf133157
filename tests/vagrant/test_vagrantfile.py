"""`vagrant validate` accepts the lab for 1, 3 and 10 nodes and every tunnel
type and mode, and rejects bad values with a message naming the variable and the value.

Runs offline: VAGRANT_HOME and the .vagrant dir live in a temp dir, and `--ignore-provider` because no
provider (VirtualBox, libvirt) can run on a CI machine.
"""
import os
import subprocess

import pytest

from tests.helpers import need

VAGRANT_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "vagrant")


@pytest.fixture
def validate(tmp_path):
    need("vagrant")

    def run(**env):
        full = {k: v for k, v in os.environ.items() if not k.startswith(("OVS_MESH_", "NODES"))}
        full.update(VAGRANT_HOME=str(tmp_path / "home"), VAGRANT_DOTFILE_PATH=str(tmp_path / "dot"),
                    VAGRANT_CHECKPOINT_DISABLE="1", **env)
        return subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=VAGRANT_DIR, env=full,
                              capture_output=True, text=True, timeout=120)
    return run


@pytest.mark.parametrize("nodes", ["1", "3", "10"])
@pytest.mark.parametrize("tunnel", ["vxlan", "gre", "geneve"])
def test_validate_nodes_and_tunnels(validate, nodes, tunnel):
    p = validate(NODES=nodes, OVS_MESH_TUNNEL=tunnel)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "validated successfully" in p.stdout
    # One machine per node, named node-1..node-N.
    assert p.stdout.count("Ignoring provider config") == int(nodes)
    assert f"node-{nodes}:" in p.stdout


@pytest.mark.parametrize("mode", ["flow", "port", "stp"])
def test_validate_modes(validate, mode):
    p = validate(OVS_MESH_MODE=mode)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("Ignoring provider config") == 3  # default NODES=3


@pytest.mark.parametrize("var, value, reason", [
    ("NODES", "0", "must be an integer from 1 to 50"),
    ("NODES", "three", "must be an integer from 1 to 50"),
    ("OVS_MESH_TUNNEL", "ipip", "must be one of vxlan, gre, geneve"),
    ("OVS_MESH_MODE", "mesh", "must be one of flow, port, stp"),
    ("OVS_MESH_MEMORY", "64", "must be an integer"),
    ("OVS_MESH_LIBVIRT_DRIVER", "xen", "must be one of kvm, qemu"),
    ("OVS_MESH_WHEELHOUSE", "/nonexistent", "no ovs_mesh-*.whl in it"),
])
def test_bad_value_rejected(validate, var, value, reason):
    p = validate(**{var: value})
    assert p.returncode != 0
    assert f"{var}={value}: {reason}" in p.stderr, p.stdout + p.stderr


def test_offline_settings_validate(validate, tmp_path):
    """The documented offline variant: local box, wheelhouse, software emulation."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "ovs_mesh-0.1.0-py3-none-any.whl").write_bytes(b"")
    p = validate(OVS_MESH_BOX="ovs-mesh/bookworm", OVS_MESH_LIBVIRT_DRIVER="qemu",
                 OVS_MESH_WHEELHOUSE=str(wheels), OVS_MESH_LIBVIRT_PREFIX="omvm_")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("Ignoring provider config") == 3
