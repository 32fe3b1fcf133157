"""Anti-spoofing and the tunnel key, proven with ofproto/trace against real OVS.

Node-1 (this sandbox) with peers node-2 and node-3.  A packet enters the
overlay only with a source its sender owns: from LOCAL (kbr0) this node's
subnet, gateway included; from a peer that peer's subnet; for IP and ARP.
With `cluster.vni` the tunnel key is set on the way out and required on the
way in (flow mode by flows, port mode by each port's key option).
"""
import pytest

from ovs_mesh.ovs.desired import peer_port_name
from tests.sandbox.test_apply import apply_ok, cli, ofport, sandbox_config

N2, N3 = "192.168.56.12", "192.168.56.13"


def trace(ovs, flow):
    return ovs.appctl("ofproto/trace", "obr0", flow)


def dropped(out):
    return out.rstrip().endswith("Datapath actions: drop")


def datapath(out):
    return out.split("Datapath actions:")[1]


def from_peer(ovs, mode, tunnel, peer, pkt, vni=0):
    """A packet arriving from `peer` (node-2 or node-3) over the tunnel."""
    ip = {"node-2": N2, "node-3": N3}[peer]
    if mode == "flow":
        return trace(ovs, f"in_port=10,tun_id={vni},tun_src={ip},tun_dst=192.168.56.11,{pkt}")
    return trace(ovs, f"in_port={ofport(ovs, peer_port_name(tunnel, peer))},{pkt}")


CASES = [(m, t) for m in ("flow", "port") for t in ("vxlan", "gre", "geneve")]


@pytest.mark.parametrize("mode,tunnel", CASES, ids=[f"{m}-{t}" for m, t in CASES])
def test_sources_are_checked_both_ways(underlay, mode, tunnel):
    ovs = underlay
    apply_ok(ovs, sandbox_config(ovs, 3, tunnel=tunnel, mode=mode))
    # from the local side: pods and the gateway (node -> pod traffic) enter ...
    for src in ("10.244.1.5", "10.244.1.1"):
        out = trace(ovs, f"in_port=LOCAL,icmp,nw_src={src},nw_dst=10.244.3.7")
        assert "tnl_push" in out and f"dst={N3}" in datapath(out), out
        out = trace(ovs, f"in_port=LOCAL,arp,arp_op=1,arp_spa={src},arp_tpa=10.244.3.7")
        assert f"dst={N3}" in datapath(out), out
    # ... nobody else's address does: another node's pod, an outside address
    for src in ("10.244.2.5", "10.244.3.9", "203.0.113.7"):
        assert dropped(trace(ovs, f"in_port=LOCAL,icmp,nw_src={src},nw_dst=10.244.3.7")), src
        assert dropped(trace(ovs, f"in_port=LOCAL,arp,arp_op=2,arp_spa={src},arp_tpa=10.244.3.7")), src
    # from node-2: only node-2's subnet, by IP and by ARP
    ok = from_peer(ovs, mode, tunnel, "node-2", "icmp,nw_src=10.244.2.5,nw_dst=10.244.1.5")
    assert not dropped(ok) and "30. ip,nw_dst=10.244.1.0/24" in ok, ok
    ok = from_peer(ovs, mode, tunnel, "node-2", "arp,arp_op=2,arp_spa=10.244.2.5,arp_tpa=10.244.1.1")
    assert not dropped(ok), ok
    for src in ("10.244.3.5", "10.244.1.9", "203.0.113.7"):   # node-3's, ours, outside
        assert dropped(from_peer(ovs, mode, tunnel, "node-2", f"icmp,nw_src={src},nw_dst=10.244.1.5")), src
        assert dropped(from_peer(ovs, mode, tunnel, "node-2",
                                 f"arp,arp_op=2,arp_spa={src},arp_tpa=10.244.1.1")), src
    # IPv6 or any other ethertype: not part of the overlay
    assert dropped(trace(ovs, "in_port=LOCAL,ipv6,ipv6_src=fe80::1,ipv6_dst=fe80::2"))
    # the CLI's trace follows the same checks
    r = cli(ovs, sandbox_config(ovs, 3, tunnel=tunnel, mode=mode), "trace", "10.244.2.5", "10.244.1.5")
    assert r.returncode == 0 and not dropped(r.stdout), r.stdout + r.stderr


PUSH = {"vxlan": "vxlan(flags=0x8000000,vni={:#x})", "geneve": "geneve(vni={:#x})",
        "gre": "key={:#x}"}


@pytest.mark.parametrize("mode,tunnel", CASES, ids=[f"{m}-{t}" for m, t in CASES])
def test_vni_is_set_and_required(underlay, mode, tunnel):
    ovs = underlay
    vni = 4660
    data = sandbox_config(ovs, 3, tunnel=tunnel, mode=mode, vni=vni)
    apply_ok(ovs, data)
    out = trace(ovs, "in_port=LOCAL,icmp,nw_src=10.244.1.5,nw_dst=10.244.2.7")
    assert PUSH[tunnel].format(vni) in datapath(out), out
    if mode == "flow":
        pkt = "icmp,nw_src=10.244.2.5,nw_dst=10.244.1.5"
        assert not dropped(from_peer(ovs, mode, tunnel, "node-2", pkt, vni=vni))
        for other in (0, vni + 1):   # another cluster on the same underlay
            assert dropped(from_peer(ovs, mode, tunnel, "node-2", pkt, vni=other)), other
        r = cli(ovs, data, "trace", "10.244.2.5", "10.244.1.5")
        assert r.returncode == 0 and not dropped(r.stdout), r.stdout
    else:   # OVS itself keeps other keys off the per-peer port
        port = peer_port_name(tunnel, "node-2")
        assert ovs.vsctl("get", "Interface", port, "options:key").strip().strip('"') == str(vni)
    assert cli(ovs, data, "plan").stdout.strip() == "plan: no changes (converged)"


def test_default_vni_keeps_todays_wire_format(underlay):
    ovs = underlay
    apply_ok(ovs, sandbox_config(ovs, 3, tunnel="vxlan"))
    out = trace(ovs, "in_port=LOCAL,icmp,nw_src=10.244.1.5,nw_dst=10.244.2.7")
    assert "vxlan(flags=0x8000000,vni=0x0)" in datapath(out), out
