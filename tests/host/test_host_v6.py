"""The host stage for IPv6-only and dual-stack clusters in a real
node namespace: kbr0 gets gateway6 at once (no DAD wait), the cluster route
per family with our protocol, IPv6 forwarding (RA-learned routes kept),
masquerade of both families in the one `inet ovs_mesh` table (an old
`ip ovs_mesh` table is replaced), the IPv6 anti-spoofing rules, the CNI
ranges; converged on the second run; teardown removes exactly ours."""
from __future__ import annotations

import json
import os
import sys

import pytest

from ovs_mesh.host import ROUTE_PROTO
from tests.helpers import wait_for
from tests.host.conftest import GATEWAY, GATEWAY6, NODE_IP6, SUBNET6, in_ns
from tests.host.test_host import ok, ping


def addrs(node, dev, family) -> list[dict]:
    out = json.loads(node.sh("ip", family, "-j", "addr", "show", "dev", dev, check=False).stdout or "[]")
    return [a for l in out for a in l.get("addr_info", [])]


def global_addrs(node, dev, family) -> list[str]:
    return [f"{a['local']}/{a['prefixlen']}" for a in addrs(node, dev, family) if a.get("scope") == "global"]


def our_routes(node, family) -> list[dict]:
    return json.loads(node.sh("ip", family, "-j", "route", "show", "proto", str(ROUTE_PROTO)).stdout)


def table(node, family) -> str | None:
    p = node.sh("nft", "list", "table", family, "ovs_mesh", check=False)
    return p.stdout if p.returncode == 0 else None


@pytest.mark.parametrize("family", ["dual", "ipv6"])
def test_apply_converges_and_teardown_removes_exactly_ours(node6, family):
    # What is there before: an RA-learned route (its link must keep accepting RAs), a route
    # and a table of someone else's, and the IPv4-only table an older ovs-mesh wrote.
    node6.sh("ip", "-6", "route", "add", "2001:db8:1::/64", "via", "fe80::1", "dev", node6.underlay, "proto", "ra")
    node6.sh("ip", "-6", "route", "add", "fd00:99::/64", "via", "fd00:77::2")
    node6.sh("nft", "add", "table", "inet", "other")
    legacy = ("table ip ovs_mesh { chain postrouting { type nat hook postrouting priority srcnat; policy accept; "
              "ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 "
              'masquerade comment "ovs-mesh masquerade 10.244.0.0/16"; }; }')
    node6.sh("nft", legacy)
    accept_ra = f"net.ipv6.conf.{node6.underlay}.accept_ra"
    before = {s: node6.sysctl(s) for s in ("net.ipv6.conf.all.forwarding", "net.ipv4.ip_forward", accept_ra)}
    assert before == {"net.ipv6.conf.all.forwarding": "0", "net.ipv4.ip_forward": "0", accept_ra: "1"}

    plan = ok(node6.ctl(family, "apply")).stdout.splitlines()
    assert "- masquerade 10.244.0.0/16 (nft table ip ovs_mesh)" in plan

    # kbr0: gateway6 usable at once (NODAD: never tentative), IPv4 only in a dual-stack cluster
    v6 = [a for a in addrs(node6, "kbr0", "-6") if a.get("scope") == "global"]
    assert [(a["local"], a["prefixlen"]) for a in v6] == [(GATEWAY6, 64)]
    assert v6[0].get("nodad") is True and not v6[0].get("tentative")
    assert global_addrs(node6, "kbr0", "-4") == ([f"{GATEWAY}/24"] if family == "dual" else [])
    assert ping(node6.ns, GATEWAY6, timeout=5)

    r6 = our_routes(node6, "-6")
    assert [(r["dst"], r["dev"], r.get("prefsrc")) for r in r6] == [("fd00:10:244::/56", "kbr0", GATEWAY6)]
    r4 = our_routes(node6, "-4")
    assert [(r["dst"], r["dev"]) for r in r4] == ([("10.244.0.0/16", "kbr0")] if family == "dual" else [])

    assert node6.sysctl("net.ipv6.conf.all.forwarding") == "1"
    assert node6.sysctl("net.ipv6.conf.kbr0.disable_ipv6") == "0"
    assert node6.sysctl(accept_ra) == "2"     # forwarding on: 1 would ignore router advertisements
    assert node6.sysctl("net.ipv4.ip_forward") == ("1" if family == "dual" else "0")

    inet = table(node6, "inet")
    assert "ip6 saddr fd00:10:244::/56 ip6 daddr != fd00:10:244::/56 masquerade" in inet
    assert 'oifname "kbr0" icmpv6 type nd-redirect drop' in inet
    assert ("ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade" in inet) is (family == "dual")
    assert table(node6, "ip") is None   # the old table: replaced
    spoof = table(node6, "bridge")
    assert f"ip6 saddr != {{ ::, {SUBNET6}, fe80::/10 }} drop" in spoof   # as nft lists it
    assert ("ether type { ip, arp } drop" in spoof) is (family == "ipv6")

    ipam = json.load(open(node6.cni_conf))["plugins"][0]["ipam"]
    assert [r[0]["subnet"] for r in ipam["ranges"]] == (["10.244.1.0/24"] if family == "dual" else []) + [SUBNET6]
    assert json.load(open(node6.cni_conf))["plugins"][0]["mtu"] == 1450

    assert ok(node6.ctl(family, "apply")).stdout == ""    # converged
    assert ok(node6.ctl(family, "plan")).stdout == ""

    ok(node6.ctl(family, "teardown"))
    assert node6.sh("ip", "link", "show", "kbr0", check=False).returncode != 0
    assert our_routes(node6, "-6") == [] and our_routes(node6, "-4") == []
    assert {s: node6.sysctl(s) for s in before} == before
    assert table(node6, "inet") is None and table(node6, "bridge") is None and table(node6, "ip") is None
    assert not os.path.exists(node6.cni_conf)
    # not ours: untouched
    assert node6.sh("nft", "list", "table", "inet", "other", check=False).returncode == 0
    routes = node6.sh("ip", "-6", "route").stdout
    assert "fd00:99::/64 via fd00:77::2" in routes and "2001:db8:1::/64 via fe80::1" in routes
    assert global_addrs(node6, node6.underlay, "-6") == ["fd00:77::11/64"]
    assert ok(node6.ctl(family, "teardown")).stdout == ""


def test_moved_ipv6_address_is_announced(node6):
    """After an address moves to another link (the netdev underlay), an
    unsolicited neighbour advertisement makes the neighbours learn the new MAC."""
    assert ping(node6.peer_ns, NODE_IP6)
    node6.sh("ip", "link", "set", node6.underlay, "address", "02:00:5e:00:53:77")
    node6.sh(sys.executable, "-c", f"from ovs_mesh.host.netlink import Netlink\nNetlink().announce('{node6.underlay}', "
                                   f"'{NODE_IP6}')", timeout=60)

    def peer_mac():
        out = json.loads(in_ns(node6.peer_ns, "ip", "-6", "-j", "neigh", "show", NODE_IP6).stdout)
        return out and out[0].get("lladdr") == "02:00:5e:00:53:77"
    wait_for(peer_mac, timeout=10, what="the peer's neighbour entry to follow the new MAC")


def test_cli_dual_stack_file_apply_and_teardown(node):
    """The whole command line on a node with OVS (netdev): a dual-stack file in the
    contract's shape is planned, applied (host side of both families), converged
    and torn down."""
    node.config["cluster"]["cidr"] = "10.244.0.0/16,fd00:10:244::/56"
    for i, n in enumerate(node.config["nodes"], start=1):
        n["subnet"] = [n["subnet"], f"fd00:10:244:{i}::/64"]
    node.rewrite()
    plan = ok(node.cli("plan")).stdout
    assert "+ address fd00:10:244:1::1/64 dev kbr0" in plan
    assert "+ route fd00:10:244::/56 dev kbr0 src fd00:10:244:1::1" in plan
    ok(node.cli("apply"))
    assert [f"{a['local']}/{a['prefixlen']}" for a in addrs(node, "kbr0", "-6") if a.get("scope") == "global"] \
        == [f"{GATEWAY6}/64"]
    assert global_addrs(node, "kbr0", "-4") == [f"{GATEWAY}/24"]
    assert "ip6 saddr fd00:10:244::/56" in table(node, "inet")
    assert node.sysctl("net.ipv6.conf.all.forwarding") == "1"
    assert ping(node.ns, GATEWAY6, timeout=5)
    assert "no changes" in ok(node.cli("plan")).stdout
    ok(node.cli("teardown"))
    assert our_routes(node, "-6") == [] and table(node, "inet") is None
    assert node.sysctl("net.ipv6.conf.all.forwarding") == "0"
