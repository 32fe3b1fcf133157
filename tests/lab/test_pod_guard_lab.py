"""The per-pod source guard, as an attacker on the same node would try it.

A dual-stack lab (2 nodes, flow mode, VXLAN) with 3 pods on node-1: A attacks, B is the
neighbour A pretends to be, C receives on A's own node; D receives on node-2.  Crafted
frames (scapy) and captures in the receiving pods (AF_PACKET, before their kernel's checks)
count what arrives, every attack interleaved with a legitimate twin that must arrive.

- A sends as B, IPv4 and IPv6: routed (to the gateway's MAC, for D) and at L2 (to C), with
  its own MAC and with B's: 0 arrive at C and at D;
- A's ARP replies and unsolicited neighbour advertisements claiming B's addresses change
  neither node-1's nor C's neighbour entry for B (the same messages for A's own addresses do);
- IPv6 DAD still works: C trying B's IPv6 address sees it as a duplicate;
- `lab check` still passes;
- a pod deleted and made again gets another address and reaches D at once, and its old
  veth's entries are gone;
- a pod made while the guard's table did not exist (as before the guard) is guarded after
  its node's agent restarts.
"""
from __future__ import annotations

import json
import secrets
import subprocess
import sys

import pytest

from ovs_mesh.lab import pods as lab_pods
from ovs_mesh.lab.record import LabState
from ovs_mesh.pod_guard import table as guard_table
from tests.helpers import REPO, wait_for
from tests.lab.conftest import need_lab_tools, ovs_mesh
from tests.lab.test_antispoof_lab import PORT, ROUNDS, Lab, mac, ns_run

BOGUS = "02:00:00:00:0a:01"


def neigh(ns: str, ip: str, dev: str) -> str | None:
    out = json.loads(ns_run(ns, "ip", "-j", "neigh", "show", "to", ip, "dev", dev) or "[]")
    return out[0].get("lladdr") if out else None


def guarded(node_ns: str) -> dict:
    """veth -> GuardedPod in the node's guard table."""
    p = subprocess.run(["ip", "netns", "exec", node_ns, sys.executable, "-c",
                        "import json; from ovs_mesh.pod_guard import table; t = table.read(); "
                        "print(json.dumps(None if t is None else [[p.port, p.mac, list(p.ips)] for p in t[1]]))"],
                       capture_output=True, text=True, cwd=REPO, check=True)
    found = json.loads(p.stdout)
    return {} if found is None else {port: (m, tuple(ips)) for port, m, ips in found}


class GuardLab(Lab):
    """The lab as the attacks see it (capture and send: the anti-spoofing tests' `Lab`)."""

    def __init__(self, name: str):
        self.name = name
        self.st = LabState.load(name)
        by = {(p["k"], p["j"]): p for p in self.st.pods}
        self.n1, self.n2 = self.st.nodes
        self.a, self.b, self.c, self.d = (self.pod(by[k]) for k in ((1, 1), (1, 2), (1, 3), (2, 1)))
        self.kbr0 = mac(self.n1.ns, "kbr0")

    @staticmethod
    def pod(p: dict) -> dict:
        v4 = lab_pods.address_of(p, "ipv4")
        v6 = lab_pods.address_of(p, "ipv6")
        return {**p, "v4": v4, "v6": v6, "mac": mac(p["ns"], "eth0")}

    def frame(self, eth_src: str, eth_dst: str, src: str, dst: str) -> dict:
        return {"kind": "l2udp", "iface": "eth0", "eth_src": eth_src, "eth_dst": eth_dst, "src": src, "dst": dst,
                "port": PORT, "payload": self.token}


@pytest.fixture(scope="module")
def lab():
    need_lab_tools()
    name = "g" + secrets.token_hex(2)
    try:
        ovs_mesh("lab", "up", "--name", name, "--nodes", "2", "--pods-per-node", "3", "--ip-family", "dual")
        yield GuardLab(name)
    finally:
        ovs_mesh("lab", "down", "--name", name, check=False)


def test_lab_check_passes_with_the_guard(lab):
    p = ovs_mesh("lab", "check", "--name", lab.name, "--json", check=False)
    report = json.loads(p.stdout)
    assert p.returncode == 0 and report["summary"]["ok"], p.stdout[-2000:]
    assert set(guarded(lab.n1.ns)) and len(guarded(lab.n1.ns)) == 3


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_a_pod_cannot_send_as_its_neighbour(lab, family):
    a, b, c, d = lab.a, lab.b, lab.c, lab.d
    # on its own node, at L2 (its MAC, then the neighbour's)
    packets = [lab.frame(a["mac"], c["mac"], b[family], c[family]), lab.frame(b["mac"], c["mac"], b[family], c[family]),
               lab.frame(a["mac"], c["mac"], a[family], c[family])]
    counts = lab.capture(c["ns"], a[family], a["ns"], packets)
    assert counts.get(a[family], 0) >= ROUNDS // 2, counts          # the path works
    assert counts.get(b[family], 0) == 0, counts
    # to another node, routed by the gateway
    packets = [lab.frame(a["mac"], lab.kbr0, b[family], d[family]), lab.frame(b["mac"], lab.kbr0, b[family], d[family]),
               lab.frame(a["mac"], lab.kbr0, a[family], d[family])]
    counts = lab.capture(d["ns"], a[family], a["ns"], packets)
    assert counts.get(a[family], 0) >= ROUNDS // 2, counts
    assert counts.get(b[family], 0) == 0, counts


def test_arp_and_na_claims_for_the_neighbour_change_nothing(lab):
    a, b, c = lab.a, lab.b, lab.c
    n1 = lab.n1.ns
    for ip in (b["v4"], b["v6"], a["v4"], a["v6"]):   # the node and C know both pods
        ns_run(n1, "ping", "-c1", "-W2", ip)
        ns_run(c["ns"], "ping", "-c1", "-W2", ip)
    assert neigh(n1, b["v4"], "kbr0") == b["mac"] and neigh(c["ns"], b["v6"], "eth0") == b["mac"]
    # the twins: C's entries for A made wrong, which A's own claims must repair
    ns_run(c["ns"], "ip", "neigh", "replace", a["v4"], "lladdr", BOGUS, "dev", "eth0", "nud", "stale")
    ns_run(c["ns"], "ip", "neigh", "replace", a["v6"], "lladdr", BOGUS, "dev", "eth0", "nud", "stale")

    def arp(psrc, pdst, eth_dst):
        return {"kind": "arp", "iface": "eth0", "eth_dst": eth_dst, "hwsrc": a["mac"], "psrc": psrc,
                "hwdst": eth_dst, "pdst": pdst}

    def na(target):
        return {"kind": "na", "iface": "eth0", "eth_src": a["mac"], "src": target, "target": target}

    gw = a["result"]["ips"][0]["gateway"]
    packets = [arp(b["v4"], gw, lab.kbr0), arp(b["v4"], c["v4"], c["mac"]), na(b["v6"]),
               arp(a["v4"], c["v4"], c["mac"]), na(a["v6"])]
    lab.send(a["ns"], packets, repeat=6, interval=0.5)
    wait_for(lambda: neigh(c["ns"], a["v4"], "eth0") == a["mac"], 5, "C learns A's own ARP claim")
    wait_for(lambda: neigh(c["ns"], a["v6"], "eth0") == a["mac"], 5, "C learns A's own NA")
    assert neigh(n1, b["v4"], "kbr0") == b["mac"]
    assert neigh(n1, b["v6"], "kbr0") in (b["mac"], None)
    assert neigh(c["ns"], b["v4"], "eth0") == b["mac"]
    assert neigh(c["ns"], b["v6"], "eth0") == b["mac"]


def test_ipv6_dad_still_finds_a_duplicate(lab):
    c, b = lab.c, lab.b
    free = b["v6"].rsplit(":", 1)[0] + ":c8"   # in the subnet, no pod's
    # The bridge plugin turns DAD off in the pods it makes; a pod may turn it on again.
    ns_run(c["ns"], "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=1")

    def state(ip: str) -> str:
        line = [x for x in ns_run(c["ns"], "ip", "-6", "addr", "show", "dev", "eth0").splitlines() if f" {ip}/" in x]
        return line[0] if line else ""
    try:
        ns_run(c["ns"], "ip", "addr", "add", f"{b['v6']}/64", "dev", "eth0")
        ns_run(c["ns"], "ip", "addr", "add", f"{free}/64", "dev", "eth0")
        wait_for(lambda: "dadfailed" in state(b["v6"]), 10, "C's DAD seeing B's address in use")
        wait_for(lambda: "tentative" not in state(free), 10, "a free address passing DAD")
        assert "dadfailed" not in state(free)
    finally:
        for ip in (b["v6"], free):
            ns_run(c["ns"], "ip", "addr", "del", f"{ip}/64", "dev", "eth0", check=False)
        ns_run(c["ns"], "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")


def test_a_pod_made_again_works_at_once_with_another_address(lab):
    st = LabState.load(lab.name)
    old = next(p for p in st.pods if (p["k"], p["j"]) == (1, 3))
    old_port = next(port for port, (m, _) in guarded(lab.n1.ns).items() if m == lab.c["mac"])
    lab_pods.del_pod(st, lab.n1, old)
    assert old_port not in guarded(lab.n1.ns)
    new = lab_pods.add_pod(st, lab.n1, 4)
    st.save()
    assert set(new["ips"]).isdisjoint(old["ips"]), (new["ips"], old["ips"])
    ns_run(new["ns"], "ping", "-c1", "-W2", lab.d["v4"])
    ns_run(new["ns"], "ping", "-6", "-c1", "-W2", lab.d["v6"])


def test_a_pod_made_before_the_guard_is_guarded_after_an_agent_restart(lab):
    n2 = lab.n2
    ns_run(n2.ns, "nft", "delete", "table", "bridge", guard_table.rules.TABLE)
    # a pod as made before the guard: the bridge plugin only
    ns = f"{lab.name}-n2p9"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        conf = lab_pods.plugin_configs(n2)[0]
        env = lab_pods._env("ADD", f"{lab.name}-pre", ns)
        p = subprocess.run(["ip", "netns", "exec", n2.ns, lab_pods.plugin_path(conf["type"])], input=json.dumps(conf),
                           env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        result = json.loads(p.stdout)
        e = {"ns": ns, "v4": result["ips"][0]["address"].split("/")[0], "mac": mac(ns, "eth0")}
        ovs_mesh("lab", "restart-agent", "--name", lab.name, "--node", n2.name)
        wait_for(lambda: any(m == e["mac"] for m, _ in guarded(n2.ns).values()), 30, "the agent guarding it")
        d, c = lab.d, lab.a   # e pretends to be D (its neighbour) towards a pod on node-1
        kbr0 = mac(n2.ns, "kbr0")
        packets = [lab.frame(e["mac"], kbr0, d["v4"], c["v4"]), lab.frame(e["mac"], kbr0, e["v4"], c["v4"])]
        counts = lab.capture(c["ns"], e["v4"], e["ns"], packets)
        assert counts.get(e["v4"], 0) >= ROUNDS // 2 and counts.get(d["v4"], 0) == 0, counts
        conf["prevResult"] = result
        subprocess.run(["ip", "netns", "exec", n2.ns, lab_pods.plugin_path(conf["type"])], input=json.dumps(conf),
                       env={**env, "CNI_COMMAND": "DEL"}, capture_output=True, text=True, timeout=60)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
