"""The host layer's pure parts: CNI conflist, item diff, nft ruleset, kbr0 MAC."""
import json
from ipaddress import IPv4Address, IPv4Network

import pytest

from ovs_mesh import cni, masquerade
from ovs_mesh.host import Item, diff_items, gateway_mac
from ovs_mesh.underlay import desired_ovs

pytestmark = pytest.mark.unit   # no namespace needed: the unit tier, though it lives in tests/host


def test_conflist_for_bridge_plugin():
    text = cni.render(IPv4Network("10.244.3.0/24"), 1450)
    data = json.loads(text)
    assert data["name"] == "ovs-mesh" and cni.is_ours(text)
    p = data["plugins"][0]
    assert (p["type"], p["bridge"], p["isGateway"], p["ipMasq"], p["mtu"]) == ("bridge", "kbr0", True, False, 1450)
    assert p["ipam"]["type"] == "host-local"
    assert p["ipam"]["ranges"] == [[{"subnet": "10.244.3.0/24", "rangeStart": "10.244.3.2",
                                     "gateway": "10.244.3.1"}]]
    assert cni.plugin_config(text)["cniVersion"] == data["cniVersion"]
    assert not cni.is_ours('{"name": "other"}') and not cni.is_ours("not json") and not cni.is_ours(None)


def test_cni_write_is_atomic_and_only_when_different(tmp_path):
    path = tmp_path / "net.d" / "10-ovs-mesh.conflist"
    text = cni.render(IPv4Network("10.244.1.0/24"), 1400)
    assert cni.write(str(path), text) is True
    assert cni.write(str(path), text) is False
    assert path.read_text() == text and [p.name for p in path.parent.iterdir()] == [path.name]
    assert cni.remove(str(path)) is True and not path.exists()
    path.write_text('{"name": "other"}')
    assert cni.remove(str(path)) is False and path.exists()


def test_diff_items_orders_adds_modifies_then_deletes():
    want = [Item("link", "kbr0", 1450, "kbr0"), Item("route", "a", 1, "a"), Item("route", "b", 2, "b")]
    have = [Item("link", "kbr0", 1500, "kbr0"), Item("route", "b", 2, "b"), Item("route", "c", 3, "c")]
    got = [(c.action, c.kind, c.name) for c in diff_items(want, have)]
    assert got == [("modify", "link", "kbr0"), ("add", "route", "a"), ("delete", "route", "c")]
    assert diff_items(want, want) == []


def test_moved_item_label_shows_both_ends():
    [c] = diff_items([Item("address", "1.2.3.4/24", "br-phy", "1.2.3.4/24 dev br-phy")],
                     [Item("address", "1.2.3.4/24", "eth1", "1.2.3.4/24 dev eth1")])
    assert str(c) == "~ address 1.2.3.4/24 dev eth1 -> 1.2.3.4/24 dev br-phy"


def test_masquerade_ruleset_names_the_range():
    rules = masquerade.ruleset("10.244.0.0/16")
    assert "ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade" in rules
    assert "table ip ovs_mesh" in rules


def test_gateway_mac_is_stable_and_local():
    mac = gateway_mac(IPv4Address("10.244.1.1"))
    assert mac == "0a:58:0a:f4:01:01"
    assert int(mac[:2], 16) & 0x02 and not int(mac[:2], 16) & 0x01  # locally administered unicast


def test_underlay_bridge_is_tagged_netdev_standalone():
    s = desired_ovs("br-phy", "eth1", 9000)
    assert s.bridge.datapath_type == "netdev" and s.bridge.fail_mode == "" and s.bridge.mtu_request == 9000
    assert dict(s.bridge.external_ids) == {"ovs-mesh": "underlay"}
    assert [p.name for p in s.ports] == ["eth1"] and dict(s.ports[0].external_ids) == {"ovs-mesh": "underlay"}
