"""WireGuard on the kernel datapath, switched on by editing the agents' config as an operator would
(the file source: each VM makes its key pair with `ovs-mesh wireguard-key`, the public keys go into
every node's `nodes[].wireguard_public_key`), and off again.

Switched on in VXLAN, flow mode; then GRE in flow mode and Geneve in port mode (check.sh under the
underlay capture each), and VXLAN again.  check.sh passes in full; a
capture on every VM's underlay during it sees no plaintext tunnel packet, only udp/51820; VXLAN
packets forged from the host on the underlay, with node-2's underlay address or its WireGuard
address as outer source and a pod as inner destination, are not delivered (counted in the pod; the
filter table's counter rises); the agent killed loses no packet and leaves the device as it was; the
private key shows nowhere (status, plan, metrics, journal); a node whose key the others do not hold
(node-3, with a key node-1 and node-2 were not given) exchanges not one pod packet with them
(counted in the receiving pods); node-3's key rotated (`wireguard-key --rotate`, the new public key
into every config) under a 0.1 s pod ping, the gap measured; a 0.1 s ping node-1 -> node-2 from
before check.sh through those steps until WireGuard's own rekey (every 2 minutes), the gap measured.
Not here: the Kubernetes annotation (tests/kube), iperf3 and RTT side by side (bench/encryption.py).
The module leaves the VMs as it found them (VXLAN, flow mode, no encryption, no key file, the agents
converged), also on failure.
"""
from __future__ import annotations

import json
import os
import re

from ovs_mesh.encryption.wireguard import new_private_key, public_key
from tests.helpers import wait_for
from tests.vm.crypto import (
    OVS_MESH,
    PING_LOG2,
    TIMES,
    WIREGUARD,
    agent_killed,
    check_under_capture,
    forged_delivered,
    isolated,
    ping_start,
    ping_stop,
    pods,
    set_and_converge,
    shown,
    stop_background,
    switch_under_ping,
    timed,
    warm_up_pods,
)

__all__ = ["pods"]   # the fixture, imported
WG_KEY = "/var/lib/ovs-mesh/wireguard/private.key"
WG_DEV = "ovsm-wg0"
WG_OFF = {"cluster.encryption": None, "cluster.tunnel": "vxlan", "cluster.mode": "flow"}


def wg_drops(lab, node: str) -> int:
    """Packets our WireGuard filter dropped (tunnel packets not from the device)."""
    out = lab.ssh(node, "nft list table inet ovs_mesh_wg 2>/dev/null", check=False).stdout
    return sum(int(n) for n in re.findall(r"counter packets (\d+)", out))


def wg_device_id(lab, node: str) -> str:
    """The device's ifindex and its peers' keys and endpoints (what a restart must not change)."""
    return lab.ssh(node, f"cat /sys/class/net/{WG_DEV}/ifindex; wg show {WG_DEV} endpoints | sort").stdout


def handshake(lab, node: str, peer_key: str) -> float:
    """NODE's latest handshake with the peer of PEER_KEY (Unix time, 0: none)."""
    out = lab.ssh(node, f"wg show {WG_DEV} latest-handshakes").stdout
    return next((float(t) for k, t in (line.split() for line in out.splitlines() if line.strip()) if k == peer_key),
                0.0)


def tunnel_inside(lab, pods: dict, tunnel: str, mode: str) -> None:
    """cluster.tunnel TUNNEL and cluster.mode MODE under WireGuard: pod traffic between every pair of
    VMs, then check.sh in full with the underlay captured: no plaintext tunnel packet."""
    what = f"{tunnel}, {mode} mode, inside WireGuard"
    set_and_converge(lab, {"cluster.tunnel": tunnel, "cluster.mode": mode}, f"cluster.tunnel {tunnel}, "
                     f"cluster.mode {mode} (WireGuard)")
    with timed(f"5w. {what}: pod traffic between every pair of VMs"):
        warm_up_pods(lab, pods, f"WireGuard ({tunnel}, {mode})")
    plain, wg = check_under_capture(lab, pods, what, WIREGUARD)
    TIMES[f"5w.  plaintext tunnel packets ({what})"] = plain
    TIMES[f"5w.  WireGuard packets ({what})"] = wg
    assert plain == 0 and wg > 0, (what, plain, wg)


def test_5_wireguard(vm_lab, pods):
    lab = vm_lab
    nodes = lab.read_config("node-1")["nodes"]
    subnet2 = next(n["subnet"] for n in nodes if n["name"] == "node-2")
    subnet2 = subnet2 if isinstance(subnet2, str) else subnet2[0]
    switched_off = False
    try:
        with timed("5w. a WireGuard key pair made on every VM (ovs-mesh wireguard-key)"):
            keys = {n: p.stdout.strip() for n, p in lab.on_all(f"{OVS_MESH} wireguard-key").items()}
        for node in lab.nodes:
            mode = lab.ssh(node, f"stat -c '%a %U' {WG_KEY}").stdout.split()
            assert mode == ["600", "root"], (node, mode)
        # the topology file gets every node's public key, then the mode is switched on under a pod ping
        with_keys = [{**n, "wireguard_public_key": keys[n["name"]]} for n in nodes]
        set_and_converge(lab, {"nodes": with_keys}, "nodes[].wireguard_public_key")
        ping_start(lab, pods["node-1"], pods["node-2"])
        set_and_converge(lab, {"cluster.encryption": "wireguard"}, "cluster.encryption: wireguard (VXLAN)")
        with timed("5w. first pod packet -> a WireGuard handshake with every peer"):
            warm_up_pods(lab, pods, "WireGuard")
            for node in lab.nodes:
                wait_for(lambda node=node: lab.ssh(node, f"wg show {WG_DEV} latest-handshakes | awk '$2 > 0' | wc -l"
                                                   ).stdout.strip() == str(len(lab.nodes) - 1),
                         timeout=60, interval=1, what=f"{node}: a handshake with each peer")
        gap, lost = ping_stop(lab)
        TIMES["5w.  switching WireGuard on: longest pod traffic gap (s)"] = gap
        TIMES["5w.  switching WireGuard on: pings lost (0.1 s interval)"] = lost
        for node in lab.nodes:
            st = json.loads(lab.ssh(node, f"{OVS_MESH} status --json").stdout)
            assert {p["name"]: p["encryption"]["state"] for p in st["peers"]} == \
                dict.fromkeys((n for n in lab.nodes if n != node), "up"), st["peers"]

        # Other tunnels inside WireGuard: GRE in flow mode, Geneve in port mode (its per-peer ports).
        tunnel_inside(lab, pods, "gre", "flow")
        tunnel_inside(lab, pods, "geneve", "port")
        set_and_converge(lab, {"cluster.tunnel": "vxlan", "cluster.mode": "flow"}, "VXLAN, flow mode again (WireGuard)")

        # WireGuard rekeys a session every 2 minutes by itself (REKEY_AFTER_TIME), seamlessly: a 0.1 s
        # ping from node-1 to node-2 runs from here (about a minute after their first
        # handshake) through the steps below, none of which changes anything between those two, until
        # node-1 has made a new handshake with node-2.
        since = float(lab.ssh("node-1", "date +%s.%N").stdout)
        ping_start(lab, pods["node-1"], pods["node-2"], PING_LOG2)

        plain, wg = check_under_capture(lab, pods, "vxlan inside WireGuard", WIREGUARD)
        TIMES["5w.  plaintext tunnel packets sent during check.sh (WireGuard)"] = plain
        TIMES["5w.  WireGuard packets (udp/51820) seen during check.sh"] = wg
        assert plain == 0 and wg > 0, (plain, wg)

        with timed("5w. forged VXLAN packets, WireGuard"):
            forged, drops = forged_delivered(lab, pods, subnet2, wg_drops, "vxlan")
            forged_wg, drops_wg = forged_delivered(lab, pods, subnet2, wg_drops, "vxlan",
                                                   outer_src="100.64.0.3")
        TIMES["5w.  forged VXLAN delivered, outer source node-2's underlay address (of 20)"] = forged
        TIMES["5w.  forged VXLAN delivered, outer source node-2's WireGuard address (of 20)"] = forged_wg
        TIMES["5w.  packets the WireGuard filter dropped meanwhile"] = drops + drops_wg
        assert forged == 0 and forged_wg == 0 and drops > 0, (forged, forged_wg, drops, drops_wg)

        agent_killed(lab, pods, "WireGuard", lambda: wg_device_id(lab, "node-1"))

        private = lab.ssh("node-1", f"cat {WG_KEY}").stdout.strip()
        assert not shown(lab, private), "the private key is shown by status, plan, the metrics or the journal"

        # A node holding a key the others were not given: node-1 and node-2 are told another key
        # for node-3 (as after node-3's key was replaced by someone else).
        bogus = public_key(new_private_key(os.urandom(32)))
        told = [{**n, "wireguard_public_key": bogus if n["name"] == "node-3" else keys[n["name"]]} for n in nodes]
        with timed("5w. node-1, node-2: another key for node-3 -> converged"):
            lab.wait_converged(lab.set_config({"nodes": told}, ["node-1", "node-2"]), nodes=["node-1", "node-2"])
        with timed("5w. node-3 (a key the others do not hold) <-> node-1, node-2: pod packets"):
            isolated(lab, pods, "node-3", "5w.  node-3 with a key the others do not hold")
            lab.ssh("node-1", f"ip netns exec {pods['node-1']['ns']} ping -c 3 -W 2 {pods['node-2']['ip']}")

        # node-3's key rotated under a pod ping from node-1: the new public key into every config at once.
        ping_start(lab, pods["node-1"], pods["node-3"])
        with timed("5w. node-3: wireguard-key --rotate"):
            new3 = lab.ssh("node-3", f"{OVS_MESH} wireguard-key --rotate").stdout.strip()
        assert new3 != keys["node-3"]
        keys["node-3"] = new3
        with_keys = [{**n, "wireguard_public_key": keys[n["name"]]} for n in nodes]
        set_and_converge(lab, {"nodes": with_keys}, "node-3's new public key in every config")
        warm_up_pods(lab, pods, "WireGuard after node-3's rotation")
        gap, lost = ping_stop(lab)
        TIMES["5w.  node-3's key rotated: longest pod traffic gap node-1 -> node-3 (s)"] = gap
        TIMES["5w.  node-3's key rotated: pings lost (0.1 s interval)"] = lost
        pub = lab.ssh("node-1", f"wg show {WG_DEV} peers").stdout.split()
        assert new3 in pub and bogus not in pub, pub

        with timed("5w. node-1 <-> node-2: a new WireGuard handshake (its rekey) under the ping"):
            wait_for(lambda: handshake(lab, "node-1", keys["node-2"]) > since, timeout=180, interval=2,
                     what="node-1's next handshake with node-2 (WireGuard rekeys every 2 minutes)")
        gap, lost = ping_stop(lab, PING_LOG2)
        TIMES["5w.  WireGuard rekey node-1 <-> node-2: longest pod traffic gap (s)"] = gap
        TIMES["5w.  WireGuard rekey node-1 <-> node-2: pings lost (0.1 s interval)"] = lost

        switched_off = True
        gap, lost = switch_under_ping(lab, pods, WG_OFF, "cluster.encryption: none again (from WireGuard)")
        for node in lab.nodes:   # the key stays (WireGuard on again keeps the public key); teardown removes it
            assert lab.ssh(node, f"test -f {WG_KEY}", check=False).returncode == 0, node
        TIMES["5w.  switching WireGuard off: longest pod traffic gap (s)"] = gap
        TIMES["5w.  switching WireGuard off: pings lost (0.1 s interval)"] = lost
    finally:
        stop_background(lab)
        if not switched_off:
            set_and_converge(lab, WG_OFF, "cluster.encryption: none (after a failure)")
        set_and_converge(lab, {"nodes": nodes}, "nodes without WireGuard keys")
        lab.on_all(f"rm -f {WG_KEY}", check=False)
    for node in lab.nodes:
        left = lab.ssh(node, f"ip -br link show {WG_DEV} 2>&1; nft list table inet ovs_mesh_wg 2>&1", check=False)
        assert "does not exist" in left.stdout and "No such file" in left.stdout, left.stdout


