"""python-ovs's C JSON parser (ovs._json) against its pure-Python parser, side by side in one run.

Why: every OVSDB reply the agent and the CLI read (the IDL's initial dump of every row, then each
update) goes through python-ovs's JSON parser.  ./run compiles python-ovs with its C extension
(requirements/pins.sh); this shows what that buys.

Each measurement is one `python -m bench.control_plane --worker CONFIG` process (one apply, timed
phase by phase) on a fresh sandbox OVS (ovsdb-server + ovs-vswitchd, dummy datapath): the "pure"
variant is the same process with `ovs._json` made unimportable, which is exactly what python-ovs
does without its extension.  Variants alternate within each repeat so that load drifts hit both.
Steps: `cold` (an empty OVS: the OVSDB connect and the whole pipeline written) and `noop` (a
converged node: connect, read, diff, nothing written).  After each step `plan` must be empty.

Run: python -m bench.ovs_json [--modes port,flow] [--sizes 1000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time

from bench.control_plane import REPO, check, config_data, ovs_mesh, spawn, step_nodes, write_config, write_results

RESULTS = os.path.join(REPO, "bench", "results", "ovs-json.json")
VARIANTS = ("c", "pure")
STEPS = ("cold", "noop")
PHASES = ("connect", "ovsdb_read", "ovsdb_txn", "apply_total", "worker_total")

# The worker, with python-ovs's C parser left as it is ("c") or made unimportable ("pure"); it
# checks which parser python-ovs really uses before it measures anything.
PRELUDE = """
import sys
if sys.argv[1] == "pure":
    sys.modules["ovs._json"] = None   # `import ovs._json` raises ImportError, as without the extension
import ovs.json
parser = type(ovs.json.Parser()).__module__
want = {"c": "ovs._json", "pure": "ovs.json"}[sys.argv[1]]
if parser != want:
    sys.exit(f"python-ovs parses with {parser}, not {want}: is ovs._json built? (./run test builds it)")
from bench.control_plane import worker
sys.exit(worker(sys.argv[2]))
"""


def measure(variant: str, mode: str, n: int, workdir: str) -> dict:
    """Fresh sandbox; cold then noop apply with VARIANT's parser; plan empty after each."""
    from ovs_mesh.lab.daemons import OvsDaemons

    d = tempfile.mkdtemp(prefix=f"ovsm-json-{variant}-", dir=workdir)
    ovs = OvsDaemons(d, dummy=True)
    out = {}
    try:
        ovs.start()
        data = config_data(step_nodes(n)["cold"], mode, ovs.remote)
        cfg = write_config(os.path.join(d, "c.yaml"), data)
        env = {**os.environ, "PYTHONPATH": REPO}
        for step in STEPS:
            r = check(spawn([sys.executable, "-c", PRELUDE, variant, cfg], env=env), f"{variant} worker")
            res = json.loads(r["stdout"])
            plan = json.loads(check(ovs_mesh("--config", cfg, "plan", "--json"), "plan")["stdout"])
            out[step] = {"process_seconds": r["seconds"], "rss_mb": r["rss_kb"] / 1024,
                         "changes": res["changes"], "plan_changes_after": len(plan["changes"]),
                         **{p: res["phases"].get(p, 0.0) for p in PHASES}}
            print(f"  {mode} {n} {variant:4} {step:4} connect={out[step]['connect']:.3f}s "
                  f"apply={out[step]['apply_total']:.3f}s process={r['seconds']:.2f}s", file=sys.stderr, flush=True)
    finally:
        ovs.stop()
        shutil.rmtree(d, ignore_errors=True)
    return out


def table(results: list[dict]) -> str:
    head = ("| mode | peers | step | figure (median s) | C parser | pure Python | pure / C |\n"
            "|---|---|---|---|---|---|---|")
    rows = []
    for r in results:
        for step in STEPS:
            for fig in ("connect", "ovsdb_read", "apply_total", "process_seconds"):
                c, p = r["median"]["c"][step][fig], r["median"]["pure"][step][fig]
                ratio = f"{p / c:.2f}x" if c > 0 else "-"
                rows.append(f"| {r['mode']} | {r['size']} | {step} | {fig} | {c:.3f} | {p:.3f} | {ratio} |")
    return "\n".join([head, *rows])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ovs_json", description=__doc__.split("\n")[0])
    p.add_argument("--modes", default="port,flow", help="port,flow (default both)")
    p.add_argument("--sizes", default="1000", help="peer counts (default 1000)")
    p.add_argument("--repeat", type=int, default=3, help="fresh sandboxes per variant (default 3)")
    p.add_argument("--output", default=RESULTS, help="results JSON (default bench/results/ovs-json.json)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started, load = time.time(), os.getloadavg()
    workdir = tempfile.mkdtemp(prefix="ovsm-bench-json-")
    results = []
    try:
        for mode in args.modes.split(","):
            for n in (int(s) for s in args.sizes.split(",")):
                runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
                for _ in range(args.repeat):
                    for v in VARIANTS:
                        runs[v].append(measure(v, mode, n, workdir))
                median = {v: {s: {k: statistics.median(run[s][k] for run in runs[v]) for k in runs[v][0][s]}
                              for s in STEPS} for v in VARIANTS}
                results.append({"mode": mode, "size": n, "runs": runs, "median": median})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(table(results))
    bad = [f"{r['mode']}/{r['size']}/{v}/{s}" for r in results for v in VARIANTS for run in r["runs"][v]
           for s in STEPS if run[s]["plan_changes_after"]]
    write_results(args.output, started, load, repeat=args.repeat, results=results)
    if bad:
        print(f"not converged after: {bad}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
