"""Anti-spoofing as an attacker would try it: nobody on the overlay speaks for someone else.

A 3-node namespace lab per mode and tunnel type (one pod per node).  Crafted
packets (scapy) and a capture in the receiving pod (AF_PACKET, so before any
check of the receiving kernel) count what arrives; every attack is sent
interleaved with a legitimate twin that must arrive, so a 0 means "filtered",
never "the path was down".

- a pod sends as another node's pod, as a pod of the receiver's node, as 203.0.113.7;
- a peer node puts a forged inner source on raw VXLAN/GRE/Geneve packets; a
  rogue underlay address and another cluster's VNI send legitimate-looking ones;
- a pod on node-3, and node-3 itself, send ARP replies claiming a node-2 pod's
  address to node-1: node-1's neighbour entry must not change;
- and every legitimate path of `lab check` still passes, as do a service
  (DNAT, with and without kube-proxy's masquerade) and masqueraded traffic.
"""
from __future__ import annotations

import ipaddress
import json
import secrets
import select
import subprocess
import sys

import pytest

from ovs_mesh.lab.nodes import UNDERLAY_BRIDGE
from ovs_mesh.lab.record import LabState
from ovs_mesh.lab.topology import read_yaml
from tests.helpers import REPO, wait_for
from tests.lab.conftest import need_lab_tools, ovs_mesh

CASES = [(m, t) for m in ("flow", "port") for t in ("vxlan", "gre", "geneve")]
PORT = 9999                 # the capture's UDP port (nothing listens: only counted)
ROUNDS = 10                 # each attack is sent this many times per batch
BATCHES = 5                 # batches sent at most, until the legitimate twin arrived ROUNDS times
OUTSIDE = "203.0.113.7"     # TEST-NET-3: outside the cluster


def ns_run(ns, *args, check=True, input=None, timeout=60):
    p = subprocess.run(["ip", "netns", "exec", ns, *args], capture_output=True, text=True, input=input,
                       cwd=REPO, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{ns}: {' '.join(args)}: exit {p.returncode}: {p.stderr}{p.stdout}")
    return p.stdout


def mac(ns, dev):
    return json.loads(ns_run(ns, "ip", "-j", "link", "show", dev))[0]["address"]


def neigh(ns, ip):
    """node's neighbour entry for ip on kbr0: lladdr or None."""
    out = json.loads(ns_run(ns, "ip", "-j", "neigh", "show", "to", ip, "dev", "kbr0") or "[]")
    return out[0].get("lladdr") if out else None


class Lab:
    def __init__(self, name, mode, tunnel):
        self.name, self.mode, self.tunnel = name, mode, tunnel
        st = LabState.load(name)
        subnets = {e["name"]: ipaddress.ip_network(e["subnet"]) for e in read_yaml(st.topology_path)["nodes"]}
        self.node = {}
        for n in st.nodes:
            pod = next(p for p in st.pods if p["node"] == n.name)
            net = subnets[n.name]
            self.node[n.k] = {"ns": n.ns, "ip": n.ip, "subnet": net, "gw": str(net.network_address + 1),
                                 "other": str(net.network_address + 200),   # in the subnet, not a pod
                                 "pod": pod["ip"], "pod_ns": pod["ns"], "pod_mac": mac(pod["ns"], "eth0"),
                                 "kbr0_mac": mac(n.ns, "kbr0")}

    def sniffer(self, ns, token, stop_src):
        p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "tests.lab.attack", "sniff",
                              "eth0", str(PORT), token, stop_src, str(ROUNDS), "30"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        ready, _, _ = select.select([p.stdout], [], [], 20)
        line = p.stdout.readline().strip() if ready else ""
        if line != "ready":
            p.kill()
            raise AssertionError(f"sniffer in {ns} did not start: {line} {p.stderr.read() if p.poll() else ''}")
        return p

    def send(self, ns, packets, repeat=ROUNDS, interval=0.05):
        job = {"packets": packets, "repeat": repeat, "interval": interval}
        out = ns_run(ns, sys.executable, "-m", "tests.lab.attack", "send", input=json.dumps(job), timeout=120)
        assert json.loads(out)["sent"] == repeat * len(packets)

    def capture(self, victim_ns, stop_src, sender_ns, packets):
        """Send `packets` ROUNDS times from sender_ns, again (up to BATCHES times) until the
        legitimate one (from stop_src) has arrived ROUNDS times; counts by source at victim_ns's
        eth0.  On a loaded machine the lab's userspace datapaths lose a share of any burst, the
        legitimate packets' too: sending until those arrived keeps "0 forged delivered" meaning
        "filtered", and every batch is one more try for the forged ones."""
        sniff = self.sniffer(victim_ns, self.token, stop_src)
        try:
            for _ in range(BATCHES):
                self.send(sender_ns, packets)
                try:
                    sniff.wait(timeout=2)   # it ends once stop_src arrived ROUNDS times
                    break
                except subprocess.TimeoutExpired:
                    continue
            out, err = sniff.communicate(timeout=40)
        finally:
            if sniff.poll() is None:
                sniff.kill()
                sniff.wait()
        lines = out.strip().splitlines()
        assert lines, f"the sniffer in {victim_ns} ended without counts (exit {sniff.returncode}): {err[-2000:]}"
        return json.loads(lines[-1])

    @property
    def token(self):
        return f"omse-{self.name}"

    def udp(self, src, dst):
        return {"kind": "udp", "src": src, "dst": dst, "port": PORT, "payload": self.token}

    def tunnel_pkt(self, inner, outer_src, vni=0, eth_dst=None):
        n1 = self.node[1]
        return {"kind": "tunnel", "tunnel": self.tunnel, "vni": vni, "outer_src": outer_src,
                "outer_dst": n1["ip"], "eth_src": "02:00:00:00:03:99", "eth_dst": eth_dst or n1["pod_mac"],
                "inner": inner, "gre_key": self.mode == "flow" or vni != 0}


@pytest.fixture(scope="module", params=CASES, ids=[f"{m}-{t}" for m, t in CASES])
def lab(request):
    need_lab_tools()
    mode, tunnel = request.param
    name = "s" + secrets.token_hex(2)
    try:
        ovs_mesh("lab", "up", "--name", name, "--nodes", "3", "--tunnel", tunnel, "--mode", mode,
                 "--pods-per-node", "1")
        yield Lab(name, mode, tunnel)
    finally:
        ovs_mesh("lab", "down", "--name", name, check=False)


def test_every_legitimate_path_still_passes(lab):
    p = ovs_mesh("lab", "check", "--name", lab.name, "--json", check=False)
    report = json.loads(p.stdout)
    bad = [c for c in report["pod_to_pod"] + report["node_to_pod"] + report["tcp"] if not c["ok"]]
    assert p.returncode == 0 and report["summary"]["ok"], bad
    assert report["summary"]["pod_to_pod"] == 6 and report["summary"]["node_to_pod"] == 6


def test_a_pod_cannot_send_as_someone_else(lab):
    n1, n2, n3 = lab.node[1], lab.node[2], lab.node[3]
    spoofed = [n3["pod"], n2["other"], OUTSIDE]   # another node's pod, the receiver's node, outside
    packets = [lab.udp(src, n2["pod"]) for src in spoofed] + [lab.udp(n1["pod"], n2["pod"])]
    counts = lab.capture(n2["pod_ns"], n1["pod"], n1["pod_ns"], packets)
    assert counts.get(n1["pod"], 0) >= ROUNDS // 2, counts        # the path works
    assert {src: counts.get(src, 0) for src in spoofed} == {src: 0 for src in spoofed}, counts


def test_a_peer_cannot_send_for_another_node(lab):
    """Raw tunnel packets from node-3's namespace to node-1's underlay address."""
    n1, n2, n3 = lab.node[1], lab.node[2], lab.node[3]
    rogue, other_vni = "192.168.213.99", str(n3["subnet"].network_address + 201)
    forged = {n2["pod"]: n3["ip"], OUTSIDE: n3["ip"], n1["gw"]: n3["ip"],   # inner source not node-3's
              n3["other"]: rogue}                                             # outer source no node has
    packets = [lab.tunnel_pkt(lab.udp(src, n1["pod"]), outer) for src, outer in forged.items()]
    packets.append(lab.tunnel_pkt(lab.udp(other_vni, n1["pod"]), n3["ip"], vni=4242))   # another cluster
    packets.append(lab.tunnel_pkt(lab.udp(n3["pod"], n1["pod"]), n3["ip"]))            # legitimate twin
    counts = lab.capture(n1["pod_ns"], n3["pod"], n3["ns"], packets)
    assert counts.get(n3["pod"], 0) >= ROUNDS // 2, counts
    blocked = [*forged, other_vni]
    assert {src: counts.get(src, 0) for src in blocked} == {src: 0 for src in blocked}, counts


def test_arp_claims_for_another_nodes_address_change_nothing(lab):
    n1, n2, n3 = lab.node[1], lab.node[2], lab.node[3]
    victim, attacker = n2["pod"], n3["pod"]
    for ip in (victim, attacker):   # node-1 knows both pods
        wait_for(lambda: subprocess.run(["ip", "netns", "exec", n1["ns"], "ping", "-c1", "-W1", ip],
                                        capture_output=True).returncode == 0, 10, f"node-1 -> {ip}")
    assert neigh(n1["ns"], victim) == n2["pod_mac"]

    def reply(psrc, hwsrc):
        return {"kind": "arp", "iface": "eth0", "eth_dst": n1["kbr0_mac"], "hwsrc": hwsrc, "psrc": psrc,
                "hwdst": n1["kbr0_mac"], "pdst": n1["gw"]}
    try:
        # a pod on node-3 claims node-2's pod (2 replies a second); its twin claims its own
        # address with its own MAC, which node-1 must learn again after being told another:
        # the ARP path works (a made-up MAC would not leave the pod: the per-pod guard)
        ns_run(n1["ns"], "ip", "neigh", "replace", attacker, "lladdr", "02:00:00:00:03:01", "dev", "kbr0",
               "nud", "stale")
        lab.send(n3["pod_ns"], [reply(victim, n3["pod_mac"]), reply(attacker, n3["pod_mac"])], repeat=8,
                 interval=0.5)
        wait_for(lambda: neigh(n1["ns"], attacker) == n3["pod_mac"], 5, "node-1 learns the legitimate claim")
        assert neigh(n1["ns"], victim) == n2["pod_mac"]
        # node-3 itself, by raw tunnel packets: the same
        fake2 = "02:00:00:00:03:02"
        packets = [lab.tunnel_pkt(reply(victim, "02:00:00:00:03:66"), n3["ip"], eth_dst=n1["kbr0_mac"]),
                   lab.tunnel_pkt(reply(attacker, fake2), n3["ip"], eth_dst=n1["kbr0_mac"])]
        lab.send(n3["ns"], packets, repeat=8, interval=0.5)
        wait_for(lambda: neigh(n1["ns"], attacker) == fake2, 5, "node-1 learns the legitimate claim")
        assert neigh(n1["ns"], victim) == n2["pod_mac"]
    finally:   # node-1 forgets the made-up MAC of node-3's pod
        ns_run(n1["ns"], "ip", "neigh", "del", attacker, "dev", "kbr0", check=False)


ECHO = """
import socket, sys, time
ip, tok = sys.argv[1], sys.argv[2]
end = time.monotonic() + 10
while time.monotonic() < end:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        try:
            s.sendto(tok.encode(), (ip, 7777))
            seen, _, t = s.recvfrom(2048)[0].decode().partition(" ")
        except OSError:
            continue
        if t == tok:
            print(seen)
            break
"""


def test_services_and_masquerade_keep_working(lab):
    """kube-proxy's DNAT (the client's source kept), its masquerade (source: the gateway),
    node -> service, and pod -> outside the cluster (ovs-mesh's own masquerade)."""
    n1, n2 = lab.node[1], lab.node[2]
    server = subprocess.Popen(["ip", "netns", "exec", n2["pod_ns"], sys.executable, "-m", "ovs_mesh.lab.probe",
                               "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    # kube-proxy's rules, in nftables: DNAT of two service IPs to node-2's pod; masquerade of
    # what it marks (here: all of service .11, and sources outside the cluster range, as
    # kube-proxy does with --cluster-cidr); the node reaches services by its uplink route.
    nft = f"""table ip omse_svc {{
  chain pre {{ type nat hook prerouting priority -100;
    ip daddr {{ 10.96.0.10, 10.96.0.11 }} udp dport 7777 dnat to {n2["pod"]}; }}
  chain out {{ type nat hook output priority -100; ip daddr 10.96.0.10 udp dport 7777 dnat to {n2["pod"]}; }}
  chain post {{ type nat hook postrouting priority 100;
    ct original ip daddr 10.96.0.11 masquerade;
    ct status dnat ct original ip saddr != 10.244.0.0/16 masquerade; }}
}}
"""
    try:
        assert select.select([server.stdout], [], [], 20)[0] and server.stdout.readline().strip() == "ready"
        ns_run(n1["ns"], "nft", "-f", "-", input=nft)
        ns_run(n1["ns"], "ip", "route", "add", "10.96.0.0/12", "dev", UNDERLAY_BRIDGE)

        def seen(ns, service):
            return ns_run(ns, sys.executable, "-c", ECHO, service, lab.token).strip()
        assert seen(n1["pod_ns"], "10.96.0.10") == n1["pod"]     # DNAT only: no NAT of the source
        assert seen(n1["pod_ns"], "10.96.0.11") == n1["gw"]      # DNAT + masquerade: the gateway
        assert seen(n1["ns"], "10.96.0.10") == n1["gw"]          # node -> service: masqueraded
        # pod -> another node's underlay address: masqueraded by ovs-mesh, not through the overlay
        ns_run(n1["pod_ns"], "ping", "-c1", "-W2", n2["ip"])
    finally:
        ns_run(n1["ns"], "nft", "delete", "table", "ip", "omse_svc", check=False)
        ns_run(n1["ns"], "ip", "route", "del", "10.96.0.0/12", check=False)
        server.stdin.close()
        server.wait(timeout=10)
