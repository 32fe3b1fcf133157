"""The agent's incremental pass against the raw floor, side by side in one run.

Why: one node's change should cost the agent at most 1.5x what OVS itself needs
for it, at 5000 peers as at 5, and the periodic full resync should stay under
0.5 s with zero changes.  This measures exactly that, in-process,
against a real sandbox OVS (ovsdb-server + ovs-vswitchd --enable-dummy):

  agent        `Agent.reconcile_once()` for a source change (an already running,
               connected agent after its first full pass): the incremental path
               (build the changed peers' parts, diff against the record, one
               OVSDB transaction where rows change, one ovs-ofctl bundle).
  floor        the same change written directly: `ovs-ofctl --bundle add-flows`
               of exactly the flows that step changed (and one `ovs-vsctl`
               transaction where rows change).  Measured on the same OVS right
               after the agent's step: the change is first undone (untimed),
               then redone by the timed command, so both see the same tables.
  old path     the same event through a full pass (what every event cost before).
  ratio, best  median agent / median floor, and best agent / best floor of the R runs.
  cpu a/f      CPU seconds (this process + ovs-ofctl/ovs-vsctl children; not vswitchd's):
               the agent's step / the floor's commands.  Less skewed by a busy machine.
  +fresh       what the agent pays on top when the source hands it new Node
               objects for unchanged nodes too (each compared by value); the
               agent column is for a source that keeps them (identity checks).
  full resync  `reconcile_once()` for the periodic resync afterwards: must find
               zero changes (and so proves the incremental steps left OVS exactly
               as a full pass wants it).
  resync-      the same full pass without the agent's record and parse cache
               (`Reconciler.apply()` with a fresh OpenFlow client): every peer
               rebuilt, every dumped line parsed, as a resync cost before.

Steps, repeated R times (each a real change, and the four come back to the
start): node N+1 joins, it leaves, node-00002's IP changes, and changes back.  The source here is a
plain object handing the agent a new node set (the file source's cost, and the
event-to-installed latency through it, are bench/control_plane.py's agent
driver).

Run: python -m bench.incremental [--sizes 5000] [--modes flow,port] [--repeat 5]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench.control_plane import MOVED_IP_BASE, PORT_MODE_MAX, config_data, model_config, node, vsctl_args, write_results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "results", "incremental.json")
STEPS = ("join", "leave", "ipchange", "ipback")


class Source:
    """The smallest node source: the agent asks `config()`; the bench swaps it."""

    def __init__(self, cfg):
        self.cfg = cfg

    def config(self):
        return self.cfg

    def start(self, notify) -> None:
        pass

    def stop(self) -> None:
        pass


def cpu_now() -> float:
    """CPU seconds of this process and its waited-for children (ovs-ofctl, ovs-vsctl): less
    sensitive to other work on the machine than wall time (vswitchd's share is not in it)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def keep_unchanged(old, new):
    """`new` with the Node objects of `old` where a node did not change: what a source
    that re-reads only what changed hands the agent (the agent then compares identities)."""
    have = {n.name: n for n in old.nodes}
    return dataclasses.replace(new, nodes=tuple(have[n.name] if have.get(n.name) == n else n for n in new.nodes))


def inverse(plan):
    """The changes that undo `plan` (same kinds, old and new swapped)."""
    from ovs_mesh.ovs.model import FlowChange, PortChange
    from ovs_mesh.reconcile.plan import Plan

    flip = {"add": "delete", "delete": "add", "modify": "modify"}
    rows = tuple(PortChange(flip[c.action], c.name, old=c.new, new=c.old) for c in plan.ovsdb)
    flows = tuple(FlowChange(flip[c.action], c.name, old=c.new, new=c.old) for c in plan.flows)
    return Plan(ovsdb=rows, flows=flows)


def run_raw(ovs, plan) -> float:
    """The floor: one ovs-vsctl transaction (when rows change) + one ovs-ofctl bundle."""
    from ovs_mesh.ovs.openflow import OFCTL, bundle_text

    seconds = 0.0
    args = vsctl_args(plan.ovsdb)
    if args:
        s = time.perf_counter()
        subprocess.run(["ovs-vsctl", f"--db={ovs.remote}", "--timeout=60", *args], check=True,
                       capture_output=True)
        seconds += time.perf_counter() - s
    text = bundle_text(list(plan.flows))
    if text:
        s = time.perf_counter()
        subprocess.run([*OFCTL, "--bundle", "add-flows", ovs.mgmt("obr0"), "-"], input=text, text=True,
                       check=True, capture_output=True)
        seconds += time.perf_counter() - s
    return seconds


def wait_ofports(agent, plan) -> None:
    """After ovs-vsctl: wait until the agent's IDL sees the ports it added (no timing)."""
    names = [c.name for c in plan.ovsdb if c.action == "add"]
    client = agent.session.ovsdb
    deadline = time.monotonic() + 30
    while names and time.monotonic() < deadline:
        health = client.health(names)
        if all(h.ofport and h.ofport > 0 for h in health.values()):
            return
        time.sleep(0.01)


def ofctl_costs(ovs, runs: int = 10) -> dict:
    """Where the floor's time goes: `ovs-ofctl --version` (the process alone: fork, exec,
    dynamic loading; no connection) against a 4-flow bundle (process + connection +
    handshake + bundle open/add/commit + vswitchd's work).  The difference is what a
    persistent OpenFlow connection could save at most, per change."""
    from ovs_mesh.ovs.openflow import OFCTL

    flows = [f"cookie=0x1,table=99,priority={i},ip,nw_dst=172.31.{i}.0/24,actions=drop" for i in range(4)]
    add = "".join(f"add {f}\n" for f in flows)
    delete = "".join(f"delete_strict {f.rsplit(',actions', 1)[0].replace('cookie=0x1', 'cookie=0x1/-1')}\n"
                     for f in flows)
    version, bundle = [], []
    for i in range(runs):
        s = time.perf_counter()
        subprocess.run([*OFCTL, "--version"], check=True, capture_output=True)
        version.append(time.perf_counter() - s)
        s = time.perf_counter()
        subprocess.run([*OFCTL, "--bundle", "add-flows", ovs.mgmt("obr0"), "-"], input=add if i % 2 == 0 else delete,
                       text=True, check=True, capture_output=True)
        bundle.append(time.perf_counter() - s)
    subprocess.run([*OFCTL, "del-flows", ovs.mgmt("obr0"), "cookie=0x1/-1"], check=True, capture_output=True)
    return {"ofctl_version_seconds": statistics.median(version), "ofctl_bundle4_seconds": statistics.median(bundle)}


def sequence(mode: str, n: int, repeat: int, workdir: str) -> dict:
    from ovs_mesh.agent.installed import changed_names, node_map
    from ovs_mesh.agent.loop import Agent
    from ovs_mesh.agent.schedule import Kick, Pass, Reason
    from ovs_mesh.agent.sdnotify import SdNotify
    from ovs_mesh.lab.daemons import OvsDaemons

    d = tempfile.mkdtemp(prefix=f"inc-bench-{mode}-{n}-", dir=workdir)
    ovs = OvsDaemons(d, dummy=True)
    out: dict = {"mode": mode, "size": n, "steps": {}}
    try:
        ovs.start()
        base = [node(i) for i in range(n + 1)]
        joiner = node(n + 1)
        src = Source(model_config(config_data(base, mode, ovs.remote)))
        agent = Agent(src, resync=3600, notifier=SdNotify(environ={}), watch=False)
        start = time.perf_counter()
        # A cold port-mode transaction can outlast the agent's OVSDB timeout on a busy
        # machine: the agent retries, as it would in service.
        assert any(agent.reconcile_once(Pass((Kick(Reason.START),))) for _ in range(10)), "no first pass"
        out["cold_full_pass"] = time.perf_counter() - start
        source_change = Pass((Kick(Reason.SOURCE),))

        def nodes_for(step):
            """The inventory after `step`; the four steps in order come back to `base`."""
            cfg_nodes = {x["name"]: x for x in base}
            if step == "join":
                cfg_nodes[joiner["name"]] = joiner
            elif step == "ipchange":
                cfg_nodes["node-00002"] = node(2, MOVED_IP_BASE + 2)
            return list(cfg_nodes.values())   # leave: the joiner again; ipback: node-00002's IP again

        results = {s: {"agent": [], "floor": [], "changes": [], "flow_changes": [], "txn": [], "kinds": [],
                       "fresh": [], "agent_cpu": [], "floor_cpu": []} for s in STEPS}
        for _ in range(repeat):
            for step in STEPS:
                fresh = model_config(config_data(nodes_for(step), mode, ovs.remote))
                # What a fresh set of Node objects adds: every node compared by value.
                s = time.perf_counter()
                changed_names(agent.installed, node_map(fresh))
                results[step]["fresh"].append(time.perf_counter() - s)
                src.cfg = keep_unchanged(src.cfg, fresh)
                before = dict(agent.passes)
                s, c = time.perf_counter(), cpu_now()
                ok = agent.reconcile_once(source_change)
                agent_s, agent_cpu = time.perf_counter() - s, cpu_now() - c
                assert ok, f"{step}: the agent's pass failed"
                kind = next(k for k in agent.passes if agent.passes[k] != before[k])
                plan = agent_last_plan(agent)
                undo = inverse(plan)
                run_raw(ovs, undo)
                wait_ofports(agent, undo)
                c = cpu_now()
                floor_s = run_raw(ovs, plan)
                r_cpu = cpu_now() - c
                wait_ofports(agent, plan)
                r = results[step]
                r["agent"].append(agent_s)
                r["floor"].append(floor_s)
                r["agent_cpu"].append(agent_cpu)
                r["floor_cpu"].append(r_cpu)
                r["changes"].append(len(plan.ovsdb) + len(plan.flows))
                r["flow_changes"].append(len(plan.flows))
                r["txn"].append(1 if plan.ovsdb else 0)
                r["kinds"].append(kind)
        # The old path: the same join through a full pass.
        src.cfg = model_config(config_data(nodes_for("join"), mode, ovs.remote))
        s = time.perf_counter()
        assert agent.reconcile_once(Pass((Kick(Reason.RESYNC),)))
        out["full_pass_join"] = time.perf_counter() - s
        src.cfg = model_config(config_data(nodes_for("leave"), mode, ovs.remote))
        assert agent.reconcile_once(source_change)
        resync, resync_cpu = [], []
        for _ in range(3):
            s, c = time.perf_counter(), cpu_now()
            assert agent.reconcile_once(Pass((Kick(Reason.RESYNC),)))
            resync.append(time.perf_counter() - s)
            resync_cpu.append(cpu_now() - c)
            changes = agent_last_changes(agent)
            assert changes == 0, f"the full resync after incremental steps found {changes} changes"
        out["full_resync"] = {"seconds": statistics.median(resync), "runs": resync, "changes": 0,
                              "cpu_seconds": statistics.median(resync_cpu)}
        # The same full pass without the record (every peer rebuilt) and with a fresh
        # OpenFlow client (every dumped line parsed): what a resync cost before.
        from ovs_mesh.ovs.model import BRIDGE
        from ovs_mesh.ovs.openflow import OpenFlow
        from ovs_mesh.reconcile.reconciler import Reconciler

        plain, plain_cpu = [], []
        for _ in range(3):
            rec = Reconciler(src.cfg, agent.session.ovsdb, OpenFlow(src.cfg.local.rundir, BRIDGE))
            s, c = time.perf_counter(), cpu_now()
            assert not rec.apply().changes
            plain.append(time.perf_counter() - s)
            plain_cpu.append(cpu_now() - c)
        out["full_resync_without_record"] = {"seconds": statistics.median(plain), "runs": plain,
                                             "cpu_seconds": statistics.median(plain_cpu)}
        for step, r in results.items():
            out["steps"][step] = {
                "agent_seconds": statistics.median(r["agent"]), "floor_seconds": statistics.median(r["floor"]),
                "fresh_nodes_extra_seconds": statistics.median(r["fresh"]),
                "agent_cpu_seconds": statistics.median(r["agent_cpu"]),
                "floor_cpu_seconds": statistics.median(r["floor_cpu"]),
                "ratio": statistics.median(r["agent"]) / statistics.median(r["floor"]),
                # best of R each: what a busy machine's noise leaves out
                "agent_min_seconds": min(r["agent"]), "floor_min_seconds": min(r["floor"]),
                "min_ratio": min(r["agent"]) / min(r["floor"]),
                "agent_runs": [round(x, 4) for x in r["agent"]], "floor_runs": [round(x, 4) for x in r["floor"]],
                "changes": max(r["changes"]), "flow_changes": max(r["flow_changes"]),
                "ovsdb_transactions": max(r["txn"]),
                "kinds": sorted(set(r["kinds"]))}
        out["passes"] = dict(agent.passes)
        out["ofctl"] = ofctl_costs(ovs)
        agent.session.close()
    finally:
        ovs.stop()
        shutil.rmtree(d, ignore_errors=True)
    return out


_LAST: dict = {}


def _capture():
    """Keep the last pass's result (the agent writes it to its status file; read it back here)."""
    from ovs_mesh.agent import loop

    real = loop.write_status

    def keep(rundir, result, kind="full"):
        _LAST["result"] = result
        return real(rundir, result, kind)
    loop.write_status = keep


def agent_last_plan(_agent):
    return _LAST["result"].plan


def agent_last_changes(_agent) -> int:
    return len(_LAST["result"].changes)


def table(results: list[dict]) -> str:
    head = (f"{'mode':4} {'N':>5} {'step':8} | {'agent s':>8} {'floor s':>8} {'ratio':>6} {'best':>5} {'+fresh':>7} | "
            f"{'cpu a/f':>11} | {'txn':>3} {'flows':>5} | path        | target <=1.5x")
    lines = [head, "-" * len(head)]
    for r in results:
        for step, f in r["steps"].items():
            lines.append(f"{r['mode']:4} {r['size']:5} {step:8} | {f['agent_seconds']:8.4f} "
                         f"{f['floor_seconds']:8.4f} {f['ratio']:6.2f} {f['min_ratio']:5.2f} "
                         f"{f['fresh_nodes_extra_seconds']:7.4f} | "
                         f"{f['agent_cpu_seconds']:5.3f}/{f['floor_cpu_seconds']:5.3f} | "
                         f"{f['ovsdb_transactions']:>3} "
                         f"{f['flow_changes']:>5} | {','.join(f['kinds']):11} | "
                         f"{'ok' if f['ratio'] <= 1.5 else 'FAIL'}")
        lines.append(f"{r['mode']:4} {r['size']:5} {'join/old':8} | {r['full_pass_join']:8.4f} "
                     f"{'':8} {'':6} {'':5} {'':7} | {'':11} |     {'':5} | full pass   | (every peer rebuilt)")
        oc = r["ofctl"]
        lines.append(f"{r['mode']:4} {r['size']:5} {'ofctl':8} | process alone (--version) "
                     f"{oc['ofctl_version_seconds']:.4f}s, "
                     f"a 4-flow bundle {oc['ofctl_bundle4_seconds']:.4f}s")
        fr = r["full_resync"]
        lines.append(f"{r['mode']:4} {r['size']:5} {'resync':8} | {fr['seconds']:8.4f} {'':8} {'':6} {'':5} {'':7} | "
                     f"{fr['cpu_seconds']:5.3f}{'':6} | "
                     f"{0:>3} {fr['changes']:>5} | full pass   | <0.5s, 0 changes: "
                     f"{'ok' if fr['seconds'] < 0.5 else 'FAIL'}")
        fp = r["full_resync_without_record"]
        lines.append(f"{r['mode']:4} {r['size']:5} {'resync-':8} | {fp['seconds']:8.4f} "
                     f"{'':8} {'':6} {'':5} {'':7} | {fp['cpu_seconds']:5.3f}{'':6} |           | full pass   | "
                     "every peer rebuilt, every line parsed")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.incremental", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="5000", help="peer counts (default 5000)")
    p.add_argument("--modes", default="flow,port", help=f"flow,port (port mode only up to {PORT_MODE_MAX} peers)")
    p.add_argument("--repeat", type=int, default=5, help="repetitions of the four steps (medians; default 5)")
    p.add_argument("--output", default=RESULTS, help="results JSON (default bench/results/incremental.json)")
    p.add_argument("--no-output", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    _capture()
    started, load = time.time(), os.getloadavg()
    workdir = tempfile.mkdtemp(prefix="inc-bench-")
    results = []
    try:
        for mode in args.modes.split(","):
            for n in (int(x) for x in args.sizes.split(",")):
                size = min(n, PORT_MODE_MAX) if mode == "port" else n
                if any(r["mode"] == mode and r["size"] == size for r in results):
                    continue
                print(f"  {mode} {size} ...", file=sys.stderr, flush=True)
                results.append(sequence(mode, size, args.repeat, workdir))
                print(table(results[-1:]), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(table(results))
    if not args.no_output:
        write_results(args.output, started, load, repeat=args.repeat, results=results)
    bad = any(f["ratio"] > 1.5 for r in results for f in r["steps"].values()) or \
        any(r["full_resync"]["seconds"] >= 0.5 for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
