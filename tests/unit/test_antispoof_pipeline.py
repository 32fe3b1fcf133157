"""The anti-spoofing pipeline and the tunnel key, as pure desired state.

Every way into the overlay checks the source: from LOCAL only this node's
subnet, from a peer only that peer's subnet, for IP and ARP alike.
"""
import dataclasses

import pytest

from ovs_mesh.ovs.desired import assign_ofports, build, peer_port_name
from ovs_mesh.ovs.model import Flow
from tests.helpers import base_config
from topology.config import ConfigError, parse_config


def cfg(n=3, **kw):
    return parse_config(base_config(n, **kw))


def in_flows(s, table):
    return {f for f in s.flows if f.table == table}


@pytest.mark.parametrize("mode", ["flow", "port"])
def test_local_side_only_this_nodes_subnet(mode):
    s = build(cfg(3, mode=mode), 1450)
    t0 = {f for f in in_flows(s, 0) if "LOCAL" in f.match}
    assert t0 == {Flow(0, 100, "ip,in_port=LOCAL,nw_src=10.244.1.0/24", "goto_table:10"),
                  Flow(0, 100, "arp,in_port=LOCAL,arp_spa=10.244.1.0/24", "goto_table:10"),
                  Flow(0, 90, "in_port=LOCAL", "drop")}


@pytest.mark.parametrize("mode", ["flow", "port"])
def test_from_a_peer_only_that_peers_subnet(mode):
    s = build(cfg(4, mode=mode), 1450)
    t20 = in_flows(s, 20)
    assert Flow(20, 0, "", "drop") in t20
    accept = sorted(f.match for f in t20 if f.priority == 100)
    assert len(accept) == 2 * 3   # ip and arp per peer
    for f in t20 - {Flow(20, 0, "", "drop")}:
        proto, sender, source = f.match.split(",")
        peer = {"tun_src=192.168.56.1" + str(i): i for i in (2, 3, 4)}.get(sender)
        if mode == "port":
            ports = {p.ofport_request: int(p.peer[-1]) for p in s.ports}
            peer = ports[int(sender.split("=")[1])]
        key = "nw_src" if proto == "ip" else "arp_spa"
        assert source == f"{key}=10.244.{peer}.0/24", f


def test_flow_counts_per_peer():
    """The README's figures: 4 flows per peer in flow and port modes, 1 in stp."""
    for mode, const in (("flow", 10), ("port", 9)):
        for n in (2, 5):
            assert len(build(cfg(n, mode=mode), 1450).flows) == const + 4 * (n - 1), mode
    assert len(build(cfg(5, mode="stp"), 1450).flows) == 1


def test_vni_default_keeps_the_old_wire_format():
    s = build(cfg(3), 1450)
    assert dict(s.ports[0].options) == {"remote_ip": "flow", "key": "flow"}
    assert Flow(0, 100, "tun_id=0,in_port=10", "goto_table:20") in s.flows
    assert all(f.actions.startswith("set_field:0->tun_id,") for f in in_flows(s, 10) if f.priority)
    # port mode: no key option (each peer has its own port)
    assert all("key" not in dict(p.options) for p in build(cfg(3, mode="port"), 1450).ports)


def test_vni_is_matched_and_set():
    s = build(cfg(3, vni=4660), 1450)
    assert Flow(0, 100, "tun_id=0x1234,in_port=10", "goto_table:20") in s.flows
    assert not any("tun_id=0," in f.match for f in s.flows)
    out = [f for f in in_flows(s, 10) if f.priority == 100]
    assert len(out) == 4 and all(f.actions.startswith("set_field:0x1234->tun_id,set_field:") for f in out)
    for p in build(cfg(3, mode="port", tunnel="gre", vni=7), 1450).ports:
        assert dict(p.options)["key"] == "7"


@pytest.mark.parametrize("raw,ok", [(0, True), (16777215, True), (16777216, False), (-1, False),
                                    ("5", False), (True, False)])
def test_vni_validation(raw, ok):
    data = base_config(2, vni=raw)
    if ok:
        assert parse_config(data).cluster.vni == raw
    else:
        with pytest.raises(ConfigError) as e:
            parse_config(data)
        assert [x for x in e.value.errors if x.startswith(f"cluster.vni: {str(raw).lower()}: ")], e.value.errors


def test_ofports_never_reuse_a_number_held_now():
    # node-2's port (100) is deleted in the transaction that adds node-9's
    assert assign_ofports(["b", "new"], {"old": 100, "b": 101}) == {"b": 101, "new": 102}
    # someone else's port holds 100; ours at 1 (not where it asked) moves to a free number
    assert assign_ofports(["a"], {"theirs": 100, "a": 1}) == {"a": 101}
    # kept numbers stay, holes are reused once free
    assert assign_ofports(["a", "c"], {"a": 100, "c": 102}) == {"a": 100, "c": 102}
    assert assign_ofports(["a", "c", "d"], {"a": 100, "c": 102}) == {"a": 100, "c": 102, "d": 101}


def test_replacing_a_peer_gives_the_new_port_a_fresh_number():
    c = cfg(3, mode="port")
    first = build(c, 1450)
    existing = {p.name: p.ofport_request for p in first.ports}
    node9 = dataclasses.replace(c.node("node-2"), name="node-9")
    c2 = dataclasses.replace(c, nodes=tuple(sorted([n for n in c.nodes if n.name != "node-2"] + [node9])))
    second = build(c2, 1450, existing)
    new = {p.name: p.ofport_request for p in second.ports}[peer_port_name("vxlan", "node-9")]
    assert new not in existing.values()
