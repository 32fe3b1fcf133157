"""Per-peer health with real packets: 4 lab nodes, flow and port mode.  The underlay
between node-1 and node-3 is blocked (nftables in the underlay namespace): node-1 and
node-3 report each other unreachable within 3 probe intervals, in `status` and in the
metrics, while node-2 and node-4 stay reachable; unblocked, reachable again within
one interval.  20 ms of delay towards node-2 shows in node-1's RTT to node-2 only.
Full-size packets lost between node-1 and node-3 (a simulated MTU black hole) make
node-3 `mtu-blackhole` on node-1, the others stay reachable.  An IPv6-only lab over
an IPv6 underlay reports one blocked pair the same way (IPv6 probes, ICMPv6); a
dual-stack lab over an IPv4 underlay probes both families and reports a pair whose
tunnelled packets of one family are dropped unreachable in that family only.  In stp
mode the spanning tree carries a blocked pair's packets through another node (the
probes say reachable, as pods see it), and a node cut off from all others is reported
by each of them.

A full pass (SIGHUP) fills in when each peer last sent anything (its receive flows'
packet counts).

Timing bounds: a verdict changes at the end of a round (answer or timeout), and the
agent writes the health file `status` reads at most one second later; the bounds
below allow that second."""
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request  # noqa: F401  (used inside the node namespaces, see scrape)

import pytest

from ovs_mesh.health.record import peer_view, read_health
from ovs_mesh.lab import agents, build
from ovs_mesh.lab.nodes import ul_ns
from ovs_mesh.lab.topology import read_yaml, write_yaml
from tests.helpers import need, run_cli, wait_for
from tests.lab.conftest import need_lab_tools

INTERVAL = 2.0
FAILURES = 2
WRITE = 1.0      # the health file is written at most this long after a verdict changes
BLOCK = "ovs_mesh_test_block"
ETHERTYPE = {"ipv4": "0x0800", "ipv6": "0x86dd"}
DELAY_LINE = os.path.join(os.path.dirname(__file__), "delay.py")


def make_lab(mode: str, ip_family: str = "ipv4"):
    """A 4-node lab probing every INTERVAL seconds; `lab down` afterwards, whatever happened."""
    need_lab_tools()
    need("nft", root=True)
    name = "hl" + secrets.token_hex(2)
    try:
        st = build.up(name, nodes=4, tunnel="vxlan", mode=mode, pods_per_node=0, progress=lambda s: None,
                      ip_family=ip_family)
        topo = read_yaml(st.topology_path)
        topo["health"] = {"interval": INTERVAL, "failures": FAILURES}
        write_yaml(st.topology_path, topo)
        yield st
    finally:
        build.down(name, progress=lambda s: None)


@pytest.fixture(params=["flow", "port"])
def lab(request):
    yield from make_lab(request.param)


FAMILY_LABS = {"ipv6": ("ipv6",), "dual": ("ipv4", "ipv6")}   # lab up --ip-family -> the pods' families


@pytest.fixture(params=list(FAMILY_LABS), ids=["ipv6-over-ipv6", "dual-over-ipv4"])
def lab_family(request):
    """Flow mode; an IPv6-only lab has an IPv6 underlay, a dual-stack one an IPv4 underlay."""
    for st in make_lab("flow", request.param):
        yield st, FAMILY_LABS[request.param]


@pytest.fixture
def lab_stp():
    yield from make_lab("stp")


def node(st, k):
    return st.nodes[k - 1]


def views(st, k) -> dict:
    """What node-k's agent last wrote of each peer (the health file status reads)."""
    rec = read_health(node(st, k).rundir)
    now = time.time()
    return {name: peer_view(rec, name, now) for name in (rec or {}).get("peers", {})} if rec else {}


def states(st, k) -> dict:
    return {name: v["state"] for name, v in views(st, k).items()}


def status(st, k) -> dict:
    n = node(st, k)
    p = run_cli("--config", st.topology_path, "--local", n.local, "status", "--json", netns=n.ns)
    assert p.stdout, p.stderr
    return json.loads(p.stdout)


def status_text(st, k) -> str:
    n = node(st, k)
    return run_cli("--config", st.topology_path, "--local", n.local, "status", netns=n.ns).stdout


def only_pair_unreachable(st) -> dict:
    """node-1 and node-3 report each other unreachable, all else is reachable; node-1's `status --json`."""
    assert states(st, 1) == {"node-2": "reachable", "node-3": "unreachable", "node-4": "reachable"}
    assert states(st, 3) == {"node-1": "unreachable", "node-2": "reachable", "node-4": "reachable"}
    assert all_reachable(st, 2) and all_reachable(st, 4)
    d = status(st, 1)
    assert d["health"]["summary"] == "1 of 3 peers unreachable: node-3"
    return d


def scrape(st, k) -> str:
    code = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9476/metrics').read().decode())"
    return subprocess.run(["ip", "netns", "exec", node(st, k).ns, sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=30, check=True).stdout


def nft(st, script: str) -> None:
    subprocess.run(["ip", "netns", "exec", ul_ns(st.name), "nft", "-f", "-"], input=script, text=True,
                   check=True, capture_output=True, timeout=30)


def drop_between(st, a: int, b: int, extra: str = "") -> None:
    """Drop the underlay packets between node a and node b (`extra`: only those that match it too)."""
    ip_a, ip_b = node(st, a).ip, node(st, b).ip
    ip = "ip6" if ":" in ip_a else "ip"
    nft(st, f"table bridge {BLOCK} {{\n chain forward_c {{ type filter hook forward priority 0; policy accept;\n"
            f"  {ip} saddr {ip_a} {ip} daddr {ip_b} {extra} drop\n  {ip} saddr {ip_b} {ip} daddr {ip_a} {extra} drop\n"
            " }\n}\n")


def unblock(st) -> None:
    subprocess.run(["ip", "netns", "exec", ul_ns(st.name), "nft", "delete", "table", "bridge", BLOCK],
                   capture_output=True, timeout=30)


def all_reachable(st, k, peers=3):
    s = states(st, k)
    return len(s) == peers and set(s.values()) == {"reachable"} and s


def test_blocked_pair_unblocked_delay_and_mtu_blackhole(lab):
    st = lab
    for k in (1, 2, 3, 4):
        wait_for(lambda: all_reachable(st, k), timeout=INTERVAL * 3 + 10, what=f"node-{k}: every peer reachable")

    # -- passive evidence: a full pass (SIGHUP) sees the peers' receive flows count the answers
    os.kill(agents.pid_of(node(st, 1)), signal.SIGHUP)
    wait_for(lambda: all(v["since_sent_seconds"] is not None for v in views(st, 1).values()),
             timeout=10 + INTERVAL, what="node-1 knows when each peer last sent it a packet")

    # -- block node-1 <-> node-3 on the underlay
    try:
        t0 = time.monotonic()
        drop_between(st, 1, 3)
        wait_for(lambda: states(st, 1).get("node-3") == "unreachable" and states(st, 3).get("node-1") == "unreachable",
                 timeout=3 * INTERVAL + WRITE, what="node-1 and node-3 report each other unreachable")
        print(f"{st.params['mode']}: blocked pair reported after {time.monotonic() - t0:.1f}s")
        d = only_pair_unreachable(st)
        by_name = {p["name"]: p for p in d["peers"]}
        assert by_name["node-3"]["probe"]["state"] == "unreachable"
        assert by_name["node-2"]["probe"]["rtt_ms"] is not None
        text = status_text(st, 1)
        assert "peers: 1 of 3 peers unreachable: node-3" in text
        metrics = scrape(st, 1)
        assert 'ovs_mesh_unreachable_peers{family="ipv4"} 1.0' in metrics
        assert 'ovs_mesh_peer_reachable{family="ipv4",peer="node-3"} 0.0' in metrics
        assert 'ovs_mesh_peer_reachable{family="ipv4",peer="node-2"} 1.0' in metrics
        if st.params["mode"] == "port":   # BFD keeps its own verdict beside the probe's
            wait_for(lambda: {p["name"]: p["health"] for p in status(st, 1)["peers"]}["node-3"] != "up",
                     timeout=15, what="BFD on node-1's port to node-3 down")
    finally:
        unblock(st)
    t0 = time.monotonic()
    wait_for(lambda: states(st, 1).get("node-3") == "reachable" and states(st, 3).get("node-1") == "reachable",
             timeout=INTERVAL * 1.1 + WRITE + 1.0, what="node-1 and node-3 reachable again")
    print(f"{st.params['mode']}: reachable again after {time.monotonic() - t0:.1f}s")

    # -- 20 ms of delay on node-2's underlay (towards node-2)
    ul = ul_ns(st.name)

    def ul_run(*args):
        subprocess.run(["ip", "-n", ul, *args], check=True, capture_output=True, timeout=30)

    relay = None
    try:
        ul_run("link", "add", "hd2a", "type", "veth", "peer", "name", "hd2b")
        for dev in ("hd2a", "hd2b"):
            subprocess.run(["ip", "netns", "exec", ul, "ethtool", "-K", dev, "tx", "off"], capture_output=True)
        ul_run("link", "set", "n2", "nomaster")
        ul_run("link", "set", "hd2a", "master", "br0", "up")
        ul_run("link", "set", "hd2b", "up")
        relay = subprocess.Popen(["ip", "netns", "exec", ul, sys.executable, DELAY_LINE, "hd2b", "n2", "0.020"],
                                 stdout=subprocess.PIPE, text=True)
        assert relay.stdout.readline().strip() == "ready"
        wait_for(lambda: (views(st, 1).get("node-2", {}).get("rtt_ms") or 0) >= 20,
                 timeout=2 * INTERVAL * 1.1 + WRITE + 5, what="node-1's RTT to node-2 at least 20 ms")
        v = views(st, 1)
        print(f"{st.params['mode']}: RTT node-1 -> node-2 {v['node-2']['rtt_ms']} ms, "
              f"-> node-4 {v['node-4']['rtt_ms']} ms")
        assert v["node-4"]["rtt_ms"] < 20 and v["node-3"]["rtt_ms"] < 20
    finally:
        if relay is not None:
            relay.kill()
            relay.wait()
        subprocess.run(["ip", "-n", ul, "link", "del", "hd2a"], capture_output=True)
        subprocess.run(["ip", "-n", ul, "link", "set", "n2", "master", "br0"], capture_output=True)

    # -- full-size packets lost between node-1 and node-3: an MTU black hole on that path only
    wait_for(lambda: all_reachable(st, 1), timeout=2 * INTERVAL + WRITE + 2, what="node-1: every peer reachable")
    try:
        drop_between(st, 1, 3, "ip length > 1400")
        wait_for(lambda: states(st, 1).get("node-3") == "mtu-blackhole"
                 and states(st, 3).get("node-1") == "mtu-blackhole",
                 timeout=3 * INTERVAL + WRITE, what="node-1 and node-3 report each other as an MTU black hole")
        assert states(st, 1) == {"node-2": "reachable", "node-3": "mtu-blackhole", "node-4": "reachable"}
        assert "1 of 3 peers with an MTU black hole: node-3" in status(st, 1)["health"]["summary"]
        assert 'ovs_mesh_mtu_blackhole_peers{family="ipv4"} 1.0' in scrape(st, 1)
    finally:
        unblock(st)
    wait_for(lambda: all_reachable(st, 1), timeout=INTERVAL * 1.1 + WRITE + 1.0, what="node-3 reachable again")


def family_view(st, k, peer) -> dict:
    return views(st, k).get(peer, {}).get("families", {})


def inner(family: str) -> str:
    """An nft match for the tunnelled packets of one pod family: the inner Ethernet type, 28 bytes
    into the VXLAN packet's UDP header (UDP 8, VXLAN 8, the inner MACs 12)."""
    return f"udp dport 4789 @th,224,16 {ETHERTYPE[family]}"


def test_blocked_pair_in_every_family(lab_family):
    """IPv6-only pods over an IPv6 underlay: the pair's underlay blocked.  Dual-stack pods over
    an IPv4 underlay: one family's tunnelled packets blocked at a time, and only that family of
    the pair is reported, the other stays reachable."""
    st, families = lab_family
    for k in (1, 2, 3, 4):
        wait_for(lambda: all_reachable(st, k), timeout=INTERVAL * 3 + 10, what=f"node-{k}: every peer reachable")
        assert all(set(v["families"]) == set(families) for v in views(st, k).values()), views(st, k)
    try:
        for family in families:
            unblock(st)
            t0 = time.monotonic()
            drop_between(st, 1, 3, "" if len(families) == 1 else inner(family))
            want = {f: "unreachable" if f == family else "reachable" for f in families}
            wait_for(lambda: family_view(st, 1, "node-3") == want and family_view(st, 3, "node-1") == want,
                     timeout=3 * INTERVAL + WRITE, what=f"node-1 and node-3 report each other {want}")
            print(f"{'+'.join(families)}: blocked pair ({family}) reported after {time.monotonic() - t0:.1f}s")
            d = only_pair_unreachable(st)
            assert {p["name"]: p["probe"]["families"] for p in d["peers"]}["node-3"] == want
            if len(families) > 1:   # the table names the family that fails
                text = status_text(st, 1)
                row = next(line for line in text.splitlines() if line.startswith("node-3 "))
                assert ",".join(f"{f}:{s}" for f, s in sorted(want.items())) in row, text
            metrics = scrape(st, 1)
            for f in families:
                blocked = f == family
                assert f'ovs_mesh_unreachable_peers{{family="{f}"}} {1.0 if blocked else 0.0}' in metrics
                assert f'ovs_mesh_peer_reachable{{family="{f}",peer="node-3"}} {0.0 if blocked else 1.0}' in metrics
                assert f'ovs_mesh_peer_reachable{{family="{f}",peer="node-2"}} 1.0' in metrics
    finally:
        unblock(st)
    t0 = time.monotonic()
    wait_for(lambda: states(st, 1).get("node-3") == "reachable" and states(st, 3).get("node-1") == "reachable",
             timeout=INTERVAL * 1.1 + WRITE + 1.0, what="node-1 and node-3 reachable again")
    print(f"{'+'.join(families)}: reachable again after {time.monotonic() - t0:.1f}s")


def test_stp_pair_routed_around_isolated_node_reported(lab_stp):
    """stp mode: the probes take the bridges' spanning tree, as pod traffic does.  A blocked pair is
    not a fault there: once the tree has reconverged (RSTP gives up on a silent port after 3 hellos,
    6 s) the pair's packets go through another node, and the probes answer again.  A node cut off
    from all others is reported unreachable by each of them, and reports each of them; reachable
    again once the tree takes it back."""
    st = lab_stp
    for k in (1, 2, 3, 4):   # the tree forwards only once RSTP has settled
        wait_for(lambda: all_reachable(st, k), timeout=45, what=f"node-{k}: every peer reachable")

    def answered_since(k, peer, t):
        v = views(st, k).get(peer, {})
        return v.get("state") == "reachable" and time.time() - v["since_answer_seconds"] > t

    try:
        t0, wall = time.monotonic(), time.time()
        drop_between(st, 1, 3)
        settled = wall + 6 + 2   # RSTP's 6 s, and a margin for the new tree's handshakes
        wait_for(lambda: answered_since(1, "node-3", settled) and answered_since(3, "node-1", settled),
                 timeout=8 + 3 * INTERVAL + WRITE, what="node-1 and node-3 answering each other through the tree")
        print(f"stp: blocked pair answering through another node after {time.monotonic() - t0:.1f}s")
        assert all_reachable(st, 1) and all_reachable(st, 3)
    finally:
        unblock(st)

    try:
        t0 = time.monotonic()
        ip = "ip6" if ":" in node(st, 3).ip else "ip"
        nft(st, f"table bridge {BLOCK} {{\n chain forward_c {{ type filter hook forward priority 0; policy accept;\n"
                f"  {ip} saddr {node(st, 3).ip} drop\n  {ip} daddr {node(st, 3).ip} drop\n }}\n}}\n")
        wait_for(lambda: all(states(st, k).get("node-3") == "unreachable" for k in (1, 2, 4))
                 and set(states(st, 3).values()) == {"unreachable"},
                 timeout=3 * INTERVAL + WRITE, what="node-3 and the others report each other unreachable")
        print(f"stp: node-3 cut off reported after {time.monotonic() - t0:.1f}s")
        for k in (1, 2, 4):
            assert states(st, k) == {f"node-{j}": "unreachable" if j == 3 else "reachable"
                                     for j in (1, 2, 3, 4) if j != k}
        assert status(st, 3)["health"]["summary"] == "3 of 3 peers unreachable: node-1, node-2, node-4"
        assert 'ovs_mesh_unreachable_peers{family="ipv4"} 1.0' in scrape(st, 1)
    finally:
        unblock(st)
    t0 = time.monotonic()
    for k in (1, 2, 3, 4):
        wait_for(lambda: all_reachable(st, k), timeout=3 * INTERVAL + WRITE, what=f"node-{k}: every peer reachable")
    print(f"stp: node-3 reachable again after {time.monotonic() - t0:.1f}s")
