"""Peer health benchmark: the CPU the agent's prober costs at 100, 1000 and 5000 peers,
next to the agent idle at the same size.

Why: the probes run on every node all the time; at 5000 peers and the default
settings (`health.interval` 10 s, `health.max_probes_per_second` 200) they must cost
less than 2 % of one core.

Probing (simulated peers, real packets): two namespaces joined by a veth pair.  The
node side is called kbr0 (the prober reads the pod MTU from it, 1450) and holds the
local gateway 10.0.0.1; the peers' side holds every peer's gateway (10.x.y.1) on its
loopback and answers the echoes with the kernel, as a peer's kbr0 does.  A worker in
the node namespace runs the real `Prober` with the default settings on a config of N
nodes, writing its health file as the agent does, and reports its process's CPU
seconds over the window (the prober thread is all the process does) and what it
concluded; the window starts once every peer has had its first round (at 5000 peers
and 200 probes per second, 50 s after the start).  Idle: a real `ovs-mesh agent` on a sandbox
OVS with the same N peers (`bench/agent_env.Session`, `local.host: false`, so it sends
no probes), its CPU over the same window.

Run (root): python -m bench.health [--sizes 100,1000,5000] [--seconds 60] [--no-write]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "results", "health.json")
TARGET_CPU_SHARE = 0.02     # of one core, at 5000 peers, default settings
WARMUP = 5.0


def peer_gateway(k: int) -> str:
    return f"10.{k // 256}.{k % 256}.1"


def config(n: int):
    """A config of node-0 (this node, 10.0.0.0/24) and n peers (10.x.y.0/24), default health settings."""
    from topology.config import parse_config

    nodes = [{"name": f"node-{k}", "ip": f"192.168.{k // 250}.{1 + k % 250}",
              "subnet": f"10.{k // 256}.{k % 256}.0/24"} for k in range(n + 1)]
    return parse_config({"cluster": {"cidr": "10.0.0.0/8"}, "local": {"node": "node-0"}, "nodes": nodes})


def worker(n: int, seconds: float) -> dict:
    """Inside the node namespace: probe n peers; the process's CPU over `seconds` once each had a round."""
    from ovs_mesh.health.prober import Prober

    cfg = config(n)
    # the window starts once every peer had its first round (the cap spaces them out)
    warmup = WARMUP + max(cfg.health.interval, 2 * n / cfg.health.max_probes_per_second)
    # the health file, as the agent writes it
    with tempfile.TemporaryDirectory(prefix="bench-health-rundir-") as rundir:
        p = Prober(rundir).start()
        p.update(cfg)
        time.sleep(warmup)
        r0, sent0, t0 = resource.getrusage(resource.RUSAGE_SELF), p.sent, time.monotonic()
        time.sleep(seconds)
        r1, sent1, wall = resource.getrusage(resource.RUSAGE_SELF), p.sent, time.monotonic() - t0
        health, _ = p.snapshot()
        p.stop()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    states: dict[str, int] = {}
    for h in health.values():
        states[h.state] = states.get(h.state, 0) + 1
    return {"peers": n, "seconds": round(wall, 1), "cpu_s": round(cpu, 3), "cpu_share": round(cpu / wall, 4),
            "packets_per_second": round((sent1 - sent0) / wall, 1), "states": states}


def run(*args: str, ns: str | None = None, stdin: str | None = None) -> str:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=True, timeout=600).stdout


def probing(n: int, seconds: float) -> dict:
    """The worker at n peers in a fresh pair of namespaces (removed afterwards)."""
    tag = "hb" + secrets.token_hex(3)
    node, peers = f"{tag}-node", f"{tag}-peers"
    try:
        for ns in (node, peers):
            run("ip", "netns", "add", ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", node, "link", "add", "kbr0", "mtu", "1450", "type", "veth", "peer", "name", "peers0",
            "mtu", "1450", "netns", peers)
        run("ip", "-n", node, "addr", "add", "10.0.0.1/24", "dev", "kbr0")
        run("ip", "-n", peers, "addr", "add", "10.0.0.2/24", "dev", "peers0")
        for ns, dev in ((node, "kbr0"), (peers, "peers0")):
            run("ip", "-n", ns, "link", "set", dev, "up")
        # one next hop for every peer: one neighbour entry, as a routed underlay would need
        run("ip", "-n", node, "route", "add", "10.0.0.0/8", "via", "10.0.0.2")
        run("ip", "-n", peers, "-batch", "-", stdin="".join(
            f"addr add {peer_gateway(k)}/32 dev lo\n" for k in range(1, n + 1)))
        out = run(sys.executable, "-m", "bench.health", "--worker", str(n), "--seconds", str(seconds), ns=node)
        return json.loads(out)
    finally:
        for ns in (node, peers):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def idle(n: int, seconds: float, workdir: str) -> dict:
    """A real agent converged on n peers (sandbox OVS), left alone: its CPU over the window."""
    from bench.agent_env import Session

    sess = Session(workdir, "file", "flow", n)
    try:
        sess.start(timeout=600)
        time.sleep(WARMUP)
        c0, t0 = sess.cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        cpu, wall = sess.cpu_seconds() - c0, time.monotonic() - t0
    finally:
        sess.stop()
    return {"peers": n, "seconds": round(wall, 1), "cpu_s": round(cpu, 3), "cpu_share": round(cpu / wall, 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true", help="print only, no results file")
    args = ap.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.seconds)))
        return 0
    if os.geteuid() != 0:
        print("bench.health needs root (network namespaces)", file=sys.stderr)
        return 2
    from bench.control_plane import write_results

    started, load = time.time(), os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-health-") as workdir:
        for n in (int(x) for x in args.sizes.split(",")):
            row = {"peers": n, "probing": probing(n, args.seconds), "agent_idle": idle(n, args.seconds, workdir)}
            rows.append(row)
            p, i = row["probing"], row["agent_idle"]
            print(f"{n:>5} peers: probing {p['cpu_share'] * 100:.2f} % of a core ({p['packets_per_second']} "
                  f"probes/s, {p['states']}), agent idle {i['cpu_share'] * 100:.2f} %", flush=True)
    big = max(rows, key=lambda r: r["peers"])
    ok = big["probing"]["cpu_share"] < TARGET_CPU_SHARE and "unreachable" not in big["probing"]["states"]
    print(f"target: probing < {TARGET_CPU_SHARE * 100:.0f} % of a core at {big['peers']} peers: "
          f"{'met' if ok else 'MISSED'}")
    if not args.no_write:
        write_results(RESULTS, started, load, settings={"interval": 10.0, "max_probes_per_second": 200,
                                                       "failures": 3}, window_seconds=args.seconds,
                      target_cpu_share=TARGET_CPU_SHARE, rows=rows, target_met=ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
