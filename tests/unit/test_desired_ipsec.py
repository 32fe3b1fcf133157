"""IPsec's desired OVS state (pure): the options ovs-monitor-ipsec reads on each peer's port, the
Open_vSwitch other_config keys, flow mode's per-peer ports and their classifier flows, and
what `plan` says (never the PSK)."""
import dataclasses

import pytest

from ovs_mesh.agent.installed import Installed, delta
from ovs_mesh.ovs.desired import IPSEC_SKB_MARK, build, build_parts, peer_port_name
from ovs_mesh.ovs.model import OWNER_KEY, PEER_KEY, Flow, GlobalChange, OvsState
from ovs_mesh.reconcile.plan import diff
from tests.helpers import base_config
from topology.config import parse_config

PSK = "s3cret-psk-never-shown-0123456789"
CERTS = {"certificate": "/etc/ovs-mesh/ipsec/node-1.crt", "private_key": "/etc/ovs-mesh/ipsec/node-1.key",
         "ca_cert": "/etc/ovs-mesh/ipsec/ca.crt"}


def ipsec(n=3, auth="certificate", encryption="ipsec", **cluster):
    data = base_config(n, encryption=encryption, ipsec_auth=auth, **cluster)
    data["local"]["datapath"] = "system"
    if encryption == "ipsec":
        if auth == "certificate":
            data["local"].update(CERTS)
        else:
            data["local"]["psk_file"] = "/etc/ovs-mesh/ipsec/psk"
    config = parse_config(data)
    if encryption == "ipsec" and auth == "psk":   # what ovs_mesh.config.secrets reads from the file
        config = dataclasses.replace(config, local=dataclasses.replace(config.local, psk=PSK))
    return config


def test_globals_certificates_and_the_skb_mark():
    s = build(ipsec(), 1413)
    assert dict(s.globals.other_config) == {**CERTS, "ipsec_skb_mark": "0/1"}
    assert IPSEC_SKB_MARK == "0/1"   # every unmarked tunnel packet must be encrypted
    assert dict(build(ipsec(auth="psk"), 1413).globals.other_config) == {"ipsec_skb_mark": "0/1"}
    assert build(parse_config(base_config()), 1450).globals is None


@pytest.mark.parametrize("tunnel", ["vxlan", "gre", "geneve"])
def test_port_mode_sets_the_options_on_each_peer_port(tunnel):
    s = build(ipsec(mode="port", tunnel=tunnel), 1413)
    by_peer = {p.peer: p for p in s.ports}
    assert set(by_peer) == {"node-2", "node-3"}
    opts = dict(by_peer["node-2"].options)
    assert opts == {"remote_ip": "192.168.56.12", "local_ip": "192.168.56.11", "remote_name": "node-2"}
    assert dict(by_peer["node-3"].options)["remote_name"] == "node-3"
    assert dict(by_peer["node-2"].bfd) == {"enable": "true"} and by_peer["node-2"].type == tunnel


@pytest.mark.parametrize("mode", ["port", "flow"])
def test_an_sa_lifetime_goes_to_every_peers_connection_as_strongswan_settings(mode):
    s = build(ipsec(mode=mode, ipsec_sa_lifetime=90), 1413)
    peers = [p for p in s.ports if p.peer]
    assert len(peers) == 2
    for p in peers:
        opts = dict(p.options)
        assert (opts["ipsec_lifetime"], opts["ipsec_rekeymargin"], opts["ipsec_ikelifetime"]) == ("90s", "30s", "270s")
    # 0 (the default): strongSwan's own lifetimes, no setting on the ports
    assert not any(k.startswith("ipsec_") for p in build(ipsec(mode=mode), 1413).ports for k in dict(p.options))


def test_psk_is_opt_in_and_goes_only_to_the_ports():
    s = build(ipsec(mode="port", auth="psk"), 1413)
    for p in s.ports:
        assert dict(p.options)["psk"] == PSK and "remote_name" not in dict(p.options)
    # plan and its JSON print kinds and names, never option values
    text = "\n".join(str(c) for c in diff(s, OvsState()).changes)
    json_text = repr([c.as_dict() for c in diff(s, OvsState()).changes])
    assert PSK not in text and PSK not in json_text
    assert PSK not in repr(ipsec(auth="psk"))


def test_flow_mode_keeps_its_port_and_adds_one_per_peer():
    c = ipsec(4)
    s = build(c, 1413)
    names = {p.name for p in s.ports}
    assert names == {"obr0-vxlan", *(peer_port_name("vxlan", f"node-{i}") for i in (2, 3, 4))}
    flow_port = next(p for p in s.ports if p.name == "obr0-vxlan")
    assert dict(flow_port.options) == {"remote_ip": "flow", "key": "flow"} and flow_port.ofport_request == 10
    p2 = next(p for p in s.ports if p.peer == "node-2")
    assert dict(p2.options) == {"remote_ip": "192.168.56.12", "key": "flow", "local_ip": "192.168.56.11",
                                "remote_name": "node-2"}
    assert dict(p2.external_ids) == {OWNER_KEY: "ipsec", PEER_KEY: "node-2"} and not p2.bfd
    assert p2.ofport_request >= 100
    # sending still goes through the flow-based port, with the peer's address as tun_dst
    assert Flow(10, 100, "ip,nw_dst=10.244.2.0/24",
                "set_field:0->tun_id,set_field:192.168.56.12->tun_dst,output:10") in s.flows
    # received packets arrive on the peer's port: classified into table 20 ...
    assert Flow(0, 100, f"tun_id=0,in_port={p2.ofport_request}", "goto_table:20") in s.flows
    # ... where the per-peer source filter still holds: only the peer's subnet, only from its address
    assert Flow(20, 100, "ip,tun_src=192.168.56.12,nw_src=10.244.2.0/24", "goto_table:30") in s.flows
    assert Flow(20, 100, "arp,tun_src=192.168.56.12,arp_spa=10.244.2.0/24", "goto_table:30") in s.flows
    assert not any(f.table == 0 and "in_port=" in f.match and "goto_table:30" in f.actions for f in s.flows)


def test_vni_carries_over_to_the_ipsec_ports():
    s = build(ipsec(vni=42, tunnel="geneve"), 1413)
    p2 = next(p for p in s.ports if p.peer == "node-2")
    assert dict(p2.options)["key"] == "flow" and p2.type == "geneve"
    assert Flow(0, 100, f"tun_id=0x2a,in_port={p2.ofport_request}", "goto_table:20") in s.flows


def test_switching_on_and_off_is_a_plan_of_ports_flows_and_globals():
    plain = parse_config(base_config(3))
    before = build(plain, 1450)
    on = diff(build(ipsec(), 1413), before).changes
    kinds = {(c.action, c.kind) for c in on}
    assert ("add", "ovs-global") in kinds and ("add", "port") in kinds and ("add", "flow") in kinds
    assert ("modify", "bridge") in kinds   # the MTU
    glob = next(c for c in on if isinstance(c, GlobalChange))
    assert str(glob) == "+ ovs-global Open_vSwitch other_config ca_cert,certificate,ipsec_skb_mark,private_key"
    off = diff(before, build(ipsec(), 1413)).changes
    assert ("delete", "ovs-global") in {(c.action, c.kind) for c in off}
    assert {c.name for c in off if c.kind == "port"} == {peer_port_name("vxlan", "node-2"),
                                                         peer_port_name("vxlan", "node-3")}
    assert diff(build(ipsec(), 1413), build(ipsec(), 1413)).changes == []


def test_teardown_removes_the_globals():
    s = build(ipsec(), 1413)
    changes = diff(OvsState(), s).changes
    assert any(isinstance(c, GlobalChange) and c.action == "delete" for c in changes)


def test_incremental_peer_join_matches_a_full_build():
    """The agent's per-peer path gives a joining peer the same port and flows a full pass does."""
    c3, c4 = ipsec(3), ipsec(4)
    parts = build_parts(c3, 1413)
    ofports = {p.name: p.ofport_request for part in (parts.fixed, *parts.peers.values()) for p in part.ports}
    rec = Installed.after_full_pass(c3, parts, ofports, list(ofports))
    changes = delta(rec, c4, ["node-4"])
    full = build(c4, 1413, ofports)
    added = [ch.new for ch in changes.plan.ovsdb]
    assert len(added) == 1 and added[0] in full.ports and added[0].peer == "node-4"
    assert {ch.new for ch in changes.plan.flows} <= full.flows
