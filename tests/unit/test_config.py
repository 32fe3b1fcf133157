"""Config validation: every rejected input names the field and the value."""
import copy

import pytest

from ovs_mesh.config.file import load_yaml
from tests.helpers import base_config
from topology.config import ConfigError, parse_config


def errors_of(data, **kw):
    with pytest.raises(ConfigError) as e:
        parse_config(data, **kw)
    return e.value.errors


def test_defaults_and_valid_config():
    c = parse_config(base_config())
    assert str(c.cluster.cidr) == "10.244.0.0/16"
    assert c.cluster.tunnel == "vxlan" and c.cluster.mode == "flow" and c.cluster.vxlan_port == 4789
    assert [n.name for n in c.nodes] == ["node-1", "node-2", "node-3"]
    assert c.local_node.gateway.exploded == "10.244.1.1"
    assert c.cluster.pod_mtu(1500) == 1450
    assert parse_config(base_config(tunnel="gre")).cluster.pod_mtu(1500) == 1458


def mutate(fn):
    d = base_config()
    fn(d)
    return d


# (description, mutation, expected substrings: field and value)
BAD = [
    ("unknown top key", lambda d: d.update(bogus=1), ["bogus", "unknown key"]),
    ("unknown cluster key", lambda d: d["cluster"].update(tunel="gre"), ["cluster.tunel", "gre", "unknown key"]),
    ("unknown node key", lambda d: d["nodes"][0].update(addr="x"), ["nodes[0].addr", "unknown key"]),
    ("bad cidr", lambda d: d["cluster"].update(cidr="10.244.0.0/33"), ["cluster.cidr", "10.244.0.0/33"]),
    ("non-canonical cidr", lambda d: d["cluster"].update(cidr="10.244.1.5/16"), ["cluster.cidr", "10.244.1.5/16", "not canonical"]),
    ("non-canonical subnet", lambda d: d["nodes"][1].update(subnet="10.244.1.5/24"), ["nodes[1].subnet", "10.244.1.5/24", "not canonical"]),
    ("subnet outside", lambda d: d["nodes"][2].update(subnet="10.245.0.0/24"), ["nodes[2].subnet", "10.245.0.0/24", "outside cluster.cidr 10.244.0.0/16"]),
    ("subnet wrong size", lambda d: d["nodes"][1].update(subnet="10.244.2.0/25"), ["nodes[1].subnet", "10.244.2.0/25", "wrong size"]),
    ("subnet overlap", lambda d: d["nodes"][2].update(subnet="10.244.2.0/24"), ["nodes[2].subnet", "10.244.2.0/24", "overlaps nodes[1]"]),
    ("duplicate name", lambda d: d["nodes"][2].update(name="node-2"), ["nodes[2].name", "node-2", "duplicate"]),
    ("duplicate ip", lambda d: d["nodes"][2].update(ip="192.168.56.12"), ["nodes[2].ip", "192.168.56.12", "duplicate"]),
    ("ip not ipv4", lambda d: d["nodes"][0].update(ip="fe80::1"), ["nodes[0].ip", "fe80::1"]),
    ("ip garbage", lambda d: d["nodes"][0].update(ip="node1"), ["nodes[0].ip", "node1", "not an IPv4 address"]),
    ("ip multicast", lambda d: d["nodes"][0].update(ip="224.0.0.5"), ["nodes[0].ip", "224.0.0.5", "multicast"]),
    ("ip loopback", lambda d: d["nodes"][0].update(ip="127.0.0.1"), ["nodes[0].ip", "127.0.0.1", "loopback"]),
    ("ip broadcast", lambda d: d["nodes"][0].update(ip="255.255.255.255"), ["nodes[0].ip", "255.255.255.255"]),
    ("ip unspecified", lambda d: d["nodes"][0].update(ip="0.0.0.0"), ["nodes[0].ip", "0.0.0.0", "unspecified"]),
    ("ip in cluster", lambda d: d["nodes"][1].update(ip="10.244.9.9"), ["nodes[1].ip", "10.244.9.9", "inside cluster.cidr"]),
    ("too many nodes", lambda d: d["cluster"].update(cidr="10.244.0.0/23"), ["nodes", "3 nodes", "more than cluster.cidr 10.244.0.0/23 holds"]),
    ("unknown tunnel", lambda d: d["cluster"].update(tunnel="ipip"), ["cluster.tunnel", "ipip", "vxlan, gre, geneve"]),
    ("unknown mode", lambda d: d["cluster"].update(mode="mesh"), ["cluster.mode", "mesh", "flow, port, stp"]),
    ("vxlan port 0", lambda d: d["cluster"].update(vxlan_port=0), ["cluster.vxlan_port", "0", "between 1 and 65535"]),
    ("vxlan port 70000", lambda d: d["cluster"].update(vxlan_port=70000), ["cluster.vxlan_port", "70000"]),
    ("vxlan port string", lambda d: d["cluster"].update(vxlan_port="x"), ["cluster.vxlan_port", "x", "integer"]),
    ("mtu too small", lambda d: d["cluster"].update(mtu=100), ["cluster.mtu", "100", "too small"]),
    ("mtu not int", lambda d: d["cluster"].update(mtu="big"), ["cluster.mtu", "big"]),
    ("local missing", lambda d: d["local"].update(node="node-9"), ["local.node", "node-9", "not in nodes"]),
    ("bad datapath", lambda d: d["local"].update(datapath="kernel"), ["local.datapath", "kernel"]),
    ("bad ovsdb", lambda d: d["local"].update(ovsdb="/var/run/db.sock"), ["local.ovsdb", "/var/run/db.sock"]),
    ("node prefix too short", lambda d: d["cluster"].update(node_prefix=16), ["cluster.node_prefix", "16"]),
    ("mesh_degree outside stp", lambda d: d["cluster"].update(mesh_degree=2), ["cluster.mesh_degree", "2", "stp"]),
    ("mesh_degree 1 splits the mesh", lambda d: d["cluster"].update(mode="stp", mesh_degree=1),
     ["cluster.mesh_degree", "1", "at least 2"]),
    ("nodes not a list", lambda d: d.update(nodes={"a": 1}), ["nodes", "must be a list"]),
    ("node missing ip", lambda d: d["nodes"][0].pop("ip"), ["nodes[0].ip", "required"]),
    ("bad node name", lambda d: d["nodes"][0].update(name="Node_1"), ["nodes[0].name", "Node_1"]),
]


@pytest.mark.parametrize("desc,fn,expect", BAD, ids=[b[0] for b in BAD])
def test_rejected_input_names_field_and_value(desc, fn, expect):
    errs = errors_of(mutate(fn))
    text = "\n".join(errs)
    for part in expect:
        assert part in text, f"{desc}: {part!r} not in {errs}"


def test_all_errors_reported_at_once():
    d = base_config()
    d["cluster"]["tunnel"] = "ipip"
    d["nodes"][1]["subnet"] = "10.245.0.0/24"
    d["nodes"][2]["ip"] = "224.0.0.1"
    errs = errors_of(d)
    assert len(errs) == 3, errs


def test_malformed_yaml():
    with pytest.raises(ConfigError) as e:
        load_yaml("cluster: [1, 2\nnodes: x", "c.yaml")
    assert "c.yaml" in str(e.value) and "malformed YAML" in str(e.value)


def test_duplicate_yaml_key_rejected():
    with pytest.raises(ConfigError) as e:
        load_yaml("cluster: {}\ncluster: {}\n", "c.yaml")
    assert "malformed YAML" in str(e.value)


def test_cli_override_of_local_node():
    c = parse_config(base_config(), {"node": "node-2"})
    assert c.local_node.name == "node-2"


def test_config_is_not_mutated():
    d = base_config()
    before = copy.deepcopy(d)
    parse_config(d)
    assert d == before
