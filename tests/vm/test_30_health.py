"""Peer health on the kernel datapath: each agent probes each peer through the overlay.

After `vagrant up`, `ovs-mesh status` (its table and `--json`) and the metrics endpoint on every VM
say every peer is reachable, with the shipped settings. With `health.interval` lowered in the config
(as an operator would; restored afterwards), the underlay between node-1 and node-3 is blocked by
nftables inside those two VMs (a table of the test's own): both report the other unreachable within
3 intervals while node-2 stays reachable, and reachable again after the unblock. Then dual-stack,
configured by editing `cluster.cidr` and the nodes' subnets: IPv6 pods over the IPv4 underlay,
check.sh proves both families, every peer answers the probes of both, and with the tunnelled IPv6
packets between node-1 and node-3 dropped only IPv6 is reported unreachable for that pair. Back to
IPv4-only at the end, also on failure.

The health file the agent writes (what `status` reads) is polled over ssh: each `ovs-mesh` command
is a Python start, seconds under emulation. Verdicts are read as of the file's own time (the VMs'
clocks), so a clock offset between host and VMs does not matter.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ovs_mesh.health.record import peer_view
from tests.helpers import wait_for
from tests.vm.vmlab import OVS_MESH, timed

HEALTH = "/var/run/openvswitch/ovs-mesh.health.json"
INTERVAL = 2
FAILURES = 2
WRITE = 1.0     # a changed verdict is in the health file at most this long after the round ended
POLL = 3.0      # reading three health files over ssh under emulation
BLOCK = "ovs_mesh_test_block"
V6_CIDR = "fd00:10:244::/56"
# The metrics page without another Python start: plain HTTP/1.0 through bash's /dev/tcp.
METRICS = """bash -c 'exec 3<>/dev/tcp/127.0.0.1/9476 && printf "GET /metrics HTTP/1.0\\r\\n\\r\\n" >&3 && cat <&3'"""
SEP = "@@@@"


def health(lab, node) -> dict:
    """NODE's verdict per peer as its agent last wrote it: {peer: {"state", "families", ...}}."""
    out = lab.ssh(node, f"cat {HEALTH}", check=False).stdout
    try:
        rec = json.loads(out)
    except ValueError:
        return {}
    return {peer: peer_view(rec, peer, rec["time"]) for peer in rec.get("peers", {})}


def healths(lab) -> dict:
    with ThreadPoolExecutor(len(lab.nodes)) as pool:
        return dict(zip(lab.nodes, pool.map(lambda n: health(lab, n), lab.nodes)))


def families_of(lab, node, peer) -> dict:
    return health(lab, node).get(peer, {}).get("families", {})


def all_reachable(lab, families) -> bool:
    """Every VM has a verdict on each other VM, in each of FAMILIES, and all are `reachable`."""
    return all(set(h) == set(lab.nodes) - {node}
               and all(v["families"] == dict.fromkeys(families, "reachable") for v in h.values())
               for node, h in healths(lab).items())


def show(lab, nodes) -> dict:
    """node -> (`ovs-mesh status`, `ovs-mesh status --json`, the metrics page), read at once."""
    out = lab.on_all(f"{OVS_MESH} status; echo {SEP}; {OVS_MESH} status --json; echo {SEP}; {METRICS}", nodes)
    parts = {n: p.stdout.split(SEP + "\n") for n, p in out.items()}
    return {n: (text, json.loads(js), metrics) for n, (text, js, metrics) in parts.items()}


def ips(lab) -> dict:
    return {n["name"]: n["ip"] for n in lab.read_config("node-1")["nodes"]}


def block(lab, a: str, b: str, match: str = "") -> None:
    """Drop the underlay packets between A and B (that also match MATCH) inside both VMs."""
    ip = ips(lab)

    def one(node, peer):
        lab.ssh(node, f"nft -f - <<'EOF'\ntable inet {BLOCK} {{\n"
                      f" chain in {{ type filter hook input priority -10; ip saddr {ip[peer]} {match} drop; }}\n"
                      f" chain out {{ type filter hook output priority -10; ip daddr {ip[peer]} {match} drop; }}\n"
                      "}\nEOF")
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, (a, b), (b, a)))


def unblock(lab) -> None:
    lab.on_all(f"nft delete table inet {BLOCK} 2>/dev/null || true")


@pytest.fixture(scope="module")
def fast_probes(vm_lab):
    """health.interval and health.failures lowered in every VM's config; the old values back after."""
    lab = vm_lab
    before = lab.read_config("node-1").get("health")
    try:
        with timed(f"30. health.interval {INTERVAL}, failures {FAILURES} -> a round to each peer since"):
            since = lab.set_config({"health.interval": INTERVAL, "health.failures": FAILURES})

            def probed_since(node):   # the old schedule's rounds are done: every peer answered since the edit
                rec = json.loads(lab.ssh(node, f"cat {HEALTH}").stdout)
                peers = rec.get("peers", {})
                return rec["interval"] == INTERVAL and len(peers) == len(lab.nodes) - 1 and all(
                    (v.get("last_answer") or 0) >= since[node]
                    for p in peers.values() for f, v in p.items() if f in ("ipv4", "ipv6"))
            for node in lab.nodes:
                wait_for(lambda node=node: probed_since(node), timeout=60, interval=1,
                         what=f"{node}: every peer probed with health.interval {INTERVAL}")
        yield lab
    finally:
        unblock(lab)
        with timed("30. health settings restored -> every agent converged"):
            lab.wait_converged(lab.set_config({"health": before}))


def test_1_every_peer_reachable_after_up(vm_lab):
    """The shipped settings: status, status --json and the metrics agree on every VM."""
    lab = vm_lab
    with timed("30. every peer reachable (default settings)"):
        wait_for(lambda: all_reachable(lab, ["ipv4"]), timeout=120, interval=2, what="every peer reachable")
        shown = show(lab, lab.nodes)
    for node, (text, d, metrics) in shown.items():
        peers = sorted(set(lab.nodes) - {node})
        assert "peers: all 2 peers reachable" in text, text
        assert d["health"]["summary"] == "all 2 peers reachable", d["health"]
        for p in d["peers"]:
            assert p["probe"]["state"] == "reachable" and p["probe"]["rtt_ms"] is not None, p
            row = next(line for line in text.splitlines() if line.startswith(p["name"] + " "))
            assert " reachable " in row, text
        assert sorted(p["name"] for p in d["peers"]) == peers
        assert 'ovs_mesh_probed_peers{family="ipv4"} 2.0' in metrics
        assert 'ovs_mesh_unreachable_peers{family="ipv4"} 0.0' in metrics
        for peer in peers:
            assert f'ovs_mesh_peer_reachable{{family="ipv4",peer="{peer}"}} 1.0' in metrics, metrics
        rtts = {p["name"]: p["probe"]["rtt_ms"] for p in d["peers"]}
        print(f"{node}: RTT through the overlay {rtts} ms")


def blocked_pair_reported(lab, families, blocked, match="") -> float:
    """Block node-1 <-> node-3 (MATCH: only those packets); both report the other as
    BLOCKED families unreachable, the rest reachable, node-2 reachable everywhere; unblocked,
    reachable again. Returns the seconds until both reported it."""
    want = {f: "unreachable" if f in blocked else "reachable" for f in families}
    t0 = time.monotonic()
    try:
        block(lab, "node-1", "node-3", match)
        t_block = time.monotonic() - t0
        t0 = time.monotonic()
        wait_for(lambda: families_of(lab, "node-1", "node-3") == want and families_of(lab, "node-3", "node-1") == want,
                 timeout=3 * INTERVAL + WRITE + POLL, interval=0.2,
                 what=f"node-1 and node-3 report each other {want} within 3 intervals")
        reported = time.monotonic() - t0
        print(f"{'+'.join(families)}: blocked pair ({'+'.join(blocked)}) reported after {reported:.1f}s "
              f"(nft in both VMs took {t_block:.1f}s)")
        h = healths(lab)
        assert {p: v["state"] for p, v in h["node-1"].items()} == {"node-2": "reachable", "node-3": "unreachable"}
        assert {p: v["state"] for p, v in h["node-3"].items()} == {"node-1": "unreachable", "node-2": "reachable"}
        assert all(v["state"] == "reachable" for v in h["node-2"].values()), h["node-2"]
        for node, (text, d, metrics) in show(lab, ["node-1", "node-3"]).items():
            other = "node-3" if node == "node-1" else "node-1"
            assert d["health"]["summary"] == f"1 of 2 peers unreachable: {other}", d["health"]
            assert f"peers: 1 of 2 peers unreachable: {other}" in text, text
            assert {p["name"]: p["probe"]["families"] for p in d["peers"]} == {other: want, "node-2": {
                f: "reachable" for f in families}}
            for f in families:
                n = 1.0 if f in blocked else 0.0
                assert f'ovs_mesh_unreachable_peers{{family="{f}"}} {n}' in metrics, metrics
                assert f'ovs_mesh_peer_reachable{{family="{f}",peer="{other}"}} {1.0 - n}' in metrics, metrics
                assert f'ovs_mesh_peer_reachable{{family="{f}",peer="node-2"}} 1.0' in metrics, metrics
    finally:
        unblock(lab)
    t0 = time.monotonic()
    wait_for(lambda: all_reachable(lab, families), timeout=INTERVAL * 1.1 + WRITE + POLL, interval=0.2,
             what="every peer reachable again within one interval of the unblock")
    print(f"{'+'.join(families)}: reachable again after {time.monotonic() - t0:.1f}s")
    return reported


def test_2_blocked_pair_reported_on_both_sides(fast_probes):
    lab = fast_probes
    with timed("30. node-1 <-> node-3 blocked -> reported -> unblocked -> reachable"):
        blocked_pair_reported(lab, ["ipv4"], ["ipv4"])
