"""The host layer's pure parts for IPv6 and dual-stack clusters,
without root: desired_host/diff_host for IPv4, IPv6-only and dual-stack, the
pod MTU per underlay family, the IPv6 sysctls (accept_ra kept working under
forwarding), the migration of the old `ip ovs_mesh` table, the CNI ranges
per family and the nft rules of both tables."""
import dataclasses
import json
from ipaddress import IPv4Network, IPv6Address, IPv6Network

import pytest

from ovs_mesh.host import cni, desired_host, diff_host, gateway_mac, nft
from ovs_mesh.host.desired import link_local
from ovs_mesh.host.model import (
    Address,
    AntiSpoof,
    CniFile,
    HostFacts,
    HostRoute,
    HostState,
    Kbr,
    LegacyMasquerade,
    Masquerade,
    Sysctl,
)
from ovs_mesh.host.netlink import Route
from ovs_mesh.reconcile.reconciler import Reconciler
from tests.host.v6config import config

pytestmark = pytest.mark.unit

CNI = "/etc/cni/net.d/10-ovs-mesh.conflist"


def converged(cfg, mtu=1450, facts=HostFacts()):
    return desired_host(cfg, mtu, HostState((), facts))


def lines(changes):
    return [str(c) for c in changes]


ROUTE6 = HostRoute(Route("fd00:10:244::/56", "kbr0", src="fd00:10:244:1::1", proto=109, metric=1024))
LL = "fe80::858:aff:fef4:101"   # EUI-64 of kbr0's MAC 0a:58:0a:f4:01:01


def test_dual_stack_fresh_node_plan():
    got = lines(diff_host(converged(config("dual")), HostState()))
    assert got == [
        "+ link kbr0 (bridge, mtu 1450)", "+ link obr0 master kbr0",
        "+ sysctl net.ipv4.ip_forward=1", "+ sysctl net.ipv4.conf.all.send_redirects=0",
        "+ sysctl net.ipv4.conf.kbr0.send_redirects=0", "+ sysctl net.ipv6.conf.all.forwarding=1",
        "+ sysctl net.ipv6.conf.kbr0.disable_ipv6=0",
        "+ address 10.244.1.1/24 dev kbr0", "+ address fd00:10:244:1::1/64 dev kbr0",
        "+ route 10.244.0.0/16 dev kbr0 scope link src 10.244.1.1",
        "+ route fd00:10:244::/56 dev kbr0 src fd00:10:244:1::1",
        "+ masquerade 10.244.0.0/16 fd00:10:244::/56, no ICMPv6 redirects (nft table inet ovs_mesh)",
        "+ antispoof 10.244.1.0/24,fd00:10:244:1::/64 (nft table bridge ovs_mesh)",
        "+ pod-guard 0 pods (nft table bridge ovs_mesh_guard)", f"+ cni {CNI}"]
    want = converged(config("dual"))
    assert want.of(Kbr) == [Kbr(1450, "0a:58:0a:f4:01:01")]   # the same MAC as the IPv4-only node
    assert want.of(HostRoute)[1] == ROUTE6
    assert want.of(AntiSpoof) == [AntiSpoof("10.244.1.0/24,fd00:10:244:1::/64",
                                            f"10.244.1.1,fd00:10:244:1::1,{LL}", "obr0")]
    assert diff_host(want, want) == []


def test_ipv6_only_node_has_nothing_ipv4():
    want = converged(config("ipv6", underlay="ipv6"))
    assert [a.cidr for a in want.of(Address)] == ["fd00:10:244:1::1/64"]
    assert want.of(HostRoute) == [ROUTE6]
    assert [s.name for s in want.of(Sysctl)] == ["net.ipv6.conf.all.forwarding", "net.ipv6.conf.kbr0.disable_ipv6"]
    assert want.of(Masquerade) == [Masquerade("fd00:10:244::/56", redirects_off=True)]
    mac = want.of(Kbr)[0].mac
    assert mac == "0a:58:ff:44:00:10"   # fd00:10:244:1::1 folded into 32 bits (XOR of its 4 words)
    assert want.of(AntiSpoof) == [AntiSpoof("fd00:10:244:1::/64", f"fd00:10:244:1::1,{link_local(mac)}", "obr0")]
    conf = json.loads(want.of(CniFile)[0].content)["plugins"][0]["ipam"]
    assert conf["ranges"] == [[{"subnet": "fd00:10:244:1::/64", "rangeStart": "fd00:10:244:1::2",
                                "gateway": "fd00:10:244:1::1"}]]
    assert conf["routes"] == [{"dst": "::/0"}]


def test_ipv6_cluster_on_a_kernel_without_ipv6_is_bad_input():
    from topology.errors import InputError
    with pytest.raises(InputError) as e:
        desired_host(config("dual"), 1450, HostState((), HostFacts(ipv6=False)))
    assert e.value.errors == ["cluster.cidr: fd00:10:244::/56: this kernel has no IPv6 (booted with ipv6.disable=1)"]
    assert converged(config("ipv4"), facts=HostFacts(ipv6=False)).of(Kbr)   # IPv4 does not need it


@pytest.mark.parametrize("family", ["ipv4", "ipv6", "dual"])
def test_masquerade_off_keeps_the_redirect_filter_for_ipv6(family):
    want = converged(config(family, masquerade=False))
    expect = [Masquerade("", redirects_off=True)] if family != "ipv4" else []
    assert want.of(Masquerade) == expect
    if expect:
        assert "+ masquerade no masquerade, no ICMPv6 redirects (nft table inet ovs_mesh)" in \
            [str(c) for c in diff_host(want, HostState())]


def test_the_old_ip_table_is_replaced_by_the_inet_one():
    """An upgraded node: the `ip ovs_mesh` table an older version wrote is
    deleted after the `inet ovs_mesh` one is in place (no moment without masquerade)."""
    want = converged(config("dual"))
    have = HostState(tuple(o for o in want.objects if not isinstance(o, Masquerade))
                     + (LegacyMasquerade("10.244.0.0/16"),))
    got = lines(diff_host(want, have))
    assert got == ["+ masquerade 10.244.0.0/16 fd00:10:244::/56, no ICMPv6 redirects (nft table inet ovs_mesh)",
                   "- masquerade 10.244.0.0/16 (nft table ip ovs_mesh)"]
    # and teardown deletes both
    both = HostState(want.objects + (LegacyMasquerade(""),))
    gone = lines(diff_host(desired_host(config("dual"), 1450, both, True), both))
    assert "- masquerade ? (nft table ip ovs_mesh)" in gone
    assert any(l.startswith("- masquerade 10.244.0.0/16 fd00") for l in gone)


def test_accept_ra_is_kept_working_under_ipv6_forwarding():
    """A link that learns routes from router advertisements gets accept_ra=2
    (1 would stop working once forwarding is on); 0 stays 0; saved and
    restored like every setting."""
    facts = HostFacts(ra_links=("eth0", "eth1"))
    observed = HostState((Sysctl("net.ipv6.conf.eth0.accept_ra", "1"), Sysctl("net.ipv6.conf.eth1.accept_ra", "0"),
                          Sysctl("net.ipv6.conf.all.forwarding", "0")), facts)
    got = lines(diff_host(desired_host(config("dual"), 1450, observed), observed))
    assert "~ sysctl net.ipv6.conf.eth0.accept_ra=1 -> net.ipv6.conf.eth0.accept_ra=2" in got
    assert not any("eth1" in l for l in got)
    # An IPv4-only cluster does not touch IPv6 at all.
    assert not any("ipv6" in l for l in lines(diff_host(desired_host(config(), 1450, observed), observed)))
    # Converged (accept_ra 2, saved 1) even after the RA route expired; teardown restores 1.
    saved = HostFacts(saved=(Sysctl("net.ipv6.conf.eth0.accept_ra", "1"),))
    have = HostState(converged(config("dual")).objects + (Sysctl("net.ipv6.conf.eth0.accept_ra", "2"),), saved)
    assert diff_host(desired_host(config("dual"), 1450, have), have) == []
    assert "~ sysctl net.ipv6.conf.eth0.accept_ra=2 -> net.ipv6.conf.eth0.accept_ra=1" in \
        lines(diff_host(desired_host(config("dual"), 1450, have, True), have))


@pytest.mark.parametrize("underlay,tunnel,expect", [("ipv4", "vxlan", 1450), ("ipv6", "vxlan", 1430),
                                                    ("ipv4", "gre", 1458), ("ipv6", "gre", 1438)])
def test_pod_mtu_follows_the_underlay_family(underlay, tunnel, expect):
    cfg = config("dual", underlay=underlay)
    cfg = dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, tunnel=tunnel))

    class Host:   # the underlay interface's MTU, as the host layer reads it
        def underlay_mtu(self):
            return 1500
    assert Reconciler(cfg, None, None, Host()).pod_mtu() == expect
    assert Reconciler(dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, mtu=1300)),
                      None, None, Host()).pod_mtu() == 1300


def test_cni_conflist_dual_stack_ranges_and_routes():
    data = json.loads(cni.render(IPv4Network("10.244.3.0/24"), 1430, IPv6Network("fd00:10:244:3::/64")))
    ipam = data["plugins"][0]["ipam"]
    assert ipam["ranges"] == [[{"subnet": "10.244.3.0/24", "rangeStart": "10.244.3.2", "gateway": "10.244.3.1"}],
                              [{"subnet": "fd00:10:244:3::/64", "rangeStart": "fd00:10:244:3::2",
                                "gateway": "fd00:10:244:3::1"}]]
    assert ipam["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    assert data["plugins"][0]["mtu"] == 1430
    # IPv4-only: exactly the file earlier versions wrote
    assert cni.render(IPv4Network("10.244.3.0/24"), 1450) == cni.render(IPv4Network("10.244.3.0/24"), 1450, None)
    assert json.loads(cni.render(IPv4Network("10.244.3.0/24"), 1450))["plugins"][0]["ipam"]["routes"] == \
        [{"dst": "0.0.0.0/0"}]


def test_masquerade_ruleset_per_family_in_one_inet_table():
    rules = nft.masquerade_ruleset(["10.244.0.0/16", "fd00:10:244::/56"], "kbr0")
    assert rules.count("table inet ovs_mesh") == 1
    assert "ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade" in rules
    assert "ip6 saddr fd00:10:244::/56 ip6 daddr != fd00:10:244::/56 masquerade" in rules
    assert 'oifname "kbr0" icmpv6 type nd-redirect drop' in rules
    assert 'comment "ovs-mesh masquerade 10.244.0.0/16 fd00:10:244::/56 no-redirects"' in rules
    only = nft.masquerade_ruleset([], "kbr0")
    assert "masquerade" not in only.replace("ovs-mesh masquerade", "") and "nd-redirect drop" in only


def test_antispoof_ruleset_ipv6():
    spoof = nft.antispoof_ruleset("10.244.1.0/24,fd00:10:244:1::/64", f"10.244.1.1,fd00:10:244:1::1,{LL}",
                                  "obr0", "kbr0")
    pod = 'meta ibrname "kbr0" iifname != "obr0"'
    for rule in ("ip saddr != 10.244.1.0/24 drop", "ip saddr 10.244.1.1 drop",
                 "ip6 saddr != { ::, fe80::/10, fd00:10:244:1::/64 } drop",
                 f"ip6 saddr {{ fd00:10:244:1::1, {LL} }} drop",
                 "ip6 saddr { ::, fe80::/10 } meta l4proto != ipv6-icmp drop",
                 # NA target outside fd00:10:244:1::/64 and not link-local
                 "icmpv6 type nd-neighbor-advert @th,64,64 != 0xfd00001002440001 @th,64,10 != 0x3fa drop",
                 "icmpv6 type nd-neighbor-advert @th,64,128 0xfd000010024400010000000000000001 drop",
                 "icmpv6 type { nd-router-advert, nd-redirect } drop"):
        assert f"{pod} {rule}\n" in spoof, rule
    assert "ether type { ip, arp } drop" not in spoof
    v6only = nft.antispoof_ruleset("fd00:10:244:1::/64", "fd00:10:244:1::1", "obr0", "kbr0", scoped=False)
    assert 'iifname != "obr0" ether type { ip, arp } drop' in v6only and "ip saddr" not in v6only
    # IPv4-only: the rules earlier versions wrote, nothing about IPv6
    assert "ip6" not in nft.antispoof_ruleset("10.244.1.0/24", "10.244.1.1", "obr0", "kbr0")


def test_kbr0_link_local_is_the_eui64_of_its_mac():
    assert link_local("0a:58:0a:f4:01:01") == IPv6Address(LL)
    assert gateway_mac(IPv6Address("fd00:10:244:1::1")) == "0a:58:ff:44:00:10"
    # every node's kbr0 its own MAC (a bridge drops frames from its own address: ND across nodes)
    macs = {gateway_mac(IPv6Address(f"fd00:10:244:{k:x}::1")) for k in range(256)}
    assert len(macs) == 256
