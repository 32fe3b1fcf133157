"""Agent benchmark: what a running `ovs-mesh agent` pays per event, next to the raw floor.

Why: one node's change should take constant time, at 5000 peers as at 5.
`bench/control_plane.py` times one `apply`; this times the agent as it runs on
a node: a real `ovs-mesh agent` process on a sandbox OVS (`bench/agent_env.py`),
fed by the file source (every edit an atomic rename of the whole file, written as
block YAML or as JSON) or by the Kubernetes source (the test API server, Nodes
shaped like a kubelet's), with `local.host: false`.

Measured, side by side in one run:
  events     event-to-installed latency of a join, a leave and an IP change
             (from the rename / the API write to the change committed in OVS),
             at 100, 1000, 5000 peers, flow and port modes (port up to 1000),
             next to the floor: `ovs-ofctl --bundle` of exactly the changed flows
             plus one `ovs-vsctl` transaction where rows change, on a second
             sandbox holding the same state (`control_plane.run_baseline`);
  bootstrap  1000 and 5000 nodes appear within 10 s (100 bursts): seconds from
             the last event to all flows installed, and the agent's CPU seconds;
             for the Kubernetes source then a relist (the API server compacts: 410,
             a new list in pages) and the agent's RSS after it;
  churn      one event per second (join, IP change, leave, ...) for 60 s at the
             largest size: the agent's CPU share of one core, next to its share with
             no event at all for a quarter of that (idle: the OVS watcher);
  resync     SIGHUP (a full pass) at the largest size: its duration and changes
             (the agent's log line), which must be zero;
  RSS        the agent's peak RSS (VmHWM) in every session.
The agent's CPU counts its children (every ovs-ofctl it ran).

Run: python -m bench.agent [--quick] [--label before|after] [--sizes 100,1000]
"""
from __future__ import annotations

import datetime
import json
import os
import re
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time

from bench.agent_env import LOCAL, Session, Topology, config_text, expected_flows
from bench.control_plane import MOVED_IP_BASE, PORT_MODE_MAX, REPO, machine_info, parser, run_baseline

RESULTS = os.path.join(REPO, "bench", "results", "agent.json")
EVENTS = ("join", "leave", "ipchange")
TARGETS = {"event_x_floor": 1.5, "bootstrap_after_last_s": 1.0, "bootstrap_cpu_s": 5.0,
           "churn_cpu_share": 0.03, "resync_s": 0.5, "resync_changes": 0, "rss_mb": 120}
TARGET_SIZE = 5000   # the targets are set at 5000 peers


def pick(topo: Topology, n: int, kind: str, r: int) -> tuple[str | None, str | None]:
    """The node an event of round r is about (the same for the agent and the floor)."""
    if kind == "leave":
        return f"node-{1 + r:05d}", None
    if kind == "ipchange":
        name = f"node-{max(2, n // 2) + r:05d}"
        return name, str(MOVED_IP_BASE + int(name[5:]))
    return None, None


def apply_to(topo: Topology, kind: str, name, ip):
    return topo.join() if kind == "join" else topo.leave(name) if kind == "leave" else topo.move(name, ip)


def agent_events(sess: Session, n: int, repeat: int, events) -> tuple[dict, dict]:
    """Per event kind: the latencies, and the agent's CPU seconds from the event to 0.2 s
    after it was installed (the rest of its pass: status file, log), which does not
    depend on what else the machine runs."""
    out: dict = {k: [] for k in events}
    cpu: dict = {k: [] for k in events}
    for r in range(repeat):
        for kind in events:
            name, ip = pick(sess.topo, n, kind, r)
            marks, c0 = sess.marks(), sess.cpu_seconds()
            x, t0 = sess.event(kind, name, ip)
            t = sess.seen(kind, x, marks)
            out[kind].append(None if t is None else round(t - t0, 4))
            time.sleep(0.2)   # let the agent finish the pass (status, log) before the next event
            cpu[kind].append(round(sess.cpu_seconds() - c0, 3))
    return out, cpu


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def floor_events(workdir: str, mode: str, n: int, repeat: int, events) -> dict:
    """The same events as ovs-vsctl + ovs-ofctl --bundle of exactly the delta."""
    from ovs_mesh.lab.daemons import OvsDaemons

    d = tempfile.mkdtemp(prefix=f"fb-floor-{mode}-{n}-", dir=workdir)
    ovs = OvsDaemons(d, dummy=True)
    out: dict = {k: [] for k in events}
    cpu: dict = {k: [] for k in events}
    try:
        ovs.start()
        topo = Topology(n)
        prev = topo.data(mode, ovs.remote)
        run_baseline(None, ovs, None, prev)
        for r in range(repeat):
            for kind in events:
                apply_to(topo, kind, *pick(topo, n, kind, r))
                after = topo.data(mode, ovs.remote)
                c0 = children_cpu()   # the tools' CPU (ovs-vsctl, ovs-ofctl, reaped through GNU time)
                out[kind].append(round(run_baseline(None, ovs, prev, after)["seconds"], 4))
                cpu[kind].append(round(children_cpu() - c0, 3))
                prev = after
    finally:
        ovs.stop()
        shutil.rmtree(d, ignore_errors=True)
    return out, cpu


def resync(sess: Session, timeout: float = 60) -> dict:
    """A SIGHUP full pass: its duration and its changes, from the agent's log line."""
    pattern = re.compile(r"reconcile \([^)]*SIGHUP[^)]*\): (?:converged, )?(\d+) changes in ([\d.]+)s")
    before = len(sess.agent.log())
    sess.agent.signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = pattern.search(sess.agent.log()[before:])
        if m:
            return {"seconds": float(m.group(2)), "changes": int(m.group(1))}
        time.sleep(0.05)
    return {"seconds": None, "changes": None, "error": "no SIGHUP pass logged"}


def idle(sess: Session, seconds: float) -> dict:
    """No event at all: the agent's CPU share (the OVS watcher's checks and its `ovs-ofctl
    dump-aggregate` every 0.5 s), the fixed part of the churn's."""
    time.sleep(1.0)   # the pass before (a resync) done
    cpu0, t0 = sess.cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    cpu, wall = sess.cpu_seconds() - cpu0, time.monotonic() - t0
    return {"seconds": round(wall, 1), "cpu_s": round(cpu, 2), "cpu_share": round(cpu / wall, 4)}


def churn(sess: Session, seconds: int) -> dict:
    """One event a second (join, IP change, leave of a fresh node): the agent's CPU share."""
    cycle = ("join", "ipchange", "leave")
    pending, cpu0, t0 = [], sess.cpu_seconds(), time.monotonic()
    x = None
    for i in range(seconds):
        time.sleep(max(0.0, t0 + i - time.monotonic()))
        kind = cycle[i % 3]
        marks = sess.marks()
        if kind == "join":
            x, te = sess.event("join")
        elif kind == "ipchange":
            x, te = sess.event("ipchange", x["name"], str(MOVED_IP_BASE + int(x["name"][5:])))
        else:
            x, te = sess.event("leave", x["name"])
        pending.append((kind, x, marks, te))
    time.sleep(max(0.0, t0 + seconds - time.monotonic()))
    cpu, wall = sess.cpu_seconds() - cpu0, time.monotonic() - t0
    lat = [sess.seen(k, x, m, timeout=5) for k, x, m, _ in pending]
    done = [t - te for t, (_, _, _, te) in zip(lat, pending) if t is not None]
    return {"seconds": round(wall, 1), "events": len(pending), "cpu_s": round(cpu, 2),
            "cpu_share": round(cpu / wall, 4), "installed": len(done),
            "latency_median_s": round(statistics.median(done), 4) if done else None}


def bootstrap(workdir: str, source: str, n: int, spread: float = 10.0, bursts: int = 100,
              timeout: float = 60) -> dict:
    sess = Session(workdir, source, "flow", 0)
    try:
        sess.start()
        cpu0, t0 = sess.cpu_seconds(), time.monotonic()
        per, left = -(-n // bursts), n
        t_last = t0
        for k in range(bursts):
            time.sleep(max(0.0, t0 + k * spread / bursts - time.monotonic()))
            t_last = sess.joins(min(per, left))
            left -= min(per, left)
            if not left:
                break
        try:
            after = round(max(0.0, sess.wait_converged(timeout, interval=0.01) - t_last), 3)
        except AssertionError:   # not converged within `timeout` s of the last event: say so, measure
            after = None
        out = {"nodes": n, "after_last_s": after, "timeout_s": timeout,
               "cpu_s": round(sess.cpu_seconds() - cpu0, 2), "rss_mb": round(sess.peak_rss_mb(), 1)}
        if source == "kube":
            out.update(relist(sess))
        return out
    finally:
        sess.stop()


def relist(sess: Session, timeout: float = 60) -> dict:
    """The API server compacts (the watch gets 410): the agent lists every Node again, in pages.
    Its CPU for that, its peak RSS after it, and its RSS a second later."""
    lists = sess.api.count(watch=False)
    cpu0 = sess.cpu_seconds()
    sess.api.compact()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (sess.api.count(watch=False) > lists and sess.api.watching()):
        time.sleep(0.05)
    time.sleep(1.0)   # the relisted set validated (nothing changed: no pass)
    return {"relist_pages": sess.api.count(watch=False) - lists, "relist_cpu_s": round(sess.cpu_seconds() - cpu0, 2),
            "rss_after_relist_mb": round(sess.peak_rss_mb(), 1), "rss_now_mb": round(sess.peak_rss_mb("VmRSS"), 1)}


def file_reread(n: int, repeat: int = 5) -> dict:
    """The file source's cost of one edit (a join) of an n-node file, in each layout: the full
    parse (what every edit cost before) vs the incremental one (ConfigItems, warmed by the
    version before); medians of wall and CPU seconds, in this process."""
    from ovs_mesh.config.file import config_from_bytes
    from ovs_mesh.config.items import ConfigItems

    out: dict = {"nodes": n}
    for layout in ("yaml", "json"):
        topo, items = Topology(n), ConfigItems()
        got: dict = {"full": [], "incremental": []}
        for _ in range(repeat):
            before = config_text(topo, "flow", "unix:/nonexistent", layout=layout).encode()
            items.parse(before, "bench.yaml", default_node=LOCAL)
            topo.join()
            after = config_text(topo, "flow", "unix:/nonexistent", layout=layout).encode()
            for kind, fn in (("full", config_from_bytes), ("incremental", items.parse)):
                w, c = time.perf_counter(), time.process_time()
                fn(after, "bench.yaml", default_node=LOCAL)
                got[kind].append((time.perf_counter() - w, time.process_time() - c))
        out[layout] = {kind: {"wall_s": round(median([w for w, _ in v]), 4),
                              "cpu_s": round(median([c for _, c in v]), 4)}
                       for kind, v in got.items()}
        out[layout]["fast_path"] = items.fast
    return out


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def session_run(workdir, source, mode, n, args, largest: bool) -> dict:
    sess = Session(workdir, source, mode, n)
    try:
        sess.start()
        events, cpu = agent_events(sess, n, args.repeat, args.events)
        out = {"events": events, "agent_cpu": cpu}
        if largest and mode == "flow" and not args.only_events:
            out["resync"] = [resync(sess) for _ in range(2)]
            out["idle"] = idle(sess, args.churn_seconds / 4)
            out["churn"] = churn(sess, args.churn_seconds)
        out["converged_after"] = sess.flow_count() == expected_flows(sess.topo, mode)
        out["rss_mb"] = round(sess.peak_rss_mb(), 1)
        return out
    finally:
        sess.stop()


def ok(value, bound) -> str:
    return "-" if value is None else "ok" if value <= bound else "FAIL"


def tables(res: dict) -> str:
    t = res.get("targets", TARGETS)
    f = res.get("file_reread")
    lines = []
    for layout in ("yaml", "json") if f else ():
        g = f.get(layout) or ({"full": f["full"], "incremental": f["incremental"]} if layout == "yaml" else None)
        if g:
            lines.append(f"file source, one join in a {f['nodes']}-node {layout} file: full parse "
                         f"{g['full']['wall_s']:.3f} s ({g['full']['cpu_s']:.3f} s CPU), incremental "
                         f"{g['incremental']['wall_s']:.3f} s ({g['incremental']['cpu_s']:.3f} s CPU)")
    lines += [""] if lines else []
    lines += ["events: seconds from the edit to installed in OVS (median), agent vs floor (ovs-vsctl + "
              "ovs-ofctl --bundle of the delta), x = ratio; cpu = the agent's CPU seconds for the event",
              f"{'source':6} {'mode':4} {'N':>5} | " + " | ".join(f"{k:8} {'floor':>6} {'x':>5} {'cpu':>5}"
                                                              for k in EVENTS)
              + f" | {'RSS MB':>6} | target <= {t['event_x_floor']}x floor (at {TARGET_SIZE})"]
    for e in res["events"]:
        cells, verdicts = [], []
        for k in EVENTS:
            a, f = median(e["agent"].get(k, [])), median(e["floor"].get(k, []))
            cpu = median(e.get("agent_cpu", {}).get(k, []))
            x = a / f if a is not None and f else None
            cells.append(" ".join(f"{v:{w}}" if v is not None else f"{'-':>{w.split('.')[0]}}" for v, w in
                                  ((a, "8.3f"), (f, "6.3f"), (x, "5.1f"), (cpu, "5.2f"))))
            if k in e["agent"] and e["n"] == TARGET_SIZE:
                verdicts.append(ok(x, t["event_x_floor"]))
        v = ("FAIL" if "FAIL" in verdicts else "ok") if verdicts else "-"
        lines.append(f"{e['source']:6} {e['mode']:4} {e['n']:5} | " + " | ".join(cells)
                     + f" | {e.get('rss_mb') or 0:6.0f} | {v}" + (" (error)" if "error" in e else ""))
    if res["bootstrap"]:
        lines += ["", f"bootstrap: N nodes appear within 10 s (flow mode); target at {TARGET_SIZE}: converged "
                      f"<= {t['bootstrap_after_last_s']} s after the last event, CPU < {t['bootstrap_cpu_s']} s, "
                      f"peak RSS < {t['rss_mb']} MB (also after the relist)",
                  f"{'source':6} {'N':>5} | {'after last s':>12} {'CPU s':>6} {'RSS MB':>6} | {'relist CPU s':>12} "
                  f"{'RSS after':>9} {'RSS now':>7} | verdict"]
        for b in res["bootstrap"]:
            v = "-" if b["nodes"] != TARGET_SIZE else (
                "ok" if ok(b.get("after_last_s"), t["bootstrap_after_last_s"]) == "ok"
                and ok(b.get("cpu_s"), t["bootstrap_cpu_s"]) == "ok"
                and ok(max(b.get("rss_mb", 0), b.get("rss_after_relist_mb", 0)), t["rss_mb"]) == "ok" else "FAIL")
            after = b.get("after_last_s")
            after = f"{after:12.2f}" if after is not None else f"{'>' + str(b.get('timeout_s')):>12}"
            rel = (f"{b['relist_cpu_s']:12.2f} {b['rss_after_relist_mb']:9.0f} {b['rss_now_mb']:7.0f}"
                   if "relist_cpu_s" in b else f"{'-':>12} {'-':>9} {'-':>7}")
            lines.append(f"{b['source']:6} {b['nodes']:5} | {after} "
                         f"{b.get('cpu_s', float('nan')):6.2f} {b.get('rss_mb', 0):6.0f} | {rel} | {v}"
                         + (f" ({b['error']})" if "error" in b else ""))
    rows = [e for e in res["events"] if "churn" in e]
    if rows:
        lines += ["", f"churn (1 event/s) and SIGHUP resync at the largest size, flow mode; targets: CPU < "
                      f"{t['churn_cpu_share']:.0%} of a core, resync < {t['resync_s']} s with 0 changes, "
                      f"RSS < {t['rss_mb']} MB",
                  f"{'source':6} {'N':>5} | {'churn s':>7} {'CPU %':>6} {'idle %':>6} {'lat s':>6} | {'resync s':>8} "
                  f"{'changes':>7} | {'RSS MB':>6} | churn / resync / RSS"]
        for e in rows:
            c, rs = e["churn"], e["resync"]
            rsec = max((r["seconds"] for r in rs if r["seconds"] is not None), default=None)
            rch = max((r["changes"] for r in rs if r["changes"] is not None), default=None)
            rv = "-" if rsec is None else "ok" if rsec <= t["resync_s"] and rch == 0 else "FAIL"
            lat = c.get("latency_median_s")
            idle_share = e.get("idle", {}).get("cpu_share")
            lines.append(f"{e['source']:6} {e['n']:5} | {c['seconds']:7.0f} {100 * c['cpu_share']:6.1f} "
                         f"{100 * idle_share if idle_share is not None else float('nan'):6.1f} "
                         f"{lat if lat is not None else float('nan'):6.3f} | {rsec or float('nan'):8.3f} "
                         f"{rch if rch is not None else '-':>7} | {e['rss_mb']:6.0f} | "
                         f"{ok(c['cpu_share'], t['churn_cpu_share'])} / {rv} / {ok(e['rss_mb'], t['rss_mb'])}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = parser("python -m bench.agent", __doc__)
    p.add_argument("--sources", default="file,json,kube", help="file (block YAML), json (the same file as JSON), kube")
    p.add_argument("--events", default=",".join(EVENTS), help="join,leave,ipchange")
    p.add_argument("--repeat", type=int, default=3, help="rounds of the events per session (default 3)")
    p.add_argument("--churn-seconds", type=int, default=60, help="churn duration (default 60)")
    p.add_argument("--bootstrap", default="1000,5000", help="bootstrap sizes ('' for none)")
    p.add_argument("--only-events", action="store_true", help="events only: no bootstrap, churn, resync")
    p.add_argument("--quick", action="store_true",
                   help="sizes 100,1000, repeat 1, churn 15 s, bootstrap 1000; no results file")
    p.add_argument("--label", default="run", help="key of this run in the results file (before, after)")
    p.add_argument("--output", default=RESULTS, help="results JSON ('' for none)")
    p.add_argument("--table", metavar="LABEL", help="print the tables of a run in the results file, run nothing")
    args = p.parse_args(argv)
    if args.table:
        with open(args.output or RESULTS) as f:
            run = json.load(f)["runs"][args.table]
        load = ", ".join(f"{x:.1f}" for x in run["machine"]["load_average_at_start"])
        print(f"{args.table}: {run['date']}, load average at start {load}, "
              f"{run['run_seconds']:.0f} s")
        print(tables(run))
        return 0
    if args.quick:
        args.sizes, args.repeat, args.churn_seconds, args.bootstrap, args.output = "100,1000", 1, 15, "1000", ""
    args.events = args.events.split(",")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes = [int(s) for s in args.sizes.split(",")]
    started, load = time.time(), os.getloadavg()
    res: dict = {"events": [], "bootstrap": [], "file_reread": file_reread(max(sizes))}
    workdir = tempfile.mkdtemp(prefix="fb-bench-")
    try:
        for mode in args.modes.split(","):
            for n in sizes:
                if mode == "port" and n > PORT_MODE_MAX:
                    continue
                floor, floor_cpu = floor_events(workdir, mode, n, args.repeat, args.events)
                for source in args.sources.split(","):
                    entry = {"source": source, "mode": mode, "n": n, "floor": floor, "floor_cpu": floor_cpu}
                    try:
                        run = session_run(workdir, source, mode, n, args, largest=n == max(sizes))
                        entry.update(run, agent=run.pop("events"))
                    except Exception as e:   # one bad session does not lose the others
                        entry.update(agent={}, error=f"{type(e).__name__}: {e}"[:2000])
                    res["events"].append(entry)
                    print(f"  {source} {mode} {n}: {entry.get('agent')} floor {floor}", file=sys.stderr, flush=True)
        if not args.only_events:
            for n in [int(s) for s in args.bootstrap.split(",") if s]:
                for source in args.sources.split(","):
                    try:
                        b = bootstrap(workdir, source, n)
                    except Exception as e:
                        b = {"nodes": n, "error": f"{type(e).__name__}: {e}"[:2000]}
                    res["bootstrap"].append({"source": source, **b})
                    print(f"  bootstrap {source} {n}: {b}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(tables(res))
    errors = [e["error"] for e in res["events"] + res["bootstrap"] if "error" in e]
    for e in errors:
        print(f"error: {e}")
    if args.output:
        doc = {}
        if os.path.exists(args.output):
            with open(args.output) as f:
                doc = json.load(f)
        doc["targets"] = TARGETS
        doc.setdefault("runs", {})[args.label] = {"targets": TARGETS,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": {**machine_info(), "load_average_at_start": load},
            "run_seconds": round(time.time() - started, 1), "repeat": args.repeat,
            "churn_seconds": args.churn_seconds, **res}
        os.makedirs(os.path.dirname(args.output), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"wrote {os.path.relpath(args.output, REPO)} ({args.label})")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
