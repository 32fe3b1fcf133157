"""The lab's records without a machine: a node survives the state file, pods get the CNI config
a runtime would pass (from the conflist ovs-mesh renders), and bad `lab up` parameters are named."""
import json
from ipaddress import IPv4Network

from ovs_mesh.host import cni
from ovs_mesh.lab import build, nodes, pods
from ovs_mesh.lab import record as state


def test_node_round_trips_through_the_state_file(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "BASE_DIR", str(tmp_path))
    st = state.LabState("t1")
    n = nodes.new_node(st, 2)
    st.nodes.append(n)
    st.save()
    with open(st.path) as f:
        assert json.load(f)["nodes"] == [{"name": "node-2", "k": 2, "ip": "192.168.213.12", "ns": "t1-n2",
                                         "dir": str(tmp_path / "t1" / "node-2"),
                                         "cni_conf": str(tmp_path / "t1" / "node-2" / "cni" / "10-ovs-mesh.conflist")}]
    back = state.LabState.load("t1").node("node-2")
    assert back == n and back.rundir == str(tmp_path / "t1" / "node-2" / "ovs")
    assert nodes.local_section(back)["ovsdb"] == f"unix:{back.rundir}/db.sock"
    remote = state.Node.from_dict({**n.to_dict(), "via": ["ssh", "vm-2"], "python": "/opt/py", "extra": 1})
    assert (remote.via, remote.python) == (["ssh", "vm-2"], "/opt/py")


def test_pod_plugin_configs_come_from_the_written_conflist(tmp_path):
    n = state.Node(name="node-1", k=1, ip="192.168.213.11", ns="t1-n1", dir=str(tmp_path),
                   cni_conf=str(tmp_path / "10-ovs-mesh.conflist"))
    text = cni.render(IPv4Network("10.244.1.0/24"), 1450)
    (tmp_path / "10-ovs-mesh.conflist").write_text(text)
    bridge, guard = pods.plugin_configs(n)
    assert bridge == {**cni.plugin_config(text), "ipam": {**cni.plugin_config(text)["ipam"], "dataDir": n.ipam_dir}}
    assert guard == cni.plugin_config(text, 1) == {"cniVersion": "1.0.0", "name": "ovs-mesh", "type": "ovs-mesh-guard",
                                                   "bridge": "kbr0"}
    # A node that is the machine itself (a VM) keeps host-local's default pool, as its runtime does.
    itself = state.Node(name="node-1", k=1, ip="192.168.56.11", ns=None, dir=str(tmp_path),
                        cni_conf=str(tmp_path / "10-ovs-mesh.conflist"))
    assert pods.plugin_configs(itself)[0] == cni.plugin_config(text)


def test_bad_up_parameters_are_all_named():
    assert build.check_params("Bad_Name", 0, 51, -1) == [
        "--name: Bad_Name: must be 1-6 lowercase letters/digits starting with a letter",
        "--nodes: 0: must be between 1 and 200",
        "--pods-per-node: 51: must be between 0 and 50",
        "--mesh-degree: -1: must be >= 0"]
    assert build.check_params("oml", 3, 2, 0) == []
    assert build.check_params("oml", 4, 1, 1) == [
        "--mesh-degree: 1: must be 0 (a full mesh) or at least 2 (one peer per node splits the mesh into pairs)"]
