"""Desired state and diff: pure, exhaustive."""
import dataclasses

from ovs_mesh.ovs.desired import build, peer_port_name
from ovs_mesh.ovs.model import OWNER_KEY, Flow, OvsState
from ovs_mesh.ovs.openflow import bundle_text, parse_dump
from ovs_mesh.reconcile.plan import diff
from tests.helpers import base_config
from topology.config import parse_config


def cfg(n=3, **kw):
    return parse_config(base_config(n, **kw))


def test_flow_mode_one_port_four_flows_per_peer():
    s = build(cfg(4), 1450)
    assert [p.name for p in s.ports] == ["obr0-vxlan"]
    port = s.ports[0]
    assert dict(port.options) == {"remote_ip": "flow", "key": "flow"}
    assert port.ofport_request == 10 and dict(port.external_ids)[OWNER_KEY] == "tunnel"
    assert s.bridge.fail_mode == "secure" and s.bridge.mtu_request == 1450 and not s.bridge.rstp_enable
    peer_flows = [f for f in s.flows if "192.168.56.12" in f.match + f.actions]
    assert len(peer_flows) == 4
    assert Flow(10, 100, "ip,nw_dst=10.244.2.0/24",
                "set_field:0->tun_id,set_field:192.168.56.12->tun_dst,output:10") in s.flows
    assert Flow(20, 100, "ip,tun_src=192.168.56.12,nw_src=10.244.2.0/24", "goto_table:30") in s.flows
    assert Flow(20, 100, "arp,tun_src=192.168.56.12,arp_spa=10.244.2.0/24", "goto_table:30") in s.flows
    assert Flow(30, 100, "ip,nw_dst=10.244.1.0/24", "LOCAL") in s.flows
    # every table ends in an explicit drop: nothing floods
    for t in (0, 10, 20, 30):
        assert Flow(t, 0, "", "drop") in s.flows


def test_port_mode_ports_per_peer_with_bfd():
    s = build(cfg(3, mode="port", tunnel="geneve"), 1450)
    names = [p.name for p in s.ports]
    assert names == sorted([peer_port_name("geneve", "node-2"), peer_port_name("geneve", "node-3")])
    assert all(len(n) <= 15 for n in names)
    for p in s.ports:
        assert dict(p.bfd) == {"enable": "true"} and p.type == "geneve" and p.ofport_request >= 100
    by_peer = {p.peer: p for p in s.ports}
    assert by_peer["node-2"].remote_ip == "192.168.56.12"
    out = by_peer["node-2"].ofport_request
    assert Flow(10, 100, "ip,nw_dst=10.244.2.0/24", f"output:{out}") in s.flows
    assert Flow(20, 100, f"ip,in_port={out},nw_src=10.244.2.0/24", "goto_table:30") in s.flows
    assert Flow(20, 100, f"arp,in_port={out},arp_spa=10.244.2.0/24", "goto_table:30") in s.flows


def test_port_names_stable_and_ofports_kept():
    c = cfg(4, mode="port")
    first = build(c, 1450)
    existing = {p.name: p.ofport_request for p in first.ports}
    # node-2 leaves: the others keep their ofports and so their flows
    c2 = dataclasses.replace(c, nodes=tuple(n for n in c.nodes if n.name != "node-2"))
    second = build(c2, 1450, existing)
    for p in second.ports:
        assert p.ofport_request == existing[p.name]
    changes = diff(second, first).changes
    assert {(ch.action, ch.kind) for ch in changes} == {("delete", "port"), ("delete", "flow")}
    assert [ch.name for ch in changes if ch.kind == "port"] == [peer_port_name("vxlan", "node-2")]


def test_stp_mode_partial_mesh_rstp_normal():
    s = build(cfg(6, mode="stp", tunnel="gre", mesh_degree=2), 1458)
    assert s.bridge.rstp_enable
    assert len(s.ports) == 2 and all(not p.bfd for p in s.ports)
    assert s.flows == frozenset({Flow(0, 0, "", "NORMAL")})


def test_vxlan_port_option():
    s = build(cfg(2, vxlan_port=8472), 1450)
    assert dict(s.ports[0].options)["dst_port"] == "8472"


def test_converged_diff_is_empty_and_ordering():
    s = build(cfg(3), 1450)
    assert diff(s, s).changes == []
    changes = diff(s, OvsState()).changes
    assert changes[0].kind == "bridge" and changes[1].kind == "port"
    teardown = diff(OvsState(), s).changes
    assert teardown[-1].kind == "bridge" and teardown[-1].action == "delete"
    assert [c.kind for c in teardown[:-1]].count("flow") == len(s.flows)


def test_ip_change_modifies_flows_only():
    c = cfg(3)
    moved = dataclasses.replace(c, nodes=tuple(
        dataclasses.replace(n, ip=__import__("ipaddress").IPv4Address("192.168.57.99")) if n.name == "node-3" else n
        for n in c.nodes))
    changes = diff(build(moved, 1450), build(c, 1450)).changes
    assert {c.kind for c in changes} == {"flow"}
    assert sum(c.action == "modify" for c in changes) == 2   # the two out flows keep their match
    # the two source filters match tun_src: replaced
    assert sum(c.action == "add" for c in changes) == 2 and sum(c.action == "delete" for c in changes) == 2


def test_parse_dump_round_trip():
    text = """ cookie=0x6f76736d00000001, priority=100,in_port=LOCAL actions=goto_table:10
 cookie=0x6f76736d00000001, table=10, priority=100,ip,nw_dst=10.244.2.0/24 actions=set_field:192.168.56.12->tun_dst,output:10
 cookie=0x6f76736d00000001, table=30, priority=0 actions=drop
 cookie=0x0, priority=5,udp actions=NORMAL
"""
    flows = parse_dump(text)
    assert flows[0] == ("0x6f76736d00000001", Flow(0, 100, "in_port=LOCAL", "goto_table:10"))
    assert flows[1][1] == Flow(10, 100, "ip,nw_dst=10.244.2.0/24", "set_field:192.168.56.12->tun_dst,output:10")
    assert flows[2][1] == Flow(30, 0, "", "drop")
    assert flows[3] == ("0x0", Flow(0, 5, "udp", "NORMAL"))



def test_parse_dump_with_statistics_reads_the_same_flows():
    """`dump-flows` with counters (what OpenFlow.dump reads: ovs-ofctl then streams the
    replies) parses to exactly the flows of the same dump with --no-stats."""
    plain = """ cookie=0x6f76736d00000001, priority=100,in_port=LOCAL actions=goto_table:10
 cookie=0x6f76736d00000001, table=10, priority=100,ip,nw_dst=10.244.2.0/24 actions=output:10
 cookie=0x6f76736d00000001, table=30, priority=0 actions=drop
 cookie=0x0, table=5, actions=NORMAL
 cookie=0x0, priority=5,udp actions=NORMAL
"""
    counted = """OFPST_FLOW reply (OF1.3) (xid=0x2): flags=[more]
 cookie=0x6f76736d00000001, duration=1.5s, table=0, n_packets=0, n_bytes=0, priority=100,in_port=LOCAL actions=goto_table:10
 cookie=0x6f76736d00000001, duration=1.5s, table=10, n_packets=12, n_bytes=1176, priority=100,ip,nw_dst=10.244.2.0/24 actions=output:10
OFPST_FLOW reply (OF1.3) (xid=0x2):
 cookie=0x6f76736d00000001, duration=1.481s, table=30, n_packets=0, n_bytes=0, priority=0 actions=drop
 cookie=0x0, duration=0.2s, table=5, n_packets=0, n_bytes=0, actions=NORMAL
 cookie=0x0, duration=0.2s, table=0, n_packets=0, n_bytes=0, priority=5,udp actions=NORMAL
"""
    assert parse_dump(counted.splitlines(keepends=True)) == parse_dump(plain)
    assert parse_dump(plain)[3] == ("0x0", Flow(5, 32768, "", "NORMAL"))


def test_bundle_text():
    s = build(cfg(2), 1450)
    changes = diff(s, OvsState()).flows
    text = bundle_text(changes)
    assert text.count("\nadd ") + text.startswith("add ") == len(s.flows)
    dels = bundle_text(diff(OvsState(), s).flows)
    assert all(line.startswith("delete_strict cookie=0x6f76736d00000001/-1,") for line in dels.splitlines())
    assert "actions" not in dels
