"""IPv6 and dual-stack through the tunnels, proven with ofproto/trace against real OVS.

One sandbox OVS for the module (node-1; peers node-2 and node-3) with an underlay of
both families on br-phy, so that every case is one `apply` of another config:
every mode (flow, port) x tunnel (vxlan, gre, geneve) with a dual-stack cluster over
an IPv4 underlay and an IPv6-only cluster over an IPv6 underlay.  A user would check:
- an IPv6 packet to node-3's pod leaves for node-3 (flow mode: set tun_dst or
  tun_ipv6_dst; port mode: node-3's port), and so does a neighbour solicitation
  for it (from kbr0's link-local source it leaves with the gateway6 source);
- from node-2 only node-2's subnet6 gets in, and only from node-2 (an unknown
  tunnel source drops);
- from LOCAL a foreign ipv6_src drops;
- IPv4 in the dual cluster goes the same way as in an IPv4-only one; a converged node plans no change.
"""
import json
import os
import re

import pytest

from ovs_mesh.ovs.desired import peer_port_name
from tests.helpers import base_config_v6, sandbox_ovs, wait_for
from tests.sandbox.test_apply import apply_ok, cli, ofport, trace

V4 = {"node-2": "192.168.56.12", "node-3": "192.168.56.13"}
V6 = {"node-2": "fd00:56::12", "node-3": "fd00:56::13"}
POD = {1: "fd00:10:244:1::", 2: "fd00:10:244:2::", 3: "fd00:10:244:3::"}


@pytest.fixture(scope="module")
def dual_underlay():
    """node-1's sandbox OVS with 192.168.56.11/24 and fd00:56::11/64 on br-phy."""
    with sandbox_ovs(prefix="ovsm-v6dp-") as ovs:
        ovs.vsctl("add-br", "br-phy", "--", "set", "bridge", "br-phy", "datapath_type=dummy",
                  "--", "add-port", "br-phy", "phy0", "--", "set", "interface", "phy0", "type=dummy")
        ovs.appctl("netdev-dummy/ip4addr", "br-phy", "192.168.56.11/24")
        ovs.appctl("netdev-dummy/ip6addr", "br-phy", "fd00:56::11/64")
        ovs.appctl("ovs/route/add", "192.168.56.0/24", "br-phy")
        ovs.appctl("ovs/route/add", "fd00:56::/64", "br-phy")
        for i, name in enumerate(("node-2", "node-3")):
            ovs.appctl("tnl/neigh/set", "br-phy", V4[name], f"aa:55:aa:55:00:0{i}")
            ovs.appctl("tnl/neigh/set", "br-phy", V6[name], f"aa:55:aa:55:01:0{i}")
        yield ovs


def dropped(out):
    return out.rstrip().endswith("Datapath actions: drop")


def datapath(out):
    return out.split("Datapath actions:")[1]


class Node1:
    """The applied config and how to send a packet as LOCAL or as a peer."""

    def __init__(self, ovs, data, underlay):
        self.ovs, self.data, self.underlay = ovs, data, underlay
        self.mode, self.tunnel = data["cluster"]["mode"], data["cluster"]["tunnel"]
        self.addr = V6 if underlay == "ipv6" else V4

    def local(self, pkt):
        return trace(self.ovs, f"in_port=LOCAL,{pkt}")

    def from_peer(self, peer, pkt, tun_src=None):
        if self.mode == "flow":
            src = tun_src or self.addr[peer]
            tun = (f"tun_ipv6_src={src},tun_ipv6_dst=fd00:56::11" if self.underlay == "ipv6"
                   else f"tun_src={src},tun_dst=192.168.56.11")
            return trace(self.ovs, f"in_port=10,tun_id=0,{tun},{pkt}")
        return trace(self.ovs, f"in_port={ofport(self.ovs, peer_port_name(self.tunnel, peer))},{pkt}")

    def assert_to(self, out, peer):
        """The packet leaves through the tunnel, to `peer`'s underlay address."""
        assert "tnl_push" in out and f"dst={self.addr[peer]}," in datapath(out), out
        if self.mode == "flow":
            field = "tun_ipv6_dst" if self.underlay == "ipv6" else "tun_dst"
            assert f"set_field:{self.addr[peer]}->{field}" in out, out
        else:
            assert f"output:{ofport(self.ovs, peer_port_name(self.tunnel, peer))}" in out, out

    def assert_in(self, out):
        """The packet reaches LOCAL (kbr0) through table 30."""
        assert not dropped(out) and "30. " in out, out


def converge(ovs, data, underlay):
    """A fresh start (the previous case's tunnel port held the flow-mode ofport), then apply."""
    r = cli(ovs, data, "teardown")
    assert r.returncode == 0, r.stdout + r.stderr
    apply_ok(ovs, data)
    r = cli(ovs, data, "plan", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["changes"] == [], r.stdout + r.stderr
    return Node1(ovs, data, underlay)


CASES = [(m, t, f) for f in ("dual", "ipv6") for m in ("flow", "port") for t in ("vxlan", "gre", "geneve")]


@pytest.mark.parametrize("mode,tunnel,family", CASES, ids=[f"{f}-{m}-{t}" for m, t, f in CASES])
def test_ipv6_through_the_tunnels(dual_underlay, mode, tunnel, family):
    ovs = dual_underlay
    underlay = "ipv6" if family == "ipv6" else "ipv4"
    data = base_config_v6(3, family=family, underlay=underlay, tunnel=tunnel, mode=mode)
    data["local"]["ovsdb"] = ovs.remote
    n = converge(ovs, data, underlay)
    # to node-3's pod, from a pod and from the gateway (node -> pod)
    for src in (POD[1] + "5", POD[1] + "1"):
        n.assert_to(n.local(f"icmp6,ipv6_src={src},ipv6_dst={POD[3]}7"), "node-3")
    n.assert_to(n.local(f"tcp6,ipv6_src={POD[1]}5,ipv6_dst={POD[2]}7,tp_dst=80"), "node-2")
    # neighbour solicitation for node-3's pod: to node-3; from kbr0's link-local source with gateway6's
    ns = f"icmp6,icmpv6_type=135,ipv6_dst=ff02::1:ff00:7,nd_target={POD[3]}7"
    n.assert_to(n.local(f"{ns},ipv6_src={POD[1]}1"), "node-3")
    out = n.local(f"{ns},ipv6_src=fe80::1")
    n.assert_to(out, "node-3")
    assert f"set(ipv6(src={POD[1]}1))" in datapath(out), out
    # ... and from node-2: its pods' packets, its solicitations and advertisements get in
    n.assert_in(n.from_peer("node-2", f"icmp6,ipv6_src={POD[2]}5,ipv6_dst={POD[1]}7"))
    n.assert_in(n.from_peer("node-2", f"icmp6,icmpv6_type=135,ipv6_src={POD[2]}1,ipv6_dst=ff02::1:ff00:7,"
                                      f"nd_target={POD[1]}7"))
    n.assert_in(n.from_peer("node-2", f"icmp6,icmpv6_type=136,ipv6_src={POD[2]}5,ipv6_dst={POD[1]}1,"
                                      f"nd_target={POD[2]}5"))
    # drops: node-3's, our own, an outside and a link-local source from node-2
    for src in (POD[3] + "5", POD[1] + "9", "2001:db8::7", "fe80::2"):
        assert dropped(n.from_peer("node-2", f"icmp6,ipv6_src={src},ipv6_dst={POD[1]}7")), src
    if mode == "flow":   # an unknown tunnel source, with a source of node-2's subnet6
        stranger = "fd00:56::99" if underlay == "ipv6" else "192.168.56.99"
        assert dropped(n.from_peer("node-2", f"icmp6,ipv6_src={POD[2]}5,ipv6_dst={POD[1]}7", tun_src=stranger))
    # from LOCAL: a foreign source, other link-local ICMPv6 (router solicitation, MLD), DAD
    for pkt in (f"icmp6,ipv6_src={POD[2]}5,ipv6_dst={POD[3]}7", f"icmp6,ipv6_src=2001:db8::5,ipv6_dst={POD[3]}7",
                "icmp6,icmpv6_type=133,ipv6_src=fe80::1,ipv6_dst=ff02::2",
                "icmp6,icmpv6_type=143,ipv6_src=fe80::1,ipv6_dst=ff02::16",
                f"{ns},ipv6_src=::"):
        assert dropped(n.local(pkt)), pkt
    if family == "dual":   # IPv4 too, over the same tunnels
        n.assert_to(n.local("icmp,nw_src=10.244.1.5,nw_dst=10.244.3.7"), "node-3")
        n.assert_to(n.local("arp,arp_op=1,arp_spa=10.244.1.1,arp_tpa=10.244.3.7"), "node-3")
        assert dropped(n.local("icmp,nw_src=10.244.2.5,nw_dst=10.244.3.7"))
        n.assert_in(n.from_peer("node-2", "icmp,nw_src=10.244.2.5,nw_dst=10.244.1.5"))
        assert dropped(n.from_peer("node-2", "icmp,nw_src=10.244.3.5,nw_dst=10.244.1.5"))


def flows_of(ovs):
    return {re.sub(r"^\s+", "", line) for line in ovs.ofctl("--no-stats", "dump-flows", "obr0").splitlines()
            if "cookie=" in line}


@pytest.mark.parametrize("mode", ["flow", "port"])
def test_ipv4_flows_unchanged_in_a_dual_cluster(dual_underlay, mode):
    """The IPv4 rows OVS holds for a dual-stack cluster are those of the IPv4 cluster."""
    ovs = dual_underlay
    v4 = base_config_v6(3, mode=mode)
    for node in v4["nodes"]:
        node["subnet"] = node["subnet"][0]
    v4["cluster"]["cidr"] = "10.244.0.0/16"
    v4["local"]["ovsdb"] = ovs.remote
    converge(ovs, v4, "ipv4")
    before = flows_of(ovs)
    dual = base_config_v6(3, mode=mode)
    dual["local"]["ovsdb"] = ovs.remote
    converge(ovs, dual, "ipv4")
    after = flows_of(ovs)
    added = {f for f in after if re.search(r"(ipv6|icmp6),", f)}
    assert after - added == before and len(added) == 4 + 3 * 2


@pytest.mark.parametrize("mode,tunnel", [("flow", "vxlan"), ("port", "gre")])
def test_ipv4_cluster_over_ipv6_underlay(dual_underlay, mode, tunnel):
    """An IPv6 underlay carries an IPv4-only cluster: tun_ipv6_dst out, tun_ipv6_src in."""
    ovs = dual_underlay
    data = base_config_v6(3, mode=mode, tunnel=tunnel, underlay="ipv6")
    data["cluster"]["cidr"] = "10.244.0.0/16"
    for node in data["nodes"]:
        node["subnet"] = node["subnet"][0]
    data["local"]["ovsdb"] = ovs.remote
    n = converge(ovs, data, "ipv6")
    out = n.local("icmp,nw_src=10.244.1.5,nw_dst=10.244.3.7")
    n.assert_to(out, "node-3")
    assert "ipv6(src=fd00:56::11,dst=fd00:56::13," in datapath(out), out
    n.assert_in(n.from_peer("node-2", "icmp,nw_src=10.244.2.5,nw_dst=10.244.1.5"))
    assert dropped(n.from_peer("node-2", "icmp,nw_src=10.244.3.5,nw_dst=10.244.1.5"))
    if mode == "flow":
        assert dropped(n.from_peer("node-2", "icmp,nw_src=10.244.2.5,nw_dst=10.244.1.5", tun_src="fd00:56::99"))


def packets(path):
    """The frames a dummy port has sent so far (its tx_pcap file)."""
    from scapy.all import rdpcap

    return list(rdpcap(path)) if os.path.exists(path) and os.path.getsize(path) > 24 else []


def test_real_packets_ipv6_underlay_solicitation_and_echo(dual_underlay):
    """Real frames through the dummy datapath (IPv6-only cluster, IPv6 underlay, flow mode):
    kbr0's solicitation from its link-local address leaves with the gateway6 source and a
    valid ICMPv6 checksum; node-2's echo over the IPv6 underlay reaches LOCAL, the same
    from an unknown underlay address does not."""
    from scapy.all import UDP, Ether, ICMPv6EchoRequest, ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, IPv6, raw
    from scapy.layers.vxlan import VXLAN

    ovs = dual_underlay
    data = base_config_v6(3, family="ipv6", tunnel="vxlan", mode="flow")
    data["local"]["ovsdb"] = ovs.remote
    converge(ovs, data, "ipv6")
    out_pcap, in_pcap = os.path.join(ovs.rundir, "phy0-v6.pcap"), os.path.join(ovs.rundir, "obr0-v6.pcap")
    ovs.vsctl("set", "Interface", "phy0", f"options:tx_pcap={out_pcap}")
    ovs.vsctl("set", "Interface", "obr0", f"options:tx_pcap={in_pcap}")
    kbr0 = "02:00:00:00:00:01"
    ns = (Ether(src=kbr0, dst="33:33:ff:00:00:07") / IPv6(src="fe80::1", dst="ff02::1:ff00:7", hlim=255)
          / ICMPv6ND_NS(tgt=f"{POD[3]}7") / ICMPv6NDOptSrcLLAddr(lladdr=kbr0))
    ovs.appctl("netdev-dummy/receive", "obr0", raw(ns).hex())
    sent = wait_for(lambda: [p for p in packets(out_pcap) if VXLAN in p], 10, "the solicitation on phy0")
    outer, inner = sent[0][IPv6], sent[0][VXLAN][IPv6]
    assert (outer.src, outer.dst) == ("fd00:56::11", "fd00:56::13")
    assert inner.src == f"{POD[1]}1" and inner.hlim == 255 and inner[ICMPv6ND_NS].tgt == f"{POD[3]}7"
    check = IPv6(raw(IPv6(src=inner.src, dst=inner.dst, hlim=255) / ICMPv6ND_NS(tgt=inner.tgt)
                     / ICMPv6NDOptSrcLLAddr(lladdr=kbr0)))
    assert inner[ICMPv6ND_NS].cksum == check[ICMPv6ND_NS].cksum
    # The same source asking for a node-2 pod: to node-2.  The cached datapath flow must name the
    # target: OVS gives a kernel datapath a megaflow's ND fields only when the flows matched the
    # ICMPv6 type and code exactly, and a cached flow without them sent every solicitation from
    # this source where the first one went (the userspace datapath forwards right either way:
    # what it shows as its datapath flows is what a kernel datapath would have been given).
    ns2 = (Ether(src=kbr0, dst="33:33:ff:00:00:07") / IPv6(src="fe80::1", dst="ff02::1:ff00:7", hlim=255)
           / ICMPv6ND_NS(tgt=f"{POD[2]}7") / ICMPv6NDOptSrcLLAddr(lladdr=kbr0))
    ovs.appctl("netdev-dummy/receive", "obr0", raw(ns2).hex())
    sent = wait_for(lambda: [p for p in packets(out_pcap) if VXLAN in p][1:], 10, "the second solicitation on phy0")
    assert (sent[0][IPv6].dst, sent[0][VXLAN][ICMPv6ND_NS].tgt) == ("fd00:56::12", f"{POD[2]}7")
    cached = [f for f in ovs.appctl("dpctl/dump-flows").splitlines() if "icmpv6(type=135" in f]
    assert cached and all("nd(target=" in f for f in cached), cached
    phy_mac = ovs.vsctl("get", "Interface", "br-phy", "mac_in_use").strip().strip('"')
    # a stranger first: frames of one port are handled in order, so when node-2's is out, the
    # stranger's has been decided
    for n, src in enumerate(("fd00:56::99", "fd00:56::12")):
        echo = (Ether(src="aa:55:aa:55:01:00", dst=phy_mac) / IPv6(src=src, dst="fd00:56::11")
                / UDP(sport=40000 + n, dport=4789) / VXLAN(vni=0)
                / Ether(src="02:00:00:00:00:02", dst=kbr0) / IPv6(src=f"{POD[2]}5", dst=f"{POD[1]}7")
                / ICMPv6EchoRequest(id=n + 1))
        ovs.appctl("netdev-dummy/receive", "phy0", raw(echo).hex())
    got = wait_for(lambda: [p for p in packets(in_pcap) if ICMPv6EchoRequest in p], 10, "node-2's echo on obr0")
    trace_stranger = trace(ovs, "in_port=10,tun_id=0,tun_ipv6_src=fd00:56::99,tun_ipv6_dst=fd00:56::11,"
                                f"icmp6,ipv6_src={POD[2]}5,ipv6_dst={POD[1]}7")
    assert dropped(trace_stranger)
    assert [p[ICMPv6EchoRequest].id for p in packets(in_pcap) if ICMPv6EchoRequest in p] == [2], got
