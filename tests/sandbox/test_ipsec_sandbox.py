"""IPsec's OVSDB side against a real ovsdb-server + ovs-vswitchd: the Open_vSwitch other_config
keys ovs-monitor-ipsec reads (ours recorded, someone else's refused), flow mode's per-peer ports and
the classification of what arrives on them (ofproto/trace), idempotence, switching off, teardown.
The dummy datapath cannot encrypt (the config refuses it there): these tests take the validated
kernel-datapath config and point it at the sandbox; encryption itself is proven in tests/vm."""
import dataclasses

import pytest

from ovs_mesh.ovs.desired import peer_port_name
from ovs_mesh.reconcile.node import open_node
from ovsdb_client.errors import OwnershipError
from tests.helpers import sandbox_config
from topology.config import parse_config

CERTS = {"certificate": "/etc/ovs-mesh/ipsec/node-1.crt", "private_key": "/etc/ovs-mesh/ipsec/node-1.key",
         "ca_cert": "/etc/ovs-mesh/ipsec/ca.crt"}


def config(ovs, encryption="ipsec", **cluster):
    data = sandbox_config(ovs, 3, encryption=encryption, **cluster)
    if encryption == "ipsec":
        data["local"].update(datapath="system", **CERTS)
    c = parse_config(data)
    return dataclasses.replace(c, local=dataclasses.replace(c.local, datapath="dummy"))


def apply(c, teardown=False):
    node = open_node(c)
    try:
        return node.reconciler().apply(teardown=teardown)
    finally:
        node.close()


def other_config(ovs) -> dict:
    out = ovs.vsctl("--format=json", "get", "Open_vSwitch", ".", "other_config").strip()
    return dict(kv.split("=", 1) for kv in out.strip("{}").replace('"', "").split(", ") if kv)


def test_flow_mode_ipsec_rows_flows_and_idempotence(underlay):
    ovs = underlay
    c = config(ovs)
    result = apply(c)
    assert not result.problems
    oc = other_config(ovs)
    assert {k: oc[k] for k in (*CERTS, "ipsec_skb_mark")} == {**CERTS, "ipsec_skb_mark": "0/1"}
    assert ovs.vsctl("get", "Open_vSwitch", ".", "external_ids:ovs-mesh-other-config").strip().strip('"') == \
        "ca_cert,certificate,ipsec_skb_mark,private_key"
    p2 = peer_port_name("vxlan", "node-2")
    assert set(ovs.vsctl("list-ports", "obr0").split()) == {"obr0-vxlan", p2, peer_port_name("vxlan", "node-3")}
    assert ovs.vsctl("get", "Interface", p2, "options:remote_name").strip().strip('"') == "node-2"
    assert ovs.vsctl("get", "Interface", p2, "options:local_ip").strip().strip('"') == "192.168.56.11"
    # a packet of node-2's pod arriving on node-2's port reaches the local side ...
    out = ovs.appctl("ofproto/trace", "obr0", f"in_port={p2},tun_id=0,tun_src=192.168.56.12,tun_dst=192.168.56.11,"
                                              "icmp,nw_src=10.244.2.5,nw_dst=10.244.1.5")
    assert "goto_table:20" in out and "goto_table:30" in out and "LOCAL" in out
    assert not out.split("Datapath actions:")[1].strip().startswith("drop")
    # ... a source of another node's subnet does not, from the same port
    out = ovs.appctl("ofproto/trace", "obr0", f"in_port={p2},tun_id=0,tun_src=192.168.56.12,tun_dst=192.168.56.11,"
                                              "icmp,nw_src=10.244.3.5,nw_dst=10.244.1.5")
    assert out.split("Datapath actions:")[1].strip().startswith("drop")
    # sending still leaves through the flow-based port
    out = ovs.appctl("ofproto/trace", "obr0", "in_port=LOCAL,icmp,nw_src=10.244.1.5,nw_dst=10.244.2.7")
    assert "set_field:192.168.56.12->tun_dst" in out and "output:10" in out
    again = apply(c)
    assert again.changes == [] and again.ovsdb_transactions == 0 and again.flow_changes == 0


def test_someone_elses_ipsec_settings_are_refused_and_left(underlay):
    ovs = underlay
    ovs.vsctl("set", "Open_vSwitch", ".", "other_config:certificate=/etc/theirs.crt")
    with pytest.raises(OwnershipError, match="other_config:certificate is set, not by ovs-mesh"):
        apply(config(ovs))
    assert other_config(ovs)["certificate"] == "/etc/theirs.crt"
    assert "ipsec_skb_mark" not in other_config(ovs)


def test_switching_off_and_teardown_remove_only_our_keys(underlay):
    ovs = underlay
    ovs.vsctl("set", "Open_vSwitch", ".", "other_config:theirs=1")
    apply(config(ovs))
    off = apply(config(ovs, encryption="none"))
    assert {(c.action, c.kind) for c in off.changes} >= {("delete", "ovs-global"), ("delete", "port")}
    oc = other_config(ovs)
    assert not set(oc) & {*CERTS, "ipsec_skb_mark"} and oc["theirs"] == "1"
    assert set(ovs.vsctl("list-ports", "obr0").split()) == {"obr0-vxlan"}
    apply(config(ovs))
    apply(config(ovs), teardown=True)
    assert other_config(ovs) == {"theirs": "1"}
    assert "ovs-mesh-other-config" not in ovs.vsctl("get", "Open_vSwitch", ".", "external_ids")


@pytest.mark.parametrize("tunnel", ["gre", "geneve"])
def test_port_mode_ipsec_options(underlay, tunnel):
    ovs = underlay
    apply(config(ovs, mode="port", tunnel=tunnel))
    p3 = peer_port_name(tunnel, "node-3")
    assert ovs.vsctl("get", "Interface", p3, "options:remote_name").strip().strip('"') == "node-3"
    assert ovs.vsctl("get", "Interface", p3, "type").strip() == tunnel


def psk_config(ovs):
    """The certificate config switched to the pre-shared key (as read from its file)."""
    data = sandbox_config(ovs, 3, encryption="ipsec", ipsec_auth="psk")
    data["local"].update(datapath="system", psk_file="/etc/ovs-mesh/ipsec.psk")
    c = parse_config(data)
    return dataclasses.replace(c, local=dataclasses.replace(c.local, datapath="dummy", psk="k" * 32))


def test_switching_certificates_to_a_psk_in_one_pass(underlay):
    """ovs-monitor-ipsec refuses a tunnel with a PSK while any certificate setting is left (global
    or remote_name): the switch must remove them all and converge."""
    ovs = underlay
    apply(config(ovs))
    result = apply(psk_config(ovs))
    assert not result.problems
    oc = other_config(ovs)
    assert not set(oc) & set(CERTS) and oc["ipsec_skb_mark"] == "0/1", oc
    p2 = peer_port_name("vxlan", "node-2")
    options = ovs.vsctl("get", "Interface", p2, "options")
    assert "remote_name" not in options and "psk=" in options and "k" * 32 in options, options
    again = apply(psk_config(ovs))
    assert again.changes == [] and again.ovsdb_transactions == 0
