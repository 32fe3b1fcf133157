"""`ovs-mesh lab topology`: the generator the Vagrant lab shares (no root needed)."""
from ovs_mesh.lab.topology import read_yaml
from tests.helpers import run_cli
from topology.config import parse_config


def test_topology_writes_a_valid_node_config(tmp_path):
    out = tmp_path / "config.yaml"
    run_cli("lab", "topology", "--node", "vm-1=192.168.56.11", "--node", "vm-2=192.168.56.12",
             "--node", "vm-3=192.168.56.13", "--tunnel", "gre", "--mode", "stp", "--mesh-degree", "2",
             "--local", "vm-2", "--local-set", "datapath=system", "-o", str(out), check=True, timeout=300)
    config = parse_config(read_yaml(str(out)))
    assert config.local.node == "vm-2" and config.local.datapath == "system"
    assert config.cluster.tunnel == "gre" and config.cluster.mesh_degree == 2
    assert [str(n.subnet) for n in config.nodes] == ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]


def test_topology_is_stable_and_rejects_bad_nodes():
    args = ["lab", "topology", "--node", "a=10.0.0.1", "--node", "b=10.0.0.2"]
    assert run_cli(*args, check=True, timeout=300).stdout == run_cli(*args, check=True, timeout=300).stdout
    p = run_cli("lab", "topology", "--node", "a=10.0.0.1", "--node", "b=not-an-ip", timeout=300)
    assert p.returncode == 2 and "nodes[1].ip: not-an-ip" in p.stderr
    p = run_cli("lab", "topology", "--node", "a", timeout=300)
    assert p.returncode == 2 and "--node[0]: a: must be NAME=IP" in p.stderr
