"""Control-plane benchmark: how ovs-mesh scales with the number of peers.

Why: the design ("Scale from day one") sets targets for cold apply,
no-op apply, a join and peak memory at 1000-5000 peers.  This measures them
against a real sandbox OVS (ovsdb-server + ovs-vswitchd --enable-dummy, dummy
datapath) and puts each figure next to its target and next to a baseline:
the same OVSDB rows and flows written by plain `ovs-vsctl` + `ovs-ofctl`, as
a shell script would.

For each mode and size, three fresh sandboxes run the same five steps
(cold apply on an empty OVS, no-op apply, one join, one leave, one IP change):
  cli       `ovs-mesh --config FILE apply --json` in a fresh process: the real
            user path; wall time and the child's peak RSS (wait4 ru_maxrss).
  inproc    `python -m bench.control_plane --worker FILE`: the same apply in a
            fresh process, timed phase by phase (imports, config load, OVSDB
            connect + initial dump, observe, desired, diff, OVSDB txn, flows).
  baseline  ovs-vsctl (one invocation = one transaction) + ovs-ofctl --bundle
            add-flows.  Cold: the whole script.  No-op: the whole script again
            (a script does not diff: every flow is re-added).  Join/leave/IP
            change: only the delta (a script that knows exactly what changed:
            the floor of what OVS itself costs).
After every step `ovs-mesh plan --json` must report zero changes (for the
baseline too: it proves the baseline built exactly what ovs-mesh would).

Run: python -m bench.control_plane [--sizes 100,1000] [--modes flow,port] [--quick]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Address, IPv4Network, IPv6Network

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "results", "control-plane.json")
CLUSTER_CIDR = IPv4Network("10.0.0.0/8")
NODE_PREFIX = 24
# `dual`: flow mode with a dual-stack cluster: every node also has a /64 of this /48
# (16 bits: Kubernetes' limit between cluster and node masks; room for 65536 nodes).
CLUSTER_CIDR6 = IPv6Network("fd00:10:244::/48")
NODE_PREFIX6 = 64
NODE_IP_BASE = IPv4Address("100.64.0.1")     # 100.64.0.0/10: outside the cluster range
MOVED_IP_BASE = IPv4Address("100.96.0.1")    # where an IP change moves a peer
STEPS = ("cold", "noop", "join", "leave", "ipchange")
PORT_MODE_MAX = 1000
DRIVERS = ("cli", "inproc", "baseline")

# Design targets, flow mode.  (mode, size, step) -> {metric: upper bound}
TARGETS = {
    ("flow", 1000, "cold"): {"seconds": 1.0},
    ("flow", 5000, "cold"): {"seconds": 3.0, "rss_mb": 120},
    ("flow", 5000, "noop"): {"seconds": 0.5, "rss_mb": 120},
    ("flow", 5000, "join"): {"ovsdb_transactions": 1, "flow_changes": 4, "rss_mb": 120},
    ("flow", 5000, "leave"): {"rss_mb": 120},
    ("flow", 5000, "ipchange"): {"rss_mb": 120},
}
# The IPv4 rows' targets hold for the dual-stack rows; a peer has 7 flows there (4 IPv4 + 3 IPv6).
TARGETS.update({("dual", n, step): {**t, **({"flow_changes": 7} if "flow_changes" in t else {})}
                for (m, n, step), t in list(TARGETS.items()) if m == "flow"})


# ---------------------------------------------------------------- topology

def node(i: int, ip: IPv4Address | None = None, dual: bool = False) -> dict:
    subnet = IPv4Network((int(CLUSTER_CIDR.network_address) + (i + 1) * 2 ** (32 - NODE_PREFIX),
                          NODE_PREFIX))
    subnets = str(subnet)
    if dual:
        subnet6 = IPv6Network((int(CLUSTER_CIDR6.network_address) + (i + 1) * 2 ** (128 - NODE_PREFIX6),
                               NODE_PREFIX6))
        subnets = [str(subnet), str(subnet6)]
    return {"name": f"node-{i:05d}", "ip": str(ip or NODE_IP_BASE + i), "subnet": subnets}


def step_nodes(n: int, dual: bool = False) -> dict[str, list[dict]]:
    """The inventory before each step is applied: local node-00000 + n peers."""
    base = [node(i, dual=dual) for i in range(n + 1)]
    joined = base + [node(n + 1, dual=dual)]
    left = [x for x in joined if x["name"] != "node-00001"]
    moved = [node(2, MOVED_IP_BASE + 2, dual) if x["name"] == "node-00002" else x for x in left]
    return {"cold": base, "noop": base, "join": joined, "leave": left, "ipchange": moved}


def config_data(nodes: list[dict], mode: str, remote: str) -> dict:
    cluster = {"cidr": str(CLUSTER_CIDR), "node_prefix": NODE_PREFIX, "tunnel": "vxlan", "mode": mode}
    if mode == "dual":
        cluster.update(cidr=f"{CLUSTER_CIDR},{CLUSTER_CIDR6}", node_prefix_ipv6=NODE_PREFIX6, mode="flow")
    return {"cluster": cluster,
            "nodes": nodes,
            "local": {"node": "node-00000", "ovsdb": remote, "datapath": "dummy", "host": False}}


def write_config(path: str, data: dict) -> str:
    import yaml  # block-style YAML, as a user (or a generator) would write it

    with open(path, "w") as f:
        yaml.dump(data, f, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),
                  default_flow_style=False, sort_keys=False)
    return path


def model_config(data: dict):
    """A Config built straight from the model (no validation: the baseline's input)."""
    from topology.model import Cluster, Config, Local, Node

    c, l = data["cluster"], data["local"]
    cidrs = c["cidr"].split(",")

    def peer(x):
        subnets = x["subnet"] if isinstance(x["subnet"], list) else [x["subnet"]]
        return Node(x["name"], IPv4Address(x["ip"]), IPv4Network(subnets[0]),
                    IPv6Network(subnets[1]) if len(subnets) > 1 else None)

    return Config(cluster=Cluster(cidr=IPv4Network(cidrs[0]), node_prefix=c["node_prefix"],
                                  cidr6=IPv6Network(cidrs[1]) if len(cidrs) > 1 else None,
                                  node_prefix6=c.get("node_prefix_ipv6", 64),
                                  tunnel=c["tunnel"], mode=c["mode"]),
                  local=Local(node=l["node"], ovsdb=l["ovsdb"], datapath=l["datapath"], host=False),
                  nodes=tuple(sorted(peer(x) for x in data["nodes"])))


# ---------------------------------------------------------------- processes

TIME = shutil.which("time", path="/usr/bin:/bin")


def spawn(argv: list[str], stdin_text: str | None = None, timeout: float = 600, env: dict | None = None) -> dict:
    """Run a child; its wall time and its own peak RSS.

    ru_maxrss from wait4 is not enough: Linux carries the pre-exec (forked)
    address space's high-water mark into the child's, so every child of this
    big Python process would show at least our own RSS.  GNU time forks from
    its own tiny process and reports the child's true peak (%M).
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.TemporaryFile("w+") as inp, tempfile.NamedTemporaryFile("r") as rss:
        if stdin_text is not None:
            inp.write(stdin_text)
            inp.seek(0)
        wrap = [TIME, "-q", "-f", "%M", "-o", rss.name] if TIME else []
        start = time.perf_counter()
        p = subprocess.Popen([*wrap, *argv], stdin=inp, stdout=out, stderr=err, cwd=REPO, env=env)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        wall = time.perf_counter() - start
        out.seek(0), err.seek(0)
        try:
            rss_kb = int(rss.read().split()[-1])
        except (ValueError, IndexError):
            rss_kb = 0  # no GNU time (apt-get install time): RSS not measured
        return {"rc": p.returncode, "stdout": out.read(), "stderr": err.read(), "seconds": wall,
                "rss_kb": rss_kb}


def ovs_mesh(*args: str, **kw) -> dict:
    """`ovs-mesh ARGS` as a user runs it (the venv's script), importing THIS checkout's code:
    the venv's editable install may point at another checkout (a worktree run with the main
    checkout's venv would otherwise measure the main checkout's CLI)."""
    exe = os.path.join(os.path.dirname(sys.executable), "ovs-mesh")
    argv = [exe] if os.path.exists(exe) else [sys.executable, "-m", "ovs_mesh"]
    path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    return spawn([*argv, *args], env={**os.environ, "PYTHONPATH": path}, **kw)


def check(r: dict, what: str) -> dict:
    if r["rc"] != 0:
        raise RuntimeError(f"{what}: exit {r['rc']}: {r['stderr'].strip()[-2000:]}")
    return r


# ---------------------------------------------------------------- drivers

def run_cli(cfg: str, _ovs, _before, _after) -> dict:
    r = check(ovs_mesh("--config", cfg, "apply", "--json"), "ovs-mesh apply")
    res = json.loads(r["stdout"])
    return {"seconds": r["seconds"], "rss_mb": r["rss_kb"] / 1024,
            "ovsdb_transactions": res["ovsdb_transactions"], "flow_changes": res["flow_changes"],
            "changes": len(res["changes"]), "apply_seconds": res["seconds"]}


def run_inproc(cfg: str, _ovs, _before, _after) -> dict:
    r = check(spawn([sys.executable, "-m", "bench.control_plane", "--worker", cfg]), "worker")
    res = json.loads(r["stdout"])
    return {"seconds": r["seconds"], "rss_mb": r["rss_kb"] / 1024, **res}


def vsctl_args(changes) -> list[str]:
    """OVSDB changes -> one ovs-vsctl command line (one transaction)."""
    from ovs_mesh.ovs.model import BRIDGE, BridgeChange, PortChange

    args: list[str] = []
    for ch in changes:
        if isinstance(ch, BridgeChange) and ch.action != "delete":
            b = ch.new
            args += ["--", "--may-exist", "add-br", b.name, "--", "set", "Bridge", b.name,
                     f"datapath_type={b.datapath_type}", f"fail_mode={b.fail_mode}",
                     f"rstp_enable={str(b.rstp_enable).lower()}",
                     *[f"external_ids:{k}={v}" for k, v in b.external_ids]]
            if b.mtu_request:
                args += ["--", "set", "Interface", b.name, f"mtu_request={b.mtu_request}"]
        elif isinstance(ch, PortChange) and ch.action != "delete":
            p = ch.new
            args += ["--", "--may-exist", "add-port", BRIDGE, p.name, "--", "set", "Interface", p.name,
                     f"type={p.type}", *[f"options:{k}={v}" for k, v in p.options],
                     *[f"bfd:{k}={v}" for k, v in p.bfd]]
            if p.ofport_request:
                args.append(f"ofport_request={p.ofport_request}")
            args += ["--", "set", "Port", p.name, *[f"external_ids:{k}={v}" for k, v in p.external_ids]]
        elif isinstance(ch, PortChange):
            args += ["--", "--if-exists", "del-port", BRIDGE, ch.name]
    return args[1:]


def flow_lines(changes) -> str:
    from ovs_mesh.ovs.model import FlowChange

    lines = []
    for ch in changes:
        if not isinstance(ch, FlowChange):
            continue
        if ch.action == "add":
            lines.append(ch.new.spec())
        elif ch.action == "modify":
            lines.append("modify_strict " + ch.new.spec())
        else:
            lines.append("delete_strict " + ch.old.spec(with_actions=False))
    return "".join(line + "\n" for line in lines)


def run_baseline(_cfg: str, ovs, before: dict | None, after: dict) -> dict:
    """The same rows and flows through ovs-vsctl + ovs-ofctl (see module doc)."""
    from ovs_mesh.ovs import desired
    from ovs_mesh.ovs.model import BridgeChange, OvsState, PortChange
    from ovs_mesh.reconcile.plan import diff

    def build(data, ofports):
        # Ports keep the ofports they have (as ovs-mesh does); the rest as ovs-mesh numbers them.
        config = model_config(data)
        return desired.build(config, config.cluster.pod_mtu(1500), ofports)

    kept = getattr(ovs, "bench_ofports", {})  # what this script set up in the previous step
    if before is None or before is after:  # cold, or a script re-run: everything again
        want = build(after, kept)
        changes = diff(want, OvsState()).changes
    else:
        have = build(before, kept)
        want = build(after, {p.name: p.ofport_request for p in have.ports})
        changes = diff(want, have).changes
    ovs.bench_ofports = {p.name: p.ofport_request for p in want.ports}
    env_vsctl = ["ovs-vsctl", f"--db={ovs.remote}", "--timeout=120"]
    seconds, rss, txns, nflows = 0.0, 0, 0, 0
    row_args = vsctl_args([c for c in changes if isinstance(c, (BridgeChange, PortChange))])
    if row_args:
        r = check(spawn([*env_vsctl, *row_args]), "ovs-vsctl")
        seconds, rss, txns = seconds + r["seconds"], max(rss, r["rss_kb"]), 1
    text = flow_lines(changes)
    if text:
        r = check(spawn(["ovs-ofctl", "-O", "OpenFlow13", "--bundle", "add-flows", ovs.mgmt("obr0"), "-"],
                        stdin_text=text), "ovs-ofctl add-flows")
        seconds, rss, nflows = seconds + r["seconds"], max(rss, r["rss_kb"]), text.count("\n")
    return {"seconds": seconds, "rss_mb": rss / 1024, "ovsdb_transactions": txns,
            "flow_changes": nflows, "changes": len(changes)}


DRIVER_FN = {"cli": run_cli, "inproc": run_inproc, "baseline": run_baseline}


def run_sequence(driver: str, mode: str, n: int, workdir: str) -> dict:
    """One fresh sandbox OVS, the five steps, plan after each.  Always cleans up."""
    from ovs_mesh.lab.daemons import OvsDaemons

    d = tempfile.mkdtemp(prefix=f"ovsm-bench-{driver}-", dir=workdir)
    ovs = OvsDaemons(d, dummy=True)
    out: dict = {}
    try:
        ovs.start()
        inventories = step_nodes(n, dual=mode == "dual")
        prev = None
        for step in STEPS:
            data = config_data(inventories[step], mode, ovs.remote)
            cfg = write_config(os.path.join(d, f"{step}.yaml"), data)
            fig = DRIVER_FN[driver](cfg, ovs, prev if step != "noop" else data, data)
            plan = check(ovs_mesh("--config", cfg, "plan", "--json"), "ovs-mesh plan")
            left = len(json.loads(plan["stdout"])["changes"])
            fig.update(plan_changes_after=left, plan_seconds=plan["seconds"])
            out[step] = fig
            prev = data
            print(f"  {mode:4} {n:5} {driver:8} {step:8} {fig['seconds']:7.2f}s "
                  f"txn={fig['ovsdb_transactions']} flows={fig['flow_changes']:<6} "
                  f"rss={fig['rss_mb']:.0f}MB plan_left={left}", file=sys.stderr, flush=True)
    finally:
        ovs.stop()
        shutil.rmtree(d, ignore_errors=True)
    return out


def combine(runs: list[dict]) -> dict:
    """Several runs of one sequence -> per step: median times, worst counts and RSS
    (counts are deterministic; the worst is the conservative figure), every wall time."""
    import statistics

    def merge(values: list, key: str = ""):
        if isinstance(values[0], dict):
            return {k: merge([v[k] for v in values], k) for k in values[0]}
        if isinstance(values[0], int) or key == "rss_mb":
            return max(values)
        if isinstance(values[0], float):
            return statistics.median(values)
        return values[0]

    out = {}
    for step in runs[0]:
        figs = [r[step] for r in runs]
        out[step] = merge(figs)
        out[step]["plan_changes_after"] = max(f["plan_changes_after"] for f in figs)
        out[step]["runs_seconds"] = [round(f["seconds"], 3) for f in figs]
    return out


# ---------------------------------------------------------------- in-process worker

def worker(cfg: str) -> int:
    """One apply in this process, phase by phase; prints JSON."""
    t0 = time.perf_counter()
    phases: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*a, **kw):
            s = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - s
        return wrapper

    from ovs_mesh.config.file import load_config
    from ovs_mesh.reconcile import node, reconciler
    phases["import"] = time.perf_counter() - t0
    config = timed("load_config", load_config)(cfg)
    from ovs_mesh.ovs import desired
    build_parts = timed("desired", desired.build_parts)   # what apply() builds the desired state with
    # "connect" includes the IDL's initial dump
    rec = timed("connect", lambda c: node.open_node(c).reconciler(build_parts))(config)
    rec.ovsdb.read = timed("ovsdb_read", rec.ovsdb.read)
    rec.ovsdb.apply = timed("ovsdb_txn", rec.ovsdb.apply)
    rec.openflow.dump = timed("flow_dump", rec.openflow.dump)
    rec.openflow.apply = timed("flow_apply", rec.openflow.apply)
    reconciler.diff = timed("diff", reconciler.diff)
    s = time.perf_counter()
    result = rec.apply()
    phases["apply_total"] = time.perf_counter() - s
    s = time.perf_counter()
    rec.ovsdb.close()
    phases["close"] = time.perf_counter() - s
    phases["worker_total"] = time.perf_counter() - t0
    print(json.dumps({"ovsdb_transactions": result.ovsdb_transactions, "flow_changes": result.flow_changes,
                      "changes": len(result.changes), "problems": result.problems,
                      "apply_seconds": phases["apply_total"],
                      "phases": {k: round(v, 4) for k, v in phases.items()}}))
    return 1 if result.problems else 0


# ---------------------------------------------------------------- report

def machine_info() -> dict:
    def first(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
        except Exception:  # missing tool: the field says so
            return "unknown"
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from importlib.metadata import version
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "ovs": first(["ovs-vswitchd", "--version"]),
            "ovsdbapp": version("ovsdbapp"),
            "mem_mb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2 ** 20,
            "git_commit": first(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])}


def write_results(path: str, started: float, load: tuple, **fields) -> None:
    """A benchmark's results file: when, on what machine (and how loaded), how long, then FIELDS."""
    doc = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
           "machine": {**machine_info(), "load_average_at_start": load},
           "run_seconds": round(time.time() - started, 1), **fields}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"wrote {os.path.relpath(path, REPO)}")


def verdict(target: dict | None, fig: dict) -> str:
    if not target:
        return ""
    bad = [f"{k}>{v}" for k, v in target.items() if fig.get(k, 0) > v]
    return "FAIL " + ",".join(bad) if bad else "ok"


def target_text(target: dict | None) -> str:
    if not target:
        return "-"
    short = {"seconds": "s", "rss_mb": "MB", "ovsdb_transactions": "txn", "flow_changes": "flows"}
    return " ".join(f"<{v}{short[k]}" if k in ("seconds", "rss_mb") else f"<={v}{short[k]}"
                    for k, v in target.items())


def verdicts(mode: str, size: int, step: str, drivers: dict) -> dict:
    """Target verdicts for the CLI process (wall, RSS) and for Reconciler.apply() alone."""
    tgt = TARGETS.get((mode, size, step))
    cli, inp = drivers.get("cli", {}).get(step, {}), drivers.get("inproc", {}).get(step, {})
    return {"target": target_text(tgt), "cli": verdict(tgt, cli) if cli else "",
            "apply": verdict(tgt, {**inp, "seconds": inp.get("apply_seconds", 0)}) if inp else ""}


def table(results: list[dict]) -> str:
    head = (f"{'mode':4} {'N':>5} {'step':8} | {'cli s':>6} {'apply s':>7} {'base s':>6} | "
            f"{'txn':>3} {'flows':>6} {'base fl':>7} | {'RSS MB':>6} | {'plan':4} | "
            f"target: cli / apply()")
    lines = [head, "-" * len(head)]
    for r in results:
        for step in STEPS:
            cli, inp, base = (r["drivers"].get(d, {}).get(step, {}) for d in DRIVERS)
            ok = all(x.get("plan_changes_after", 0) == 0 for x in (cli, inp, base))
            v = verdicts(r["mode"], r["size"], step, r["drivers"])
            judged = f"{v['target']}: {v['cli'] or '-'} / {v['apply'] or '-'}" if v["cli"] or v["apply"] else "-"
            def num(fig, key, width, prec):
                return f"{fig[key]:{width}.{prec}f}" if key in fig else f"{'-':>{width}}"
            lines.append(
                f"{r['mode']:4} {r['size']:5} {step:8} | {num(cli, 'seconds', 6, 2)} "
                f"{num(inp, 'apply_seconds', 7, 3)} {num(base, 'seconds', 6, 2)} | "
                f"{cli.get('ovsdb_transactions', '-'):>3} {cli.get('flow_changes', '-'):>6} "
                f"{base.get('flow_changes', '-'):>7} | {cli.get('rss_mb', 0):6.0f} | "
                f"{'ok' if ok else 'DIFF':4} | {judged}")
    return "\n".join(lines)


PHASES = ("import", "load_config", "connect", "ovsdb_read", "flow_dump", "desired", "diff", "ovsdb_txn",
          "flow_apply", "apply_total", "worker_total")


def phase_table(results: list[dict]) -> str:
    """Where the in-process time goes, per step (seconds)."""
    short = {"load_config": "config", "ovsdb_read": "db_read", "flow_dump": "fl_dump",
             "ovsdb_txn": "db_txn", "flow_apply": "fl_appl", "apply_total": "apply()",
             "worker_total": "total"}
    head = f"{'mode':4} {'N':>5} {'step':8} | " + " ".join(f"{short.get(p, p):>7}" for p in PHASES)
    lines = [head, "-" * len(head)]
    for r in results:
        for step in STEPS:
            ph = r["drivers"].get("inproc", {}).get(step, {}).get("phases")
            if ph:
                lines.append(f"{r['mode']:4} {r['size']:5} {step:8} | "
                             + " ".join(f"{ph.get(p, 0):7.3f}" for p in PHASES))
    return "\n".join(lines)


def parser(prog: str, doc: str, modes: str = "flow,port") -> argparse.ArgumentParser:
    """The arguments every benchmark of the peer count takes: --sizes, --modes."""
    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    p.add_argument("--sizes", default="100,1000,5000", help="peer counts (default 100,1000,5000)")
    p.add_argument("--modes", default="flow,port", help=f"{modes} (port mode only up to {PORT_MODE_MAX} peers)")
    return p


def main(argv=None) -> int:
    p = parser("python -m bench.control_plane", __doc__,
               "flow,port,dual (dual: flow mode with a dual-stack cluster, IPv4 underlay)")
    p.add_argument("--quick", action="store_true", help="sizes 100,1000 and no results file")
    p.add_argument("--repeat", type=int, default=1,
                   help="run each sequence R times on fresh sandboxes; report medians (default 1)")
    p.add_argument("--drivers", default=",".join(DRIVERS), help="cli,inproc,baseline")
    p.add_argument("--output", default=RESULTS, help="results JSON (default bench/results/control-plane.json)")
    p.add_argument("--worker", metavar="CONFIG", help=argparse.SUPPRESS)
    p.add_argument("--profile", metavar="FILE", help="with --worker: write cProfile stats to FILE")
    args = p.parse_args(argv)
    if args.worker and args.profile:
        import cProfile

        prof = cProfile.Profile()
        try:
            return prof.runcall(worker, args.worker)
        finally:
            prof.dump_stats(args.profile)
    if args.worker:
        return worker(args.worker)
    # SIGTERM ends the run through the finally blocks: sandboxes stopped, temp dirs removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes = [100, 1000] if args.quick else [int(s) for s in args.sizes.split(",")]
    modes = args.modes.split(",")
    drivers = args.drivers.split(",")
    started, load = time.time(), os.getloadavg()  # other work on the machine skews timings
    results, skipped = [], []
    workdir = tempfile.mkdtemp(prefix="ovsm-bench-")
    try:
        for mode in modes:
            for n in sizes:
                if mode == "port" and n > PORT_MODE_MAX:
                    skipped.append(f"{mode} {n}: port mode is benchmarked up to {PORT_MODE_MAX} peers")
                    continue
                entry = {"mode": mode, "size": n, "drivers": {}}
                for drv in drivers:
                    runs = [run_sequence(drv, mode, n, workdir) for _ in range(args.repeat)]
                    entry["drivers"][drv] = combine(runs)
                results.append(entry)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(table(results))
    if "inproc" in drivers:
        print("\nin-process phases (s): import, config load, OVSDB connect + initial dump, then inside apply()")
        print(phase_table(results))
    for s in skipped:
        print(f"skipped: {s}")
    doc = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
           "machine": {**machine_info(), "load_average_at_start": load}, "run_seconds": round(time.time() - started, 1),
           "steps": list(STEPS), "drivers": drivers, "repeat": args.repeat,
           "targets": [{"mode": m, "size": n, "step": s, **t} for (m, n, s), t in TARGETS.items()],
           "skipped": skipped, "results": results,
           "verdicts": {f"{r['mode']}/{r['size']}/{s}": verdicts(r["mode"], r["size"], s, r["drivers"])
                        for r in results for s in STEPS if (r["mode"], r["size"], s) in TARGETS}}
    if not args.quick:
        os.makedirs(os.path.dirname(args.output), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"wrote {os.path.relpath(args.output, REPO)}")
    bad = any(x.get("plan_changes_after", 0) for r in results for d in r["drivers"].values()
              for x in d.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
