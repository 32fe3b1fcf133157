"""`lab check`: prove the Kubernetes network model with real packets.

Every pod pings every other pod and sends a UDP echo that reports the source
address the receiver saw (must be the sender's pod IP: no NAT); pods on
different nodes also ping with DF set at the full pod MTU; every node pings
every remote pod; a >= 10 MB TCP transfer runs from the first pod of each
node to the first pod of the next.  Pods of nodes no longer in the topology
file must be unreachable.  Probes run inside the namespaces (probe.py).
"""
from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from .resources import kill, run
from .state import LabError, LabState, Node
from .topology import read_yaml

TCP_BYTES = 10 * 1024 * 1024
PROBE = [sys.executable, "-m", "ovs_mesh.lab.probe"]


def _probe_cmd(rec: dict | Node, *args: str) -> list[str]:
    """The probe command for a node or pod record, run in its namespace.

    Records of remote machines (the Vagrant lab, ovs_mesh/lab/remote.py) carry
    `via` (a command prefix such as ssh) and `python` (the interpreter there).
    """
    if isinstance(rec, Node):
        via, python, ns = rec.via, rec.python, rec.ns
    else:
        via, python, ns = rec.get("via", ()), rec.get("python"), rec["ns"]
    return [*via, *(["ip", "netns", "exec", ns] if ns else []), python or PROBE[0], *PROBE[1:], *args]


def _start_servers(st: LabState, pods: list[dict]) -> list[tuple[dict, subprocess.Popen]]:
    procs = []
    for pod in pods:
        # stdin stays open while we run: the server exits when it closes, so one
        # reached through ssh or nsenter never outlives the check.
        p = subprocess.Popen(_probe_cmd(pod, "serve"), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append((st.record("proc", pid=p.pid, netns=pod["ns"], what="echo server"), p))
    deadline = time.monotonic() + 20
    for rec, p in procs:
        ready, _, _ = select.select([p.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = p.stdout.readline().strip() if ready else ""
        if line != "ready":
            err = p.stderr.read().strip() if p.poll() is not None else "no 'ready' within 20 s"
            raise LabError(f"echo server in {rec['netns']} did not start: {line} {err}".replace("  ", " "))
    return procs


def _stop_servers(st: LabState, procs) -> None:
    for rec, p in procs:
        p.stdin.close()
        kill(p.pid, rec["netns"])
        p.wait(timeout=5)
        st.forget(rec)


def _probe(rec: dict | Node, job: dict) -> dict:
    p = run(*_probe_cmd(rec, "probe"), input=json.dumps(job), timeout=job["timeout"] * 4 + 120)
    return json.loads(p.stdout)


def check(st: LabState, timeout: float | None = None, tcp_bytes: int = TCP_BYTES, progress=None) -> dict:
    progress = progress or (lambda s: None)
    t0 = time.monotonic()
    if timeout is None:
        timeout = 60 if st.params.get("mode") == "stp" else 20  # RSTP takes a while to forward
    active = {e["name"] for e in read_yaml(st.topology_path).get("nodes") or []}
    pods = st.pods
    live = lambda node: node in active  # noqa: E731
    firsts = [p for p in pods if p["j"] == 1 and live(p["node"])]
    jobs = []
    for src in pods:
        targets = [{"ip": d["ip"], "name": d["name"], "echo": True, "df": d["node"] != src["node"],
                    "expect": d["node"] == src["node"] or (live(src["node"]) and live(d["node"]))}
                   for d in pods if d is not src]
        tcp = []
        if src in firsts and len(firsts) > 1:
            dst = firsts[(firsts.index(src) + 1) % len(firsts)]
            tcp = [{"ip": dst["ip"], "name": dst["name"], "bytes": tcp_bytes}]
        jobs.append(("pod", src, {"timeout": timeout, "targets": targets, "tcp": tcp}))
    for n in st.nodes:
        targets = [{"ip": d["ip"], "name": d["name"], "expect": live(n.name) and live(d["node"])}
                   for d in pods if d["node"] != n.name]
        jobs.append(("node", n, {"timeout": timeout, "targets": targets, "ifname": "kbr0"}))
    procs = _start_servers(st, pods)
    progress(f"check: {len(pods)} pods, {len(st.nodes)} nodes, echo servers up; probing "
             f"(deadline {timeout:.0f}s per target)")
    try:
        with ThreadPoolExecutor(max_workers=4) as ex:
            results = list(ex.map(lambda j: _probe(j[1], j[2]), jobs))
    finally:
        _stop_servers(st, procs)
    report = {"lab": st.name, "params": st.params, "active_nodes": sorted(active),
              "pods": [{k: p[k] for k in ("name", "node", "ip", "ns")} for p in pods],
              "nodes": [{"name": n.name, "ip": n.ip, "ns": n.ns} for n in st.nodes],
              "pod_to_pod": [], "node_to_pod": [], "tcp": []}
    for (kind, src, job), res in zip(jobs, results):
        for t, r in zip(job["targets"], res["targets"]):
            cell = {"src": src["name"] if kind == "pod" else src.name, "dst": t["name"], "dst_ip": t["ip"],
                    "expect": t["expect"], "ping": r["ping"]}
            if kind == "pod":
                cell["source_seen"] = r.get("source_seen")
                if t["df"]:
                    cell.update(df=r.get("df"), df_size=r.get("df_size"))
                reached = r["ping"] and cell["source_seen"] == src["ip"] and cell.get("df", True)
                cell["ok"] = reached if t["expect"] else not r["ping"] and not cell["source_seen"]
                report["pod_to_pod"].append(cell)
            else:
                cell["ok"] = r["ping"] if t["expect"] else not r["ping"]
                report["node_to_pod"].append(cell)
        for t, r in zip(job.get("tcp", []), res.get("tcp", [])):
            report["tcp"].append({**r, "src": src["name"], "dst": t["name"], "dst_ip": t["ip"]})
    cells = report["pod_to_pod"] + report["node_to_pod"] + report["tcp"]
    failed = [c for c in cells if not c["ok"]]
    report["summary"] = {"checks": len(cells), "failed": len(failed), "ok": not failed,
                         "pod_to_pod": len(report["pod_to_pod"]), "node_to_pod": len(report["node_to_pod"]),
                         "tcp_transfers": len(report["tcp"]), "seconds": round(time.monotonic() - t0, 1)}
    if len(active) > 1 and not report["tcp"]:
        report["summary"].update(ok=False, failed=len(failed) + 1)
    return report


def _cell(c: dict | None) -> str:
    if c is None:
        return "-"
    if not c["expect"]:
        return "blk" if c["ok"] else "LEAK"
    if c["ok"]:
        return "ok"
    if not c["ping"]:
        return "FAIL"
    if "source_seen" in c and c["source_seen"] is None:
        return "ECHO"
    if "source_seen" in c and c["source_seen"] != c.get("src_ip", c["source_seen"]):
        return "NAT"
    return "MTU" if c.get("df") is False else "FAIL"


def render(report: dict) -> str:
    pods = report["pods"]
    ip_of = {p["name"]: p["ip"] for p in pods}
    names = [p["name"] for p in pods]
    w = max([len(n) for n in names] + [6]) + 1
    lines = [f"lab {report['lab']}: {report['params'].get('nodes')} nodes, {report['params'].get('tunnel')}, "
             f"{report['params'].get('mode')} mode",
             "", "pod -> pod  (ping; UDP echo sees the sender's pod IP; DF ping at pod MTU across nodes)",
             " " * (w + 16) + "".join(n.rjust(w) for n in names)]
    p2p = {(c["src"], c["dst"]): {**c, "src_ip": ip_of[c["src"]]} for c in report["pod_to_pod"]}
    for s in names:
        lines.append(s.ljust(w) + ip_of[s].ljust(16) + "".join(_cell(p2p.get((s, d))).rjust(w) for d in names))
    lines += ["", "node -> pod  (ping)", " " * (w + 16) + "".join(n.rjust(w) for n in names)]
    n2p = {(c["src"], c["dst"]): c for c in report["node_to_pod"]}
    for n in report["nodes"]:
        lines.append(n["name"].ljust(w) + n["ip"].ljust(16)
                     + "".join(_cell(n2p.get((n["name"], d))).rjust(w) for d in names))
    lines.append("")
    for t in report["tcp"]:
        status = "ok" if t["ok"] else f"FAIL {t.get('error') or ''}"
        lines.append(f"tcp {t['src']} -> {t['dst']}: {t['received']}/{t['bytes']} bytes in {t['seconds']}s "
                     f"({t['mbit_s']} Mbit/s) {status}")
    mtus = sorted({c["df_size"] + 28 for c in report["pod_to_pod"] if c.get("df_size")})
    s = report["summary"]
    lines += ["", f"legend: ok | blk = unreachable as expected (node not in topology) | FAIL no ping | "
              f"NAT wrong source | ECHO no echo | MTU DF ping at {'/'.join(map(str, mtus)) or '?'} failed | LEAK",
              f"summary: {s['checks'] - s['failed']}/{s['checks']} checks passed "
              f"({s['pod_to_pod']} pod->pod, {s['node_to_pod']} node->pod, {s['tcp_transfers']} TCP) "
              f"in {s['seconds']}s: {'PASS' if s['ok'] else 'FAIL'}"]
    return "\n".join(lines)
