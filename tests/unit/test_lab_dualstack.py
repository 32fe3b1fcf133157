"""The lab's dual-stack plumbing without root: topology generation in the shared YAML
shape, node addresses per underlay family, the check's report and its rendering."""
from ovs_mesh.lab.build import check_params, default_underlay
from ovs_mesh.lab.check import _cells, families_of, render
from ovs_mesh.lab.nodes import underlay_ip
from ovs_mesh.lab.pods import address_of
from ovs_mesh.lab.record import Node
from ovs_mesh.lab.topology import allocate_all, cluster_of, lab_cidr, make_topology, subnet_value
from tests.helpers import run_cli
from topology.config import parse_config
from topology.nodes import node_subnets_of

V4, V6 = [("node-1", "192.168.213.11"), ("node-2", "192.168.213.12")], \
    [("node-1", "fd00:56::11"), ("node-2", "fd00:56::12")]


def test_ipv4_topology_is_as_before():
    doc = make_topology(V4, cidr=lab_cidr("ipv4"))
    assert "node_prefix_ipv6" not in doc["cluster"] and doc["cluster"]["cidr"] == "10.244.0.0/16"
    assert [e["subnet"] for e in doc["nodes"]] == ["10.244.0.0/24", "10.244.1.0/24"]


def test_dual_topology_over_an_ipv4_underlay():
    doc = make_topology(V4, cidr=lab_cidr("dual"))
    assert doc["cluster"]["cidr"] == "10.244.0.0/16,fd00:10:244::/56"
    assert doc["cluster"]["node_prefix_ipv6"] == 64
    assert [e["subnet"] for e in doc["nodes"]] == [["10.244.0.0/24", "fd00:10:244::/64"],
                                                   ["10.244.1.0/24", "fd00:10:244:1::/64"]]
    config = parse_config(doc, require_local=False)
    assert config.cluster.families == ("ipv4", "ipv6")
    assert [str(n.subnet6) for n in config.nodes] == ["fd00:10:244::/64", "fd00:10:244:1::/64"]


def test_ipv6_only_topology_over_an_ipv6_underlay():
    doc = make_topology(V6, tunnel="geneve", mode="port", cidr=lab_cidr("ipv6"))
    assert [e["subnet"] for e in doc["nodes"]] == ["fd00:10:244::/64", "fd00:10:244:1::/64"]
    c = cluster_of(doc)
    assert c.cidr is None and str(c.cidr6) == "fd00:10:244::/56"
    assert {n.underlay_family for n in parse_config(doc, require_local=False).nodes} == {"ipv6"}


def test_added_node_gets_the_lowest_free_subnet_of_each_family():
    doc = make_topology(V4, cidr=lab_cidr("dual"))
    doc["nodes"][0]["subnet"] = None          # node-1 left: its subnets are free again
    taken = [node_subnets_of(e["subnet"]) for e in doc["nodes"][1:]]
    new = allocate_all(cluster_of({**doc, "nodes": doc["nodes"][1:]}), taken + [{}])[-1]
    assert subnet_value(new) == ["10.244.0.0/24", "fd00:10:244::/64"]
    only4 = allocate_all(cluster_of(doc), [node_subnets_of("10.244.7.0/24")])    # gets its IPv6 one
    assert subnet_value(only4[0]) == ["10.244.7.0/24", "fd00:10:244::/64"]


def test_node_addresses_and_defaults():
    assert underlay_ip("ipv4", 1) == "192.168.213.11" and underlay_ip("ipv6", 2) == "fd00:56::12"
    assert [default_underlay(f) for f in ("ipv4", "ipv6", "dual")] == ["ipv4", "ipv6", "ipv4"]
    assert check_params("v6l1", 2, 1, 0, "ipv5", "ipx") == [
        "--ip-family: ipv5: must be one of ipv4, ipv6, dual", "--underlay: ipx: must be ipv4 or ipv6"]


def test_lab_up_rejects_bad_families_before_building():
    p = run_cli("lab", "up", "--name", "v6lx", "--ip-family", "ipv5", timeout=120)
    assert p.returncode == 2 and "--ip-family" in p.stderr and "ipv5" in p.stderr
    p = run_cli("lab", "up", "--name", "v6lx", "--underlay", "ipv7", timeout=120)
    assert p.returncode == 2 and "--underlay" in p.stderr and "ipv7" in p.stderr


POD = {"name": "node-1/p1", "node": "node-1", "ns": "x-n1p1", "ip": "10.244.0.2",
       "ips": ["10.244.0.2", "fd00:10:244::2"], "k": 1, "j": 1}
DST = {"name": "node-2/p1", "node": "node-2", "ns": "x-n2p1", "ip": "10.244.1.2",
       "ips": ["10.244.1.2", "fd00:10:244:1::2"], "k": 2, "j": 1}


def test_report_cells_name_their_family_and_prove_no_nat():
    assert families_of([POD, DST]) == ["ipv4", "ipv6"] and families_of([{"ip": "fd00::2"}]) == ["ipv6"]
    assert address_of(POD, "ipv6") == "fd00:10:244::2" and address_of({"ip": "10.0.0.1"}, "ipv6") is None
    report = {"pod_to_pod": [], "node_to_pod": [], "tcp": []}
    job = {"targets": [{"ip": "fd00:10:244:1::2", "name": DST["name"], "expect": True, "df": True}], "tcp": []}
    seen = {"ping": True, "source_seen": "fd00:10:244::2", "df": True, "df_size": 1402, "over_refused": True}
    _cells("pod", POD, "ipv6", job, {"targets": [seen]}, report)
    _cells("pod", POD, "ipv6", job, {"targets": [{**seen, "source_seen": "fd00:10:244::1"}]}, report)
    _cells("pod", POD, "ipv6", job, {"targets": [{**seen, "over_refused": False}]}, report)
    assert [c["ok"] for c in report["pod_to_pod"]] == [True, False, False]   # NAT, fragmentation
    assert {c["family"] for c in report["pod_to_pod"]} == {"ipv6"}


def test_render_shows_each_family():
    cell = {"src": POD["name"], "dst": DST["name"], "expect": True, "ping": True, "ok": True}
    report = {"lab": "x", "params": {"nodes": 2, "tunnel": "vxlan", "mode": "flow", "underlay": "ipv4"},
              "pods": [POD, DST], "nodes": [{"name": "node-1", "ip": "192.168.213.11"}],
              "pod_to_pod": [{**cell, "family": "ipv4", "df_size": 1422}, {**cell, "family": "ipv6", "df_size": 1402}],
              "node_to_pod": [], "tcp": [],
              "families": {f: {"checks": 1, "failed": 0, "ok": True, "pod_to_pod": 1, "node_to_pod": 0,
                               "tcp_transfers": 0, "seconds": 1.0, "df_size": d}
                           for f, d in (("ipv4", 1422), ("ipv6", 1402))},
              "summary": {"checks": 2, "failed": 0, "ok": True, "pod_to_pod": 2, "node_to_pod": 0,
                          "tcp_transfers": 0, "seconds": 1.0}}
    text = render(report)
    assert "IPv4 pod -> pod" in text and "IPv6 pod -> pod" in text and "fd00:10:244::2" in text
    assert "summary IPv6: 1/1 checks passed" in text and "unfragmented 1402-byte pings" in text
    assert "at 1450 failed" in text and text.endswith("PASS")
    assert Node.from_dict({"name": "n", "k": 1, "ip": "fd00:56::11", "ns": None, "dir": "/", "cni_conf": ""})
