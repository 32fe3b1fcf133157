"""`lab check`: prove the Kubernetes network model with real packets.

For each address family the pods have (IPv4, IPv6 or both: `lab up
--ip-family`), every pod pings every other pod and sends a UDP echo that
reports the source address the receiver saw (must be the sender's own pod
address of that family: no NAT); pods on different nodes also send a ping
that fills the pod MTU and must not be fragmented (IPv4: DF set; IPv6 has no
DF bit and routers never fragment, so `ping -6 -M do` at MTU - 48 bytes must
get through) and one a byte larger, which must be refused; every node pings
every remote pod; a >= 10 MB TCP transfer runs from the first pod of each
node to the first pod of the next.  Pods of nodes no longer in the topology
file must be unreachable.  Probes run inside the namespaces (probe.py).  The
report's cells name their family; `families` holds one summary per family,
`summary` the totals.
"""
from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .pods import address_of, family_of
from .record import LabError, LabState, Node
from .resources import kill, run
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


# How long the echo servers get to start: a Python start over ssh in an emulated VM takes seconds
# on an idle host and tens of seconds on a busy one.  Only a server that never starts costs this.
SERVER_START_SECONDS = 60


def _start_servers(st: LabState, pods: list[dict]) -> list[tuple[dict, subprocess.Popen]]:
    procs = []
    for pod in pods:
        # stdin stays open while we run: the server exits when it closes, so one
        # reached through ssh or nsenter never outlives the check.
        p = subprocess.Popen(_probe_cmd(pod, "serve"), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append((st.record("proc", pid=p.pid, netns=pod["ns"], what="echo server"), p))
    deadline = time.monotonic() + SERVER_START_SECONDS
    for rec, p in procs:
        ready, _, _ = select.select([p.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = p.stdout.readline().strip() if ready else ""
        if line != "ready":
            err = p.stderr.read().strip() if p.poll() is not None else f"no 'ready' within {SERVER_START_SECONDS} s"
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


def families_of(pods: list[dict]) -> list[str]:
    """The address families the pods have, IPv4 first (a lab's --ip-family)."""
    have = {family_of(ip) for p in pods for ip in p.get("ips") or [p["ip"]]}
    return [f for f in ("ipv4", "ipv6") if f in have]


def _jobs(st: LabState, family: str, pods: list[dict], live, timeout: float, tcp_bytes: int) -> list:
    """(kind, source, family, job) for every pod and node, probing the targets' `family` addresses."""
    pods = [p for p in pods if address_of(p, family)]
    ip = lambda p: address_of(p, family)  # noqa: E731 a one-line closure over the family, as its neighbours
    firsts = [p for p in pods if p["j"] == 1 and live(p["node"])]
    jobs = []
    for src in pods:
        targets = [{"ip": ip(d), "name": d["name"], "family": family, "echo": True, "df": d["node"] != src["node"],
                    "expect": d["node"] == src["node"] or (live(src["node"]) and live(d["node"]))}
                   for d in pods if d is not src]
        tcp = []
        if src in firsts and len(firsts) > 1:
            dst = firsts[(firsts.index(src) + 1) % len(firsts)]
            tcp = [{"ip": ip(dst), "name": dst["name"], "bytes": tcp_bytes}]
        jobs.append(("pod", src, family, {"timeout": timeout, "targets": targets, "tcp": tcp}))
    for n in st.nodes:
        targets = [{"ip": ip(d), "name": d["name"], "family": family, "expect": live(n.name) and live(d["node"])}
                   for d in pods if d["node"] != n.name]
        jobs.append(("node", n, family, {"timeout": timeout, "targets": targets, "ifname": "kbr0"}))
    return jobs


def _cells(kind: str, src, family: str, job: dict, res: dict, report: dict) -> None:
    """Add one probe's results to the report (each cell names its family)."""
    for t, r in zip(job["targets"], res["targets"]):
        cell = {"family": family, "src": src["name"] if kind == "pod" else src.name, "dst": t["name"],
                "dst_ip": t["ip"], "expect": t["expect"], "ping": r["ping"]}
        if kind == "pod":
            cell["src_ip"] = address_of(src, family)
            cell["source_seen"] = r.get("source_seen")
            if t["df"]:
                cell.update(df=r.get("df"), df_size=r.get("df_size"), over_refused=r.get("over_refused"))
            reached = (r["ping"] and cell["source_seen"] == cell["src_ip"] and cell.get("df", True)
                       and cell.get("over_refused", True))
            cell["ok"] = reached if t["expect"] else not r["ping"] and not cell["source_seen"]
            report["pod_to_pod"].append(cell)
        else:
            cell["ok"] = r["ping"] if t["expect"] else not r["ping"]
            report["node_to_pod"].append(cell)
    for t, r in zip(job.get("tcp", []), res.get("tcp", [])):
        report["tcp"].append({**r, "family": family, "src": src["name"], "dst": t["name"], "dst_ip": t["ip"]})


def _summary(cells: dict, seconds: float) -> dict:
    every = cells["pod_to_pod"] + cells["node_to_pod"] + cells["tcp"]
    failed = [c for c in every if not c["ok"]]
    return {"checks": len(every), "failed": len(failed), "ok": not failed,
            "pod_to_pod": len(cells["pod_to_pod"]), "node_to_pod": len(cells["node_to_pod"]),
            "tcp_transfers": len(cells["tcp"]), "seconds": seconds}


def check(st: LabState, timeout: float | None = None, tcp_bytes: int = TCP_BYTES, progress=None) -> dict:
    """Probe every family the pods have; the report's cells name their family, `families`
    holds a summary per family and `summary` the totals."""
    progress = progress or (lambda s: None)
    t0 = time.monotonic()
    if timeout is None:
        timeout = 60 if st.params.get("mode") == "stp" else 20  # RSTP takes a while to forward
    active = {e["name"] for e in read_yaml(st.topology_path).get("nodes") or []}
    pods = st.pods
    live = lambda node: node in active  # noqa: E731 a one-line predicate, passed on as a value
    families = families_of(pods)
    jobs = [j for f in families for j in _jobs(st, f, pods, live, timeout, tcp_bytes)]
    procs = _start_servers(st, pods)
    progress(f"check: {len(pods)} pods, {len(st.nodes)} nodes, {'+'.join(families) or 'no'} addresses, "
             f"echo servers up; probing (deadline {timeout:.0f}s per target)")
    try:
        with ThreadPoolExecutor(max_workers=4) as ex:
            results = list(ex.map(lambda j: _probe(j[1], j[3]), jobs))
    finally:
        _stop_servers(st, procs)
    report: dict[str, Any] = {"lab": st.name, "params": st.params, "active_nodes": sorted(active), "families": {},
              "pods": [{k: p[k] for k in ("name", "node", "ip", "ns")} | {"ips": p.get("ips") or [p["ip"]]}
                       for p in pods],
              "nodes": [{"name": n.name, "ip": n.ip, "ns": n.ns} for n in st.nodes],
              "pod_to_pod": [], "node_to_pod": [], "tcp": []}
    for (kind, src, family, job), res in zip(jobs, results):
        _cells(kind, src, family, job, res, report)
    seconds = round(time.monotonic() - t0, 1)
    for f in families:
        mine = {k: [c for c in report[k] if c["family"] == f] for k in ("pod_to_pod", "node_to_pod", "tcp")}
        s = report["families"][f] = _summary(mine, seconds)
        s["df_size"] = max([c["df_size"] for c in mine["pod_to_pod"] if c.get("df_size")], default=None)
        if len(active) > 1 and not mine["tcp"]:
            s.update(ok=False, failed=s["failed"] + 1)
    total = {k: sum(s[k] for s in report["families"].values())
             for k in ("checks", "failed", "pod_to_pod", "node_to_pod", "tcp_transfers")}
    ok = bool(families) and all(s["ok"] for s in report["families"].values())
    report["summary"] = {**total, "ok": ok, "failed": total["failed"] or int(not ok), "seconds": seconds}
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
    return "MTU" if c.get("df") is False or c.get("over_refused") is False else "FAIL"


HEADER = {"ipv4": 28, "ipv6": 48}   # IP + ICMP header bytes: a ping of -s N is N + this on the wire
LABEL = {"ipv4": "IPv4", "ipv6": "IPv6"}


def _render_family(report: dict, family: str) -> list[str]:
    """One family's matrices and TCP transfers."""
    pods = [p for p in report["pods"] if address_of(p, family)]
    ip_of = {p["name"]: address_of(p, family) for p in pods}
    names = [p["name"] for p in pods]
    w = max([len(n) for n in names] + [6]) + 1
    iw = max([len(ip) for ip in ip_of.values()] + [len(n["ip"]) for n in report["nodes"]] + [15]) + 1
    mine = lambda kind: [c for c in report[kind] if c.get("family", "ipv4") == family]  # noqa: E731 one line, as `ip`
    lines = ["", f"{LABEL[family]} pod -> pod  (ping; UDP echo sees the sender's pod address; "
                 "unfragmented ping at the pod MTU across nodes, one byte more refused)",
             " " * (w + iw) + "".join(n.rjust(w) for n in names)]
    p2p = {(c["src"], c["dst"]): {**c, "src_ip": ip_of[c["src"]]} for c in mine("pod_to_pod")}
    for s in names:
        lines.append(s.ljust(w) + ip_of[s].ljust(iw) + "".join(_cell(p2p.get((s, d))).rjust(w) for d in names))
    lines += ["", f"{LABEL[family]} node -> pod  (ping)", " " * (w + iw) + "".join(n.rjust(w) for n in names)]
    n2p = {(c["src"], c["dst"]): c for c in mine("node_to_pod")}
    for n in report["nodes"]:
        lines.append(n["name"].ljust(w) + n["ip"].ljust(iw)
                     + "".join(_cell(n2p.get((n["name"], d))).rjust(w) for d in names))
    lines.append("")
    for t in mine("tcp"):
        status = "ok" if t["ok"] else f"FAIL {t.get('error') or ''}"
        lines.append(f"{LABEL[family]} tcp {t['src']} -> {t['dst']}: {t['received']}/{t['bytes']} bytes in "
                     f"{t['seconds']}s ({t['mbit_s']} Mbit/s) {status}")
    return lines


def _summary_line(label: str, s: dict) -> str:
    return (f"{label}: {s['checks'] - s['failed']}/{s['checks']} checks passed "
            f"({s['pod_to_pod']} pod->pod, {s['node_to_pod']} node->pod, {s['tcp_transfers']} TCP)"
            + (f", unfragmented {s['df_size']}-byte pings" if s.get("df_size") else "")
            + f" in {s['seconds']}s: {'PASS' if s['ok'] else 'FAIL'}")


def render(report: dict) -> str:
    params = report["params"]
    families = list(report.get("families") or {"ipv4": None})
    lines = [f"lab {report['lab']}: {params.get('nodes')} nodes, {params.get('tunnel')}, "
             f"{params.get('mode')} mode, {'+'.join(LABEL[f] for f in families)} pods, "
             f"{LABEL[params.get('underlay', 'ipv4')]} underlay"]
    for f in families:
        lines += _render_family(report, f)
    mtus = sorted({c["df_size"] + HEADER[c.get("family", "ipv4")] for c in report["pod_to_pod"] if c.get("df_size")})
    lines += ["", f"legend: ok | blk = unreachable as expected (node not in topology) | FAIL no ping | "
              f"NAT wrong source | ECHO no echo | MTU unfragmented ping at {'/'.join(map(str, mtus)) or '?'} "
              "failed or one byte more got through | LEAK"]
    if len(families) > 1:
        lines += [_summary_line(f"summary {LABEL[f]}", report["families"][f]) for f in families]
    lines.append(_summary_line("summary", report["summary"]))
    return "\n".join(lines)
