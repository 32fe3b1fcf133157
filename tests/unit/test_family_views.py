"""`plan`, `status`, `trace` and the metrics show both address families: the pure parts.

The real ofproto/trace of IPv6 packets is in tests/sandbox/test_trace_status_ipv6.py.
"""
from __future__ import annotations

import json
from ipaddress import ip_address, ip_network

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ovs_mesh.agent.metrics import AgentMetrics
from ovs_mesh.cli import main as cli
from ovs_mesh.cli import packet_trace as pt
from ovs_mesh.cli.status import render, subnets_of
from ovs_mesh.health.record import peer_view
from ovs_mesh.host.model import Address, HostChange, Sysctl
from ovs_mesh.ovs.model import Flow, FlowChange, PortChange
from ovs_mesh.reconcile.families import change_family, count, family_stats, match_family
from ovs_mesh.reconcile.plan import Plan, Result
from topology.errors import InputError
from topology.model import Cluster, Config, Local, Node


def node(i: int, families=("ipv4", "ipv6"), underlay="ipv4") -> Node:
    ip = ip_address(f"192.168.56.{10 + i}" if underlay == "ipv4" else f"fd00:56::{10 + i:x}")
    return Node(f"node-{i}", ip, ip_network(f"10.244.{i}.0/24") if "ipv4" in families else None,
                ip_network(f"fd00:10:244:{i:x}::/64") if "ipv6" in families else None)


def config(families=("ipv4", "ipv6"), underlay="ipv4", mode="flow", n=3) -> Config:
    cluster = Cluster(cidr=ip_network("10.244.0.0/16") if "ipv4" in families else None,
                      cidr6=ip_network("fd00:10:244::/56") if "ipv6" in families else None, mode=mode)
    return Config(cluster, Local(node="node-1", datapath="dummy", host=False),
                  tuple(node(i, families, underlay) for i in range(1, n + 1)))


# -- which family a flow or change is about ------------------------------------------------

@pytest.mark.parametrize("match, family", [
    ("ip,nw_dst=10.244.2.0/24", "ipv4"),
    ("arp,in_port=LOCAL,arp_spa=10.244.1.0/24", "ipv4"),
    ("ip,tun_src=192.168.56.12,nw_src=10.244.2.0/24", "ipv4"),
    ("ipv6,ipv6_dst=fd00:10:244:2::/64", "ipv6"),
    ("icmp6,icmp_type=135,icmp_code=0,nd_target=fd00:10:244:2::/64", "ipv6"),
    ("ipv6,tun_ipv6_src=fd00:56::12,ipv6_src=fd00:10:244:2::/64", "ipv6"),
    ("ip,tun_ipv6_src=fd00:56::12,nw_src=10.244.2.0/24", "ipv4"),   # IPv4 pods over an IPv6 underlay
    ("tun_id=0,in_port=10", None),
    ("in_port=LOCAL", None),
    ("", None),
])
def test_match_family(match, family):
    assert match_family(match) == family


def test_change_family():
    flow6 = Flow(10, 100, "ipv6,ipv6_dst=fd00:10:244:2::/64", "output:10")
    assert change_family(FlowChange("add", str(flow6), new=flow6)) == "ipv6"
    assert change_family(FlowChange("delete", "x", old=Flow(30, 100, "ip,nw_dst=10.244.1.0/24", "LOCAL"))) == "ipv4"
    assert change_family(HostChange("add", new=Address("fd00:10:244:1::1/64", "kbr0"))) == "ipv6"
    assert change_family(HostChange("add", new=Address("10.244.1.1/24", "kbr0"))) == "ipv4"
    assert change_family(HostChange("add", new=Sysctl("net.ipv6.conf.all.forwarding", "1"))) == "ipv6"
    assert change_family(HostChange("add", new=Sysctl("net.ipv4.ip_forward", "1"))) == "ipv4"
    assert change_family(PortChange("add", "obr0-vxlan")) is None
    assert count(["ipv4", None, "ipv6", "ipv6"]) == {"ipv4": 1, "ipv6": 2}


# -- plan / apply output -----------------------------------------------------------------

def _result(*flows: Flow) -> Result:
    return Result(Plan(flows=tuple(FlowChange("add", str(f), new=f) for f in flows)), [])


FLOWS = (Flow(10, 100, "ip,nw_dst=10.244.2.0/24", "output:10"),
         Flow(10, 100, "ipv6,ipv6_dst=fd00:10:244:2::/64", "output:10"),
         Flow(10, 100, "icmp6,icmp_type=135,icmp_code=0,nd_target=fd00:10:244:2::/64", "output:10"),
         Flow(10, 0, "", "drop"))


def test_plan_text_counts_changes_per_family_in_a_cluster_with_ipv6(capsys):
    cli.print_result(_result(*FLOWS), False, "plan", config())
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "plan: 4 changes (ipv4 1, ipv6 2)"
    assert "  + flow table=10,priority=100,ipv6,ipv6_dst=fd00:10:244:2::/64 actions=output:10" in out


def test_plan_text_of_an_ipv4_cluster_is_unchanged(capsys):
    cli.print_result(_result(FLOWS[0]), False, "plan", config(("ipv4",)))
    assert capsys.readouterr().out.splitlines()[0] == "plan: 1 changes"
    cli.print_result(_result(), False, "plan", config(("ipv4",)))
    assert capsys.readouterr().out == "plan: no changes (converged)\n"


def test_plan_json_has_the_family_of_each_change(capsys):
    cli.print_result(_result(*FLOWS), True, "plan", config(("ipv6",), underlay="ipv6"))
    d = json.loads(capsys.readouterr().out)
    assert [c.get("family") for c in d["changes"]] == ["ipv4", "ipv6", "ipv6", None]
    assert d["families"] == ["ipv6"] and d["underlay_family"] == "ipv6"


# -- status ------------------------------------------------------------------------------

def _status(cfg: Config) -> dict:
    local = cfg.local_node
    peers = [{"name": p.name, "ip": str(p.ip), **subnets_of(p), "port": "obr0-vxlan", "ofport": 10,
              "health": "up", "error": None, "bfd": None, "probe": peer_view(None, p.name, 0.0)}
             for p in cfg.nodes if p.name != local.name]
    return {"node": local.name, "tunnel": "vxlan", "mode": "flow", "families": list(cfg.cluster.families),
            "underlay_family": local.underlay_family, "ip": str(local.ip), **subnets_of(local),
            "peers": peers, "flows": 30, "converged": True, "pending_changes": 0, "problems": [],
            "last_reconcile": None, "health": {"probing": False, "summary": ""}}


def test_status_shows_both_families_and_the_underlay():
    cfg = config(underlay="ipv6")
    d = _status(cfg)
    assert d["subnet"] == "10.244.1.0/24" and d["subnet6"] == "fd00:10:244:1::/64"
    assert d["peers"][0]["subnets"] == ["10.244.2.0/24", "fd00:10:244:2::/64"]
    text = render(d)
    assert "pods ipv4 + ipv6: 10.244.1.0/24, fd00:10:244:1::/64; underlay ipv6: fd00:56::b" in text
    row = next(line for line in text.splitlines() if line.startswith("node-3 "))
    assert row.split() == ["node-3", "fd00:56::d", "10.244.3.0/24,fd00:10:244:3::/64", "obr0-vxlan", "10", "up",
                           "unknown", "-", "-", "-"]


def test_status_of_an_ipv6_only_node():
    d = _status(config(("ipv6",), underlay="ipv6"))
    assert d["subnet"] is None and d["subnets"] == ["fd00:10:244:1::/64"]
    assert json.loads(json.dumps(d))["peers"][1]["subnet6"] == "fd00:10:244:3::/64"
    assert "pods ipv6: fd00:10:244:1::/64; underlay ipv6: fd00:56::b" in render(d)


# -- metrics -----------------------------------------------------------------------------

def _samples(m: AgentMetrics) -> dict:
    out = {}
    for fam in text_string_to_metric_families(m.render().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_per_family():
    cfg = config(mode="flow")
    flows = FLOWS + (Flow(10, 100, "ip,nw_dst=10.244.3.0/24", "output:10"),
                     Flow(10, 100, "ipv6,ipv6_dst=fd00:10:244:3::/64", "output:10"))
    m = AgentMetrics(60)
    m.record(True, 0.01, peers=2, flows=len(flows), families=family_stats(cfg, flows))
    s = _samples(m)
    assert s[("ovs_mesh_peers_with_subnet", (("family", "ipv4"),))] == 2
    assert s[("ovs_mesh_peers_with_subnet", (("family", "ipv6"),))] == 2
    assert s[("ovs_mesh_overlay_routes", (("family", "ipv4"),))] == 2
    assert s[("ovs_mesh_overlay_routes", (("family", "ipv6"),))] == 2
    assert s[("ovs_mesh_family_flows", (("family", "ipv6"),))] == 3
    assert s[("ovs_mesh_pod_subnet_info", (("family", "ipv6"), ("gateway", "fd00:10:244:1::1"),
                                           ("subnet", "fd00:10:244:1::/64")))] == 1
    assert s[("ovs_mesh_pod_subnet_info", (("family", "ipv4"), ("gateway", "10.244.1.1"),
                                           ("subnet", "10.244.1.0/24")))] == 1
    assert s[("ovs_mesh_underlay_info", (("address", "192.168.56.11"), ("family", "ipv4")))] == 1


def test_metrics_families_computed_when_scraped():
    """The agent hands a function: a pass does not count flows, a scrape does."""
    calls = []

    def stats():
        calls.append(1)
        return family_stats(config(), FLOWS)

    m = AgentMetrics(60)
    m.record(True, 0.01, families=stats)
    assert not calls
    assert _samples(m)[("ovs_mesh_family_flows", (("family", "ipv6"),))] == 2 and len(calls) == 1


def test_metrics_of_an_ipv4_cluster_report_zero_ipv6():
    cfg = config(("ipv4",))
    m = AgentMetrics(60)
    m.record(True, 0.01, families=family_stats(cfg, FLOWS[:1]))
    s = _samples(m)
    assert s[("ovs_mesh_peers_with_subnet", (("family", "ipv6"),))] == 0
    assert s[("ovs_mesh_peers_with_subnet", (("family", "ipv4"),))] == 2
    assert not any(k[0] == "ovs_mesh_pod_subnet_info" and ("family", "ipv6") in k[1] for k in s)


# -- trace ---------------------------------------------------------------------------------

def test_trace_flow_ipv6_from_local_and_from_a_peer():
    cfg = config(underlay="ipv6")
    a, b = ip_address("fd00:10:244:1::5"), ip_address("fd00:10:244:2::9")
    assert pt.trace_flow(cfg, a, b, "icmp") == "in_port=LOCAL,icmp6,ipv6_src=fd00:10:244:1::5,ipv6_dst=fd00:10:244:2::9"
    assert pt.trace_flow(cfg, b, a, "tcp") == ("in_port=10,tun_id=0,tun_ipv6_src=fd00:56::c,tun_ipv6_dst=fd00:56::b,"
                                              "tcp6,ipv6_src=fd00:10:244:2::9,ipv6_dst=fd00:10:244:1::5")
    assert pt.trace_flow(cfg, a, b, "nd") == ("in_port=LOCAL,icmp6,icmpv6_type=135,ipv6_src=fd00:10:244:1::5,"
                                             "ipv6_dst=ff02::1:ff00:9,nd_target=fd00:10:244:2::9")
    v4 = config(underlay="ipv4")   # IPv6 pods over an IPv4 underlay: tun_src/tun_dst
    assert pt.trace_flow(v4, b, a, "ip").startswith(
        "in_port=10,tun_id=0,tun_src=192.168.56.12,tun_dst=192.168.56.11,ipv6,")
    port = config(mode="port")
    assert pt.trace_flow(port, b, a, "udp", {pt.peer_port_name("vxlan", "node-2"): 101}).startswith("in_port=101,udp6,")
    with pytest.raises(LookupError, match="no tunnel port to node-2"):
        pt.trace_flow(port, b, a, "udp", {})


def test_trace_default_source_is_the_gateway_of_the_family():
    cfg = config()
    assert pt.default_source(cfg, ip_address("fd00:10:244:2::5")) == ip_address("fd00:10:244:1::1")
    assert pt.default_source(cfg, ip_address("10.244.2.5")) == ip_address("10.244.1.1")
    with pytest.raises(InputError, match=r"DST: 10\.244\.2\.5: an IPv4 address, but node node-1 has no IPv4 pod"):
        pt.default_source(config(("ipv6",)), ip_address("10.244.2.5"))


@pytest.mark.parametrize("src, dst, proto, text", [
    ("10.244.1.5", "fd00:10:244:2::5", "icmp", "DST: fd00:10:244:2::5: an IPv6 address, but SRC 10.244.1.5 is IPv4"),
    ("fd00:10:244:1::5", "fd00:10:244:2::5", "arp", "--proto: arp: ARP is IPv4: use nd"),
    ("10.244.1.5", "10.244.2.5", "nd", "--proto: nd: neighbour discovery is IPv6"),
    ("fd00:10:245::5", "fd00:10:244:2::5", "icmp", "SRC: fd00:10:245::5: not in any node's subnet"),
])
def test_trace_bad_input_names_the_field_and_value(src, dst, proto, text):
    with pytest.raises(InputError) as e:
        pt.trace_flow(config(), ip_address(src), ip_address(dst), proto)
    assert text in "\n".join(e.value.errors)
    with pytest.raises(InputError, match="DST: fd00::zz: not an IPv4 or IPv6 address"):
        pt.parse_addr("DST", "fd00::zz")


TRACE_OUT = """Flow: icmp6,in_port=LOCAL,ipv6_src=fd00:10:244:1::5,ipv6_dst=fd00:10:244:2::9

bridge("obr0")
--------------
 0. ipv6,in_port=LOCAL,ipv6_src=fd00:10:244:1::/64, priority 100, cookie 0x6f76736d00000001
    goto_table:10
10. ipv6,ipv6_dst=fd00:10:244:2::/64, priority 100, cookie 0x6f76736d00000001
    set_field:0->tun_id
    set_field:fd00:56::c->tun_ipv6_dst
    output:10
     -> output to native tunnel

bridge("br-phy")
----------------
 0. priority 0
    NORMAL

Final flow: unchanged
Datapath actions: tnl_push(...)
"""


def test_trace_summary():
    cfg = config(underlay="ipv6")
    assert pt.summarize(cfg, TRACE_OUT) == "result: tunnel to node-2, tun_ipv6_dst=fd00:56::c"
    dropped = (TRACE_OUT.split("10. ")[0]
               + "10. priority 0, cookie 0x6f76736d00000001\n    drop\n\nDatapath actions: drop\n")
    assert pt.summarize(cfg, dropped) == "result: dropped in table 10"
    local = TRACE_OUT.split("10. ")[0] + "30. ipv6,ipv6_dst=fd00:10:244:1::/64, priority 100\n    LOCAL\n\n"
    assert pt.summarize(cfg, local) == "result: delivered to this node (LOCAL, kbr0)"
    port = config(mode="port", underlay="ipv6")
    name = pt.peer_port_name("vxlan", "node-3")
    out = TRACE_OUT.replace("    set_field:0->tun_id\n    set_field:fd00:56::c->tun_ipv6_dst\n    output:10",
                            "    output:102")
    assert pt.summarize(port, out, {name: 102}) == (f"result: tunnel to node-3 through port {name} (ofport 102, "
                                                    "remote_ip fd00:56::d)")
