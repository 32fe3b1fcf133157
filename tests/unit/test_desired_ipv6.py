"""The IPv6 pipeline as pure desired state: per peer out by ipv6_dst and by the
target of a neighbour solicitation, in only from that peer with its subnet6 as source;
tun_ipv6_dst / tun_ipv6_src over an IPv6 underlay; IPv4 flows unchanged."""
import pytest

from ovs_mesh.ovs.desired import build, peer_port_name
from ovs_mesh.ovs.model import Flow
from tests.helpers import base_config, base_config_v6
from topology.config import parse_config

OUT2 = "set_field:0->tun_id,set_field:{}->{},output:10"


def flows(data, pod_mtu=1430):
    return build(parse_config(data), pod_mtu).flows


def six(fs):
    """The flows of IPv6 pod traffic (matches on the inner IPv6 packet)."""
    return {f for f in fs if f.match.startswith(("ipv6,", "icmp6,"))}


@pytest.mark.parametrize("family,underlay", [("dual", "ipv4"), ("ipv6", "ipv6"), ("dual", "ipv6"),
                                             ("ipv6", "ipv4")])
def test_flow_mode_ipv6_flows(family, underlay):
    fs = flows(base_config_v6(3, family=family, underlay=underlay))
    ip2 = "fd00:56::12" if underlay == "ipv6" else "192.168.56.12"
    dst, src = ("tun_ipv6_dst", "tun_ipv6_src") if underlay == "ipv6" else ("tun_dst", "tun_src")
    out = OUT2.format(ip2, dst)
    expect = {
        Flow(0, 100, "ipv6,in_port=LOCAL,ipv6_src=fd00:10:244:1::/64", "goto_table:10"),
        Flow(0, 100, "icmp6,in_port=LOCAL,ipv6_src=fe80::/10,icmp_type=135,icmp_code=0",
             "set_field:fd00:10:244:1::1->ipv6_src,goto_table:10"),
        Flow(10, 100, "ipv6,ipv6_dst=fd00:10:244:2::/64", out),
        Flow(10, 110, "icmp6,icmp_type=135,icmp_code=0,nd_target=fd00:10:244:2::/64", out),
        Flow(20, 100, f"ipv6,{src}={ip2},ipv6_src=fd00:10:244:2::/64", "goto_table:30"),
        Flow(30, 100, "ipv6,ipv6_dst=fd00:10:244:1::/64", "LOCAL"),
        Flow(30, 100, "icmp6,icmp_type=135,icmp_code=0,nd_target=fd00:10:244:1::/64", "LOCAL"),
    }
    assert expect <= fs
    assert len(six(fs)) == 4 + 3 * 2          # 4 local, 3 per peer
    v4 = {f for f in fs if "nw_" in f.match or "arp" in f.match}
    assert bool(v4) == (family == "dual")


@pytest.mark.parametrize("family,underlay,mode,tunnel", [
    ("dual", "ipv4", "flow", "vxlan"), ("ipv6", "ipv6", "flow", "geneve"), ("dual", "ipv4", "port", "gre"),
    ("ipv6", "ipv6", "port", "geneve")])
def test_every_icmpv6_match_names_type_and_code(family, underlay, mode, tunnel):
    """The kernel datapath caches a flow that names the ICMPv6 type but not the code without its
    ND fields: OVS hands the kernel a megaflow mask with nd_target only when both are exact.
    Such a cached flow then sent every later solicitation from the same source where the first
    one went (to one peer, or dropped), whatever its target: IPv6 pods on the VMs were unreachable.
    So every ICMPv6 match (all of them are neighbour solicitations) names the code too."""
    fs = flows(base_config_v6(3, family=family, underlay=underlay, mode=mode, tunnel=tunnel))
    icmp = [f for f in fs if f.match.startswith("icmp6,") or "nd_target=" in f.match]
    assert len(icmp) == 2 + 2, sorted(map(str, fs))   # the local two, one per peer
    for f in icmp:
        fields = f.match.split(",")
        assert "icmp_type=135" in fields and "icmp_code=0" in fields, f


def test_ipv4_flows_of_a_dual_cluster_are_those_of_the_ipv4_cluster():
    for mode in ("flow", "port"):
        dual = flows(base_config_v6(3, mode=mode))
        v4 = flows(base_config(3, mode=mode))
        assert dual - six(dual) == v4, mode


def test_port_mode_ipv6_over_ipv6_underlay():
    data = base_config_v6(3, family="ipv6", mode="port", tunnel="geneve")
    state = build(parse_config(data), 1430)
    ports = {p.name: p for p in state.ports}
    port = ports[peer_port_name("geneve", "node-2")]
    assert dict(port.options)["remote_ip"] == "fd00:56::12"
    of = port.ofport_request
    assert Flow(10, 110, "icmp6,icmp_type=135,icmp_code=0,nd_target=fd00:10:244:2::/64", f"output:{of}") in state.flows
    assert Flow(20, 100, f"ipv6,in_port={of},ipv6_src=fd00:10:244:2::/64", "goto_table:30") in state.flows


def test_stp_mode_unchanged_by_ipv6():
    state = build(parse_config(base_config_v6(3, family="ipv6", mode="stp")), 1430)
    assert state.flows == {Flow(0, 0, "", "NORMAL")}
    assert {dict(p.options)["remote_ip"] for p in state.ports} == {"fd00:56::12", "fd00:56::13"}


def test_peer_without_subnet6_gets_no_ipv6_flows():
    data = base_config_v6(3)
    data["nodes"][2]["subnet"] = "10.244.3.0/24"      # allocate has not run for IPv6 yet
    fs = flows(data)
    assert not any("fd00:10:244:3::" in f.match for f in fs)
    assert any("10.244.3.0/24" in f.match for f in fs)


def test_agent_incremental_pass_with_ipv6_peers(tmp_path):
    """inc's per-peer parts carry the IPv6 flows: a peer that gains its subnet6, and a new
    dual-stack peer, are incremental passes that end where a full build does."""
    import dataclasses
    from ipaddress import IPv4Address, IPv4Network, IPv6Network

    from ovs_mesh.agent.loop import Agent
    from ovs_mesh.agent.schedule import Kick, Pass, Reason
    from ovs_mesh.agent.sdnotify import SdNotify
    from ovs_mesh.ovs import desired
    from tests.helpers import installed_flows
    from tests.unit.fakes import FakeFlows, FakeOvsdb, FakeSource, session
    from topology.model import Node

    for mode in ("flow", "port"):
        data = base_config_v6(3, mode=mode)
        data["nodes"][2]["subnet"] = "10.244.3.0/24"          # node-3: no subnet6 yet
        data["local"].update(ovsdb="unix:/nonexistent/db.sock", ovs_rundir=str(tmp_path))
        source, ovsdb, fl = FakeSource(parse_config(data)), FakeOvsdb(), FakeFlows()
        source.notify = lambda: None
        a = Agent(source, resync=3600, notifier=SdNotify(environ={}), session=session(ovsdb, fl), watch=False)
        assert a.reconcile_once(Pass((Kick(Reason.START),)))
        cfg = source.cfg
        n3 = dataclasses.replace(cfg.node("node-3"), subnet6=IPv6Network("fd00:10:244:3::/64"))
        n4 = Node("node-4", IPv4Address("192.168.56.14"), IPv4Network("10.244.4.0/24"),
                  IPv6Network("fd00:10:244:4::/64"))
        source.cfg = dataclasses.replace(cfg, nodes=tuple(sorted([*(n for n in cfg.nodes if n.name != "node-3"),
                                                                  n3, n4])))
        assert a.reconcile_once(Pass((Kick(Reason.SOURCE),)))
        assert a.passes == {"full": 1, "incremental": 1}, mode
        want = desired.build(source.cfg, source.cfg.cluster.pod_mtu(1500), ovsdb.ofports)
        assert installed_flows(a.installed) == want.flows == frozenset(fl.flows)
        assert any("fd00:10:244:3::/64" in f.match for f in fl.flows)
