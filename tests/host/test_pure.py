"""The host layer's pure parts, without root: desired_host for each setting
combination, the diff (add, modify, delete, moves, teardown restores saved
settings, nothing foreign touched), CNI conflist and nft rendering, kbr0's MAC."""
import json
from ipaddress import IPv4Address, IPv4Network

import pytest

from ovs_mesh.host import cni, desired_host, diff_host, gateway_mac, nft
from ovs_mesh.host.model import (
    Address,
    AntiSpoof,
    CniFile,
    Enslaved,
    HostFacts,
    HostRoute,
    HostState,
    Kbr,
    LinkUp,
    Masquerade,
    Offload,
    Sysctl,
    Underlay,
    UnderlayBridge,
    UnderlayPort,
)
from ovs_mesh.host.netlink import Route
from ovs_mesh.host.underlay import desired_ovs
from topology.config import parse_config
from topology.errors import InputError, NotOurs

CNI = "/etc/cni/net.d/10-ovs-mesh.conflist"


def config(masquerade=True, datapath="system", underlay=False, mtu="auto"):
    local = {"node": "node-1", "datapath": datapath, "host": True, "cni_conf": CNI,
             "ovsdb": "unix:/run/omho/db.sock"}
    if underlay:
        local.update(underlay_bridge="br-phy", underlay_interface="eth1")
    return parse_config({
        "cluster": {"cidr": "10.244.0.0/16", "node_prefix": 24, "masquerade": masquerade, "mtu": mtu},
        "nodes": [{"name": "node-1", "ip": "192.168.56.11", "subnet": "10.244.1.0/24"},
                  {"name": "node-2", "ip": "192.168.56.12", "subnet": "10.244.2.0/24"}],
        "local": local})


def lines(changes):
    return [str(c) for c in changes]


def converged(cfg, mtu=1450, facts=HostFacts()):
    """What a host looks like after applying: the desired objects themselves."""
    return desired_host(cfg, mtu, HostState((), facts))


OUR_ROUTE = HostRoute(Route("10.244.0.0/16", "kbr0", src="10.244.1.1", scope=253, proto=109))


def test_fresh_node_plan_lines_in_apply_order():
    changes = diff_host(converged(config()), HostState())
    assert lines(changes) == [
        "+ link kbr0 (bridge, mtu 1450)", "+ link obr0 master kbr0",
        "+ sysctl net.ipv4.ip_forward=1", "+ sysctl net.ipv4.conf.all.send_redirects=0",
        "+ sysctl net.ipv4.conf.kbr0.send_redirects=0", "+ address 10.244.1.1/24 dev kbr0",
        "+ route 10.244.0.0/16 dev kbr0 scope link src 10.244.1.1",
        "+ masquerade 10.244.0.0/16 (nft table inet ovs_mesh)",
        "+ antispoof 10.244.1.0/24 (nft table bridge ovs_mesh)",
        "+ pod-guard 0 pods (nft table bridge ovs_mesh_guard)", f"+ cni {CNI}"]
    assert changes[0].as_dict() == {"action": "add", "kind": "link", "name": "kbr0 (bridge, mtu 1450)"}
    want = converged(config())
    assert want.of(Kbr) == [Kbr(1450, "0a:58:0a:f4:01:01")] and want.of(HostRoute) == [OUR_ROUTE]
    assert want.of(AntiSpoof) == [AntiSpoof("10.244.1.0/24", "10.244.1.1", "obr0")]
    assert json.loads(want.of(CniFile)[0].content)["plugins"][0]["mtu"] == 1450


@pytest.mark.parametrize("masquerade", [True, False])
@pytest.mark.parametrize("datapath", ["system", "dummy"])
def test_desired_per_setting(masquerade, datapath):
    want = converged(config(masquerade=masquerade, datapath=datapath), mtu=1400)
    assert bool(want.of(Masquerade)) is masquerade
    assert bool(want.of(Enslaved)) is (datapath != "dummy")  # dummy: obr0 has no kernel device
    assert want.of(Kbr)[0].mtu == 1400 and not want.of(UnderlayBridge, Offload, LinkUp)
    assert diff_host(want, want) == []


def test_netdev_underlay_moves_addresses_and_routes_and_turns_offload_off():
    cfg = config(datapath="netdev", underlay=True)
    facts = HostFacts(underlay=Underlay("br-phy", "eth1"), underlay_mtu=9000)
    default = Route("default", "eth1", gateway="192.168.56.1", proto=4)
    observed = HostState((Address("192.168.56.11/24", "eth1"), HostRoute(default), Offload("eth1", "on"),
                          Sysctl("net.ipv4.ip_forward", "0")), facts)
    want = desired_host(cfg, 8950, observed)
    assert want.of(UnderlayBridge)[0].spec == desired_ovs("br-phy", "eth1", 9000).bridge
    assert want.of(Address)[-1] == Address("192.168.56.11/24", "br-phy")
    got = lines(diff_host(want, observed))
    assert got[:4] == ["+ underlay bridge br-phy", "+ underlay port eth1", "+ link kbr0 (bridge, mtu 8950)",
                       "+ link obr0 master kbr0"]
    assert "~ address 192.168.56.11/24 dev eth1 -> 192.168.56.11/24 dev br-phy" in got
    assert "~ route default via 192.168.56.1 dev eth1 -> default via 192.168.56.1 dev br-phy" in got
    assert "~ offload eth1 tx-checksumming on -> eth1 tx-checksumming off" in got
    assert "~ sysctl net.ipv4.ip_forward=0 -> net.ipv4.ip_forward=1" in got
    # Without ethtool (no offload observed) the offload is left alone.
    assert not desired_host(cfg, 8950, HostState((), facts)).of(Offload)


def test_missing_underlay_interface_is_bad_input():
    facts = HostFacts(underlay=Underlay("br-phy", "eth1"), underlay_mtu=None)
    with pytest.raises(InputError) as e:
        desired_host(config(datapath="netdev", underlay=True), 1450, HostState((), facts))
    assert e.value.errors == ["local.underlay_interface: eth1: no such network interface"]
    # teardown does not need it
    assert desired_host(config(datapath="netdev", underlay=True), 1450, HostState((), facts), True).objects == ()


def test_foreign_objects_are_refused_and_survive_teardown():
    facts = HostFacts(foreign=("link kbr0 exists but was not created by ovs-mesh; refusing to touch it",))
    with pytest.raises(NotOurs, match="refusing"):
        desired_host(config(), 1450, HostState((), facts))
    # Teardown of a host where only foreign things exist: nothing to do.
    assert diff_host(desired_host(config(), 1450, HostState((), facts), True), HostState((), facts)) == []


def test_modify_and_delete():
    cfg = config(masquerade=False)
    have = converged(config(), mtu=1500)
    stale = HostRoute(Route("10.245.0.0/16", "kbr0", src="10.244.1.1", scope=253, proto=109))
    have = HostState(have.objects + (stale, Kbr(1500, "0a:58:0a:f4:01:01", up=False)), have.facts)
    got = lines(diff_host(converged(cfg, mtu=1450), have))
    assert got[0] == "~ link kbr0 (bridge, mtu 1500) -> kbr0 (bridge, mtu 1450)"
    assert f"~ cni {CNI}" in got
    assert got[-2:] == ["- route 10.245.0.0/16 dev kbr0 scope link src 10.244.1.1",
                        "- masquerade 10.244.0.0/16 (nft table inet ovs_mesh)"]


def test_teardown_restores_saved_settings_and_deletes_ours_in_reverse():
    saved = (Sysctl("net.ipv4.ip_forward", "0"), Offload("eth1", "on"), Sysctl("net.ipv4.conf.gone.x", "1"))
    facts = HostFacts(underlay=Underlay("br-phy", "eth1"), underlay_mtu=1500, saved=saved)
    default = Route("default", "br-phy", gateway="192.168.56.1", proto=4)
    have = HostState((UnderlayBridge(desired_ovs("br-phy", "eth1", 1500).bridge),
                      UnderlayPort(desired_ovs("br-phy", "eth1", 1500).ports[0]),
                      Kbr(1450, "m"), Enslaved("obr0"), LinkUp("br-phy"), Address("10.244.1.1/24", "kbr0"),
                      Address("192.168.56.11/24", "br-phy"), OUR_ROUTE, HostRoute(default),
                      Sysctl("net.ipv4.ip_forward", "1"), Sysctl("net.ipv4.conf.all.send_redirects", "0"),
                      Offload("eth1", "off"), Masquerade("10.244.0.0/16"),
                      AntiSpoof("10.244.1.0/24", "10.244.1.1", "obr0"), CniFile(CNI, "{}")), facts)
    got = lines(diff_host(desired_host(config(datapath="netdev", underlay=True), 1450, have, True), have))
    assert got == [
        "~ sysctl net.ipv4.ip_forward=1 -> net.ipv4.ip_forward=0",
        "~ offload eth1 tx-checksumming off -> eth1 tx-checksumming on",
        "~ address 192.168.56.11/24 dev br-phy -> 192.168.56.11/24 dev eth1",
        "~ route default via 192.168.56.1 dev br-phy -> default via 192.168.56.1 dev eth1",
        f"- cni {CNI}", "- antispoof 10.244.1.0/24 (nft table bridge ovs_mesh)",
        "- masquerade 10.244.0.0/16 (nft table inet ovs_mesh)",
        "- route 10.244.0.0/16 dev kbr0 scope link src 10.244.1.1", "- address 10.244.1.1/24 dev kbr0",
        "- link kbr0 (bridge, mtu 1450)", "- underlay port eth1", "- underlay bridge br-phy"]
    # all.send_redirects was not saved (it was 0 before us): it stays as it is; obr0 and br-phy
    # are OVS's devices: not deleted by the host layer.

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


def test_nft_rulesets_name_their_parameters():
    rules = nft.masquerade_ruleset(["10.244.0.0/16"])
    assert "ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade" in rules
    assert "table inet ovs_mesh" in rules and "redirect" not in rules
    spoof = nft.antispoof_ruleset("10.244.1.0/24", "10.244.1.1", "obr0", "kbr0")
    assert "table bridge ovs_mesh" in spoof and 'comment "ovs-mesh antispoof 10.244.1.0/24 10.244.1.1 obr0"' in spoof
    pod = 'meta ibrname "kbr0" iifname != "obr0"'
    for rule in ("ip saddr != 10.244.1.0/24 drop", "ip saddr 10.244.1.1 drop",
                 "arp saddr ip != { 10.244.1.0/24, 0.0.0.0 } drop", "arp saddr ip 10.244.1.1 drop"):
        assert f"{pod} {rule}" in spoof
    assert "ibrname" not in nft.antispoof_ruleset("10.244.1.0/24", "10.244.1.1", "obr0", "kbr0", scoped=False)


def test_gateway_mac_is_stable_and_local():
    mac = gateway_mac(IPv4Address("10.244.1.1"))
    assert mac == "0a:58:0a:f4:01:01"
    assert int(mac[:2], 16) & 0x02 and not int(mac[:2], 16) & 0x01  # locally administered unicast


def test_underlay_bridge_is_tagged_netdev_standalone():
    s = desired_ovs("br-phy", "eth1", 9000)
    assert s.bridge.datapath_type == "netdev" and s.bridge.fail_mode == "" and s.bridge.mtu_request == 9000
    assert dict(s.bridge.external_ids) == {"ovs-mesh": "underlay"}
    assert [p.name for p in s.ports] == ["eth1"] and dict(s.ports[0].external_ids) == {"ovs-mesh": "underlay"}


def test_state_file_round_trip_and_removal(tmp_path):
    from ovs_mesh.host import saved
    s = saved.Saved((Sysctl("net.ipv4.ip_forward", "0"), Offload("eth1", "on")), Underlay("br-phy", "eth1"))
    saved.save(str(tmp_path), s)
    assert json.loads((tmp_path / saved.STATE_FILE).read_text())["restore"] == {
        "offload:eth1": "on", "sysctl:net.ipv4.ip_forward": "0"}   # the format older versions wrote
    back = saved.load(str(tmp_path))
    assert set(back.restore) == set(s.restore) and back.underlay == s.underlay
    saved.save(str(tmp_path), saved.Saved())
    assert not (tmp_path / saved.STATE_FILE).exists() and saved.load(str(tmp_path)) == saved.Saved()
