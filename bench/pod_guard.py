"""Pod creation with and without the per-pod source guard, side by side in one run.

Why: the guard puts a chained CNI plugin (`ovs-mesh-guard`, a Python process and two nft
calls) after `bridge` in every pod's creation; this measures what that costs a pod.

One namespace lab node (dual-stack, its agent running, the guard's table in place).  Each
round makes one pod with the reference `bridge` plugin only ("without": the chain before
the guard) and one with `bridge` + `ovs-mesh-guard` ("with"), in alternating order so that
load drift hits both, timing each chain's ADD from the first plugin's start to the last
one's end (what a runtime waits for); then deletes both (DEL of the whole chain).  After a
"with" pod its entry must be in the guard's sets.

Run (root): python -m bench.pod_guard [--rounds 30] [--no-output]
"""
from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import time

from bench.control_plane import REPO, write_results

RESULTS = os.path.join(REPO, "bench", "results", "pod-guard.json")
VARIANTS = ("without", "with")


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "ovs_mesh", *args], check=True, cwd=REPO, capture_output=True, text=True)


def guarded_macs(ns: str) -> set[str]:
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                          "from ovs_mesh.pod_guard import table; t = table.read(); "
                          "print(' '.join(p.mac for p in (t[1] if t else ())))"],
                         capture_output=True, text=True, check=True, cwd=REPO)
    return set(out.stdout.split())


def run(rounds: int) -> dict:
    from ovs_mesh.lab import pods
    from ovs_mesh.lab.record import LabState

    name = "b" + secrets.token_hex(2)
    _cli("lab", "up", "--name", name, "--nodes", "1", "--pods-per-node", "0", "--ip-family", "dual")
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    try:
        st = LabState.load(name)
        n = st.nodes[0]
        j = 0
        for r in range(rounds):
            order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
            made = []
            for variant in order:
                j += 1
                t0 = time.perf_counter()
                pod = pods.add_pod(st, n, j, plugins=1 if variant == "without" else None)
                times[variant].append(time.perf_counter() - t0)
                made.append((variant, pod))
            macs = guarded_macs(n.ns)
            for variant, pod in made:
                eth0 = subprocess.run(["ip", "-n", pod["ns"], "-j", "link", "show", "eth0"], capture_output=True,
                                      text=True, check=True).stdout
                mac = eth0.split('"address":"', 1)[1].split('"', 1)[0]
                if (mac in macs) != (variant == "with"):
                    raise SystemExit(f"round {r}: pod {pod['ns']} ({variant} the guard) guarded: {mac in macs}")
                pods.del_pod(st, n, pod)
    finally:
        _cli("lab", "down", "--name", name)
    return times


def summary(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"n": len(xs), "median": round(statistics.median(xs), 4), "mean": round(statistics.fmean(xs), 4),
            "p90": round(xs[int(0.9 * (len(xs) - 1))], 4), "min": round(xs[0], 4), "max": round(xs[-1], 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.pod_guard", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=30, help="pods made per variant (default 30)")
    ap.add_argument("--no-output", action="store_true", help="print only, write no results file")
    args = ap.parse_args(argv)
    started, load = time.time(), os.getloadavg()
    times = run(args.rounds)
    figures = {v: summary(times[v]) for v in VARIANTS}
    extra = round(figures["with"]["median"] - figures["without"]["median"], 4)
    print(f"{'variant':<8} {'n':>3} {'median s':>9} {'mean s':>8} {'p90 s':>8} {'min s':>8} {'max s':>8}")
    for v in VARIANTS:
        f = figures[v]
        print(f"{v:<8} {f['n']:>3} {f['median']:>9.4f} {f['mean']:>8.4f} {f['p90']:>8.4f} {f['min']:>8.4f} "
              f"{f['max']:>8.4f}")
    print(f"the guard adds {extra * 1000:.0f} ms to a pod's creation (median)")
    if not args.no_output:
        write_results(RESULTS, started, load, rounds=args.rounds, figures=figures, guard_adds_median_seconds=extra,
                      samples={v: [round(x, 4) for x in times[v]] for v in VARIANTS})
    return 0


if __name__ == "__main__":
    sys.exit(main())
