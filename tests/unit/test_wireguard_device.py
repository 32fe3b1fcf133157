"""WireGuard's device, the pure parts: what `wg show dump` is read as (never the private or the
preshared key), the one `wg set` that makes the device hold the wanted peers, each peer's state
for status and the metrics, the host objects the desired state holds, the filter's rules."""
import dataclasses

import pytest

from ovs_mesh.encryption import wg_device
from ovs_mesh.encryption.wireguard import DEVICE, WgPeer, new_private_key, public_key
from ovs_mesh.host import nft
from ovs_mesh.host.desired import desired_host
from ovs_mesh.host.diff import diff_host
from ovs_mesh.host.model import Address, HostFacts, HostState, WgDevice, WgFilter, WgKey
from tests.helpers import base_config
from topology.config import ConfigError, parse_config

PRIV = new_private_key(b"\x07" * 32)
PUB = public_key(PRIV)
K2, K3 = public_key(new_private_key(b"\x02" * 32)), public_key(new_private_key(b"\x03" * 32))
PSK = new_private_key(b"\x09" * 32)
DUMP = (f"{PRIV}\t{PUB}\t51820\toff\n"
        f"{K2}\t{PSK}\t192.168.56.12:51820\t100.64.0.3/32\t1700000000\t100\t200\toff\n"
        f"{K3}\t(none)\t(none)\t100.64.0.4/32\t0\t0\t0\toff\n")


def test_dump_is_read_without_the_private_and_preshared_keys():
    view = wg_device.parse_dump(DUMP)
    assert view.public_key == PUB and view.port == 51820
    assert view.peers == tuple(sorted((WgPeer(K2, "192.168.56.12:51820", "100.64.0.3/32"),
                                       WgPeer(K3, "", "100.64.0.4/32"))))
    assert view.handshakes == {K2: 1700000000, K3: 0}
    assert PRIV not in repr(view) and PSK not in repr(view)


def test_a_broken_dump_is_an_error_that_quotes_nothing():
    with pytest.raises(wg_device.WgError) as e:
        wg_device.parse_dump(f"{PRIV}\t{PUB}\t51820\toff\n{K2}\tshort\n")
    assert PRIV not in str(e.value)


def test_one_wg_set_adds_updates_and_removes_peers():
    want = (WgPeer(K2, "192.168.56.12:51820", "100.64.0.3/32"),)
    have = (WgPeer(K3, "192.168.56.13:51820", "100.64.0.4/32"),)
    key = "/var/lib/ovs-mesh/wireguard/private.key"
    args = wg_device.set_args(DEVICE, 51820, key, want, have)
    assert args == ["wg", "set", DEVICE, "listen-port", "51820", "private-key", key,
                    "peer", K3, "remove", "peer", K2, "endpoint", "192.168.56.12:51820", "allowed-ips", "100.64.0.3/32"]


def test_peer_states_from_the_handshakes():
    view = wg_device.parse_dump(DUMP)
    got = wg_device.peer_states(view, {"node-2": K2, "node-3": K3, "node-4": None}, now=1700000012.0)
    assert got["node-2"].as_dict() == {"mode": "wireguard", "encrypted": True, "state": "up", "sa_age_seconds": 12.0}
    assert got["node-3"].state == "no-handshake" and got["node-4"].state == "no-peer"
    assert wg_device.peer_states(view, {"node-2": K2}, now=1700000200.0)["node-2"].state == "stale"
    assert wg_device.peer_states(None, {"node-2": K2}, now=0)["node-2"].state == "no-peer"


def config(**cluster):
    data = base_config(3, encryption="wireguard", **cluster)
    data["local"]["datapath"] = "system"
    data["nodes"][1]["wireguard_public_key"] = K2
    return parse_config(data)


def facts(**kw):
    return HostFacts(**{"wg_public_key": PUB, **kw})


def test_desired_device_address_filter_and_key():
    c = config()
    want = desired_host(c, 1390, HostState(facts=facts()))
    assert want.of(WgKey) == [WgKey(c.local.wireguard_key)]
    dev = want.of(WgDevice)
    # the device carries the VXLAN packet of a 1390-byte pod packet; node-3 has no key: no peer
    assert dev == [WgDevice(DEVICE, 51820, PUB, 1440, (WgPeer(K2, "192.168.56.12:51820", "100.64.0.3/32"),))]
    assert Address("100.64.0.2/16", DEVICE) in want.objects
    assert want.of(WgFilter) == [WgFilter(DEVICE, "udp 4789")]
    assert desired_host(config(tunnel="gre"), 1398, HostState(facts=facts())).of(WgFilter) == [WgFilter(DEVICE, "gre")]


def test_converged_device_has_no_changes_and_a_new_peer_is_a_modify():
    c = config()
    want = desired_host(c, 1390, HostState(facts=facts()))
    observed = HostState(want.objects, want.facts)
    assert [ch for ch in diff_host(desired_host(c, 1390, observed), observed)
            if ch.kind.startswith("wireguard")] == []
    dev = want.of(WgDevice)[0]
    fewer = HostState(tuple(dataclasses.replace(o, peers=()) if o is dev else o for o in want.objects), want.facts)
    changes = [ch for ch in diff_host(desired_host(c, 1390, fewer), fewer) if ch.kind == "wireguard"]
    assert [(ch.action, ch.name) for ch in changes] == [("modify", f"{DEVICE} (port 51820, mtu 1440, 0 peers) -> "
                                                                   f"{DEVICE} (port 51820, mtu 1440, 1 peers)")]


def test_switched_off_keeps_the_key_and_teardown_removes_everything():
    on = config()
    observed = desired_host(on, 1390, HostState(facts=facts()))
    observed = HostState(observed.objects, observed.facts)
    off = parse_config(base_config(3))
    changes = diff_host(desired_host(off, 1450, observed), observed)
    gone = {(ch.action, ch.kind) for ch in changes if "wireguard" in ch.kind or getattr(ch.obj, "dev", "") == DEVICE}
    assert gone == {("delete", "wireguard"), ("delete", "wireguard-filter"), ("delete", "address")}
    teardown = diff_host(desired_host(on, 1390, observed, teardown=True), observed)
    assert {ch.kind for ch in teardown if ch.action == "delete"} >= {"wireguard", "wireguard-filter",
                                                                      "wireguard-key", "address"}


@pytest.mark.parametrize("kw, message", [
    (dict(wireguard=False), "cluster.encryption: wireguard: this kernel has no WireGuard"),
    (dict(wg_tools=False), "cluster.encryption: wireguard: wireguard-tools is not installed"),
])
def test_a_host_without_wireguard_is_refused(kw, message):
    with pytest.raises(ConfigError, match=message):
        desired_host(config(), 1390, HostState(facts=facts(**kw)))


def test_the_inventory_must_list_this_nodes_own_key():
    data = base_config(3, encryption="wireguard")
    data["local"]["datapath"] = "system"
    data["nodes"][0]["wireguard_public_key"] = K3
    with pytest.raises(ConfigError, match=r"nodes\[0\].wireguard_public_key: .*: not this node's key: .* holds the "
                                          r"private key of " + PUB.replace("+", r"\+")):
        desired_host(parse_config(data), 1390, HostState(facts=facts()))


def test_filter_rules_drop_tunnel_packets_not_from_the_device():
    rules = nft.wg_filter_ruleset(DEVICE, "udp 4789")
    assert f'iifname != "{DEVICE}" udp dport 4789 counter drop comment "ovs-mesh wireguard {DEVICE} udp 4789"' in rules
    assert "type filter hook input" in rules
    assert f'iifname != "{DEVICE}" meta l4proto gre counter drop' in nft.wg_filter_ruleset(DEVICE, "gre")
