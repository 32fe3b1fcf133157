"""Build and remove a lab: namespaces, underlay, per-node OVS, ovs-mesh agents, pods.

Every namespace, veth, daemon directory and agent is recorded in the lab's
state file before it is created (state.py), so `down` removes all of it even
after a crash.  Node networking is done by the product itself: each node runs
`ovs-mesh --config <lab>/topology.yaml --local <node>/local.yaml agent` inside
its namespace (agents.py), so editing the shared topology file changes the
lab; `add_node`/`remove_node` grow and shrink it.  Pods are made by the
reference CNI plugins from the conflist that ovs-mesh wrote.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from ipaddress import IPv4Network

from ovs_mesh.daemons import OvsDaemons, _alive
from topology.allocate import allocate

from . import agents
from .state import NAME_RE, LabError, LabState
from .topology import cluster_of, make_topology, read_yaml, write_yaml

CNI_PATH = os.environ.get("CNI_PATH", "/usr/lib/cni")
UNDERLAY_NET = "192.168.213"     # node k has .(10+k)/24; lives only inside lab namespaces
UNDERLAY_IF = "ul0"              # the node's underlay NIC (inside its namespace)
UNDERLAY_BRIDGE = "br-phy"       # OVS bridge that carries the node IP (userspace datapath)
OVS_MESH = [sys.executable, "-m", "ovs_mesh"]


def run(*args: str, netns: str | None = None, input: str | None = None, env: dict | None = None,
        check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", netns] if netns else []) + list(args)
    p = subprocess.run(cmd, input=input, env=env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: exit {p.returncode}: {(p.stderr or p.stdout).strip()}")
    return p


def netns_exists(ns: str) -> bool:
    return os.path.exists(os.path.join("/run/netns", ns))


def ul_ns(name: str) -> str:
    return f"{name}-ul"


def node_ns(name: str, k: int) -> str:
    return f"{name}-n{k}"


def pod_ns(name: str, k: int, j: int) -> str:
    return f"{name}-n{k}p{j}"


def _node_record(st: LabState, k: int) -> dict:
    name = f"node-{k}"
    d = os.path.join(st.dir, name)
    return {"name": name, "k": k, "ns": node_ns(st.name, k), "ip": f"{UNDERLAY_NET}.{10 + k}",
            "dir": d, "rundir": os.path.join(d, "ovs"),
            # config: where a provisioning script may write a whole node config (tests/vagrant);
            # the namespace lab itself uses the shared topology plus `local`.
            "config": os.path.join(d, "config.yaml"), "local": os.path.join(d, "local.yaml"),
            "agent_log": os.path.join(d, "agent.log"), "agent_pidfile": os.path.join(d, "agent.pid"),
            "cni_conf": os.path.join(d, "cni", "10-ovs-mesh.conflist"),
            "ipam_dir": os.path.join(d, "ipam")}


def _local_section(node: dict) -> dict:
    return agents.local_section(node, UNDERLAY_BRIDGE, UNDERLAY_IF)


def check_params(name: str, nodes: int, pods_per_node: int, mesh_degree: int) -> list[str]:
    errors = []
    if not NAME_RE.match(name):
        errors.append(f"--name: {name}: must be 1-6 lowercase letters/digits starting with a letter")
    if not 1 <= nodes <= 200:
        errors.append(f"--nodes: {nodes}: must be between 1 and 200")
    if not 0 <= pods_per_node <= 50:
        errors.append(f"--pods-per-node: {pods_per_node}: must be between 0 and 50")
    if mesh_degree < 0:
        errors.append(f"--mesh-degree: {mesh_degree}: must be >= 0")
    return errors


def up(name: str, nodes: int = 3, tunnel: str = "vxlan", mode: str = "flow", mesh_degree: int = 0,
       pods_per_node: int = 2, progress=print, apply: bool = True, agent: bool = True) -> LabState:
    """Create the lab; on failure the caller runs `down` (everything is recorded).

    Each node gets an `ovs-mesh agent` (agent=True) and pods are made once
    every agent has converged; agent=False configures nodes with one
    `ovs-mesh apply` each instead.  apply=False stops after the bare nodes
    (namespaces, underlay, OVS daemons, topology file): the caller configures
    them (tests/vagrant runs the VMs' provisioning script in each node namespace).
    """
    t0 = time.monotonic()
    if LabState.load(name) is not None:
        raise LabError(f"lab {name} exists ({LabState(name).dir}); run `ovs-mesh lab down --name {name}` first")
    st = LabState(name)
    st.params.update(nodes=nodes, tunnel=tunnel, mode=mode, mesh_degree=mesh_degree,
                     pods_per_node=pods_per_node, agents=apply and agent)
    st.record("dir", path=st.dir)  # first in, last out
    node_recs = [_node_record(st, k) for k in range(1, nodes + 1)]
    topo = make_topology([(n["name"], n["ip"]) for n in node_recs], tunnel=tunnel, mode=mode,
                         mesh_degree=mesh_degree)
    st.nodes.extend(node_recs)
    st.save()
    write_yaml(st.topology_path, topo)
    progress(f"lab {name}: topology {st.topology_path}: {nodes} nodes, {tunnel}, {mode} mode"
             + (f", mesh degree {mesh_degree}" if mode == "stp" else ""))

    ul = ul_ns(name)
    _add_netns(st, ul)
    run("ip", "-n", ul, "link", "add", "br0", "type", "bridge")
    run("ip", "-n", ul, "link", "set", "br0", "up")
    progress(f"underlay: namespace {ul}, bridge br0, {UNDERLAY_NET}.0/24")
    for n in node_recs:
        _make_node(st, n)
        progress(f"{n['name']}: namespace {n['ns']}, {UNDERLAY_IF} {n['ip']}/24, ovsdb-server + ovs-vswitchd")
    if not apply:
        st.save()
        return st
    for n in node_recs:
        agents.write_local(n, _local_section(n))
    if agent:
        start_agents(st, node_recs, progress)
    else:
        _parallel(lambda n: apply_node(st, n), node_recs,
                  lambda n, out: progress(f"{n['name']}: ovs-mesh apply: {out}"))
    if pods_per_node:
        jobs = [(n, j) for n in node_recs for j in range(1, pods_per_node + 1)]
        _parallel(lambda nj: add_pod(st, *nj), jobs,
                  lambda nj, pod: progress(f"{nj[0]['name']}: pod {pod['name']} {pod['ip']} (CNI bridge)"))
    st.pods.sort(key=lambda p: (p["k"], p["j"]))
    st.save()
    progress(f"lab {name} is up in {time.monotonic() - t0:.1f}s: {nodes} nodes, "
             f"{nodes * pods_per_node} pods; run `ovs-mesh lab check --name {name}`"
             + (f"; edit {st.topology_path} and the agents follow" if agent else ""))
    return st


def _parallel(fn, items, done, workers: int = 4):
    errors = []
    with ThreadPoolExecutor(max_workers=workers) as ex:
        futures = [(it, ex.submit(fn, it)) for it in items]
        for it, fut in futures:
            try:
                done(it, fut.result())
            except Exception as e:  # collect all, report the first
                errors.append(e)
    if errors:
        raise errors[0]


def _add_netns(st: LabState, ns: str) -> None:
    st.record("netns", name=ns)
    run("ip", "netns", "add", ns)
    run("ip", "-n", ns, "link", "set", "lo", "up")


def _make_node(st: LabState, n: dict) -> None:
    ul = ul_ns(st.name)
    _add_netns(st, n["ns"])
    peer = f"n{n['k']}"
    st.record("veth", netns=ul, name=peer, peer_netns=n["ns"], peer_name=UNDERLAY_IF)
    run("ip", "-n", ul, "link", "add", peer, "type", "veth", "peer", "name", UNDERLAY_IF, "netns", n["ns"])
    run("ip", "-n", ul, "link", "set", peer, "master", "br0", "up")
    # Userspace OVS reads the veth with AF_PACKET: checksum offload would leave
    # TCP checksums unfilled (OVS-FACTS.md).
    run("ethtool", "-K", peer, "tx", "off", netns=ul)
    run("ethtool", "-K", UNDERLAY_IF, "tx", "off", netns=n["ns"])
    run("ip", "-n", n["ns"], "addr", "add", f"{n['ip']}/24", "dev", UNDERLAY_IF)
    run("ip", "-n", n["ns"], "link", "set", UNDERLAY_IF, "up")
    os.makedirs(os.path.dirname(n["cni_conf"]), exist_ok=True)
    st.record("ovs", rundir=n["rundir"], netns=n["ns"])
    OvsDaemons(n["rundir"], netns=n["ns"]).start()


def start_agents(st: LabState, nodes: list[dict], progress=print, wait: bool = True) -> None:
    """Start each node's agent (recorded first); wait until every one has converged."""
    started = []
    for n in nodes:
        pid, since = agents.start(st, n)
        started.append((n, pid, since))
    if not wait:
        return
    _parallel(lambda s: agents.wait_ready(*s), started,
              lambda s, status: progress(f"{s[0]['name']}: ovs-mesh agent pid {s[1]}: converged, "
                                         f"{len(status.get('changes', []))} changes (log {s[0]['agent_log']})"))


def restart_agent(st: LabState, node: dict | str, sig: int = signal.SIGTERM) -> dict:
    """Stop a node's agent with `sig` (SIGTERM or SIGKILL), start it again, wait until it is ready.

    Returns agents.restart's report (old/new pid, changes of the first pass, seconds).
    """
    return agents.restart(st, _node(st, node), sig)


def stop_agent(st: LabState, node: dict | str, sig: int = signal.SIGTERM) -> int | None:
    """Stop a node's agent (the mesh it installed stays); returns its pid, None if none ran."""
    return agents.stop(_node(st, node), sig)


def _node(st: LabState, node: dict | str) -> dict:
    if isinstance(node, dict):
        return node
    for n in st.nodes:
        if n["name"] == node:
            return n
    raise LabError(f"lab {st.name}: no node {node}")


def apply_node(st: LabState, n: dict, topo: dict | None = None) -> str:
    """Run `ovs-mesh apply` once in the node's namespace (shared topology + its local file)."""
    p = run(*agents.args(st, n, "apply"), netns=n["ns"], check=False, timeout=120)
    if p.returncode != 0:
        raise LabError(f"{n['name']}: ovs-mesh apply: exit {p.returncode}: {(p.stderr or p.stdout).strip()}")
    return p.stdout.strip().splitlines()[0] if p.stdout.strip() else "ok"


def wait_converged(st: LabState, n: dict, timeout: float = 30) -> dict:
    """Poll `ovs-mesh status --json` in the node until OVS matches the topology file now."""
    deadline = time.monotonic() + timeout
    while True:
        p = run(*agents.args(st, n, "status", "--json"), netns=n["ns"], check=False)
        try:
            data = json.loads(p.stdout)
        except ValueError:
            data = {"converged": False, "problems": [(p.stderr or p.stdout).strip()]}
        if data.get("converged"):
            return data
        if time.monotonic() > deadline:
            raise LabError(f"{n['name']}: not converged after {timeout:.0f}s: {data.get('problems')}\n"
                           f"{agents.log_tail(n)}")
        time.sleep(0.1)


def apply_all(st: LabState, progress=print) -> list[str]:
    """Make every node still in the (possibly edited) topology file follow it.

    A node with a running agent follows the file by itself: wait until it has
    converged.  A node without one gets a one-shot `ovs-mesh apply`.
    """
    topo = read_yaml(st.topology_path)
    names = {e["name"] for e in topo.get("nodes") or []}
    active = [n for n in st.nodes if n["name"] in names]
    c = cluster_of(topo)
    st.params.update(tunnel=c.tunnel, mode=c.mode, mesh_degree=c.mesh_degree)  # what `lab check` shows
    st.save()

    def follow(n):
        if agents.pid_of(n) is None:
            return f"ovs-mesh apply: {apply_node(st, n)}"
        d = wait_converged(st, n)
        return f"agent converged: {len(d['peers'])} peers, {d['flows']} flows"
    _parallel(follow, active, lambda n, out: progress(f"{n['name']}: {out}"))
    for n in st.nodes:
        if n["name"] not in names:
            progress(f"{n['name']}: not in {st.topology_path}: left alone")
    return sorted(names)


def _cni_env(command: str, container: str, netns: str) -> dict:
    return {**os.environ, "CNI_COMMAND": command, "CNI_CONTAINERID": container,
            "CNI_NETNS": f"/run/netns/{netns}", "CNI_IFNAME": "eth0", "CNI_PATH": CNI_PATH}


def _plugin_confs(n: dict) -> list[dict]:
    """The conflist's plugins as the runtime passes them (name, cniVersion added).

    host-local keeps its leases in /var/lib/cni by default, shared by every
    lab node: when the conflist sets no ipam.dataDir, point it into the lab dir.
    """
    with open(n["cni_conf"], encoding="utf-8") as f:
        conflist = json.load(f)
    out = []
    for plugin in conflist["plugins"]:
        conf = {"cniVersion": conflist.get("cniVersion", "0.4.0"), "name": conflist["name"], **plugin}
        ipam = conf.get("ipam")
        if isinstance(ipam, dict) and ipam.get("type") == "host-local" and not ipam.get("dataDir"):
            conf["ipam"] = {**ipam, "dataDir": n["ipam_dir"]}
        out.append(conf)
    return out


def add_pod(st: LabState, n: dict, j: int) -> dict:
    """A pod namespace with eth0 from the CNI chain, run inside the node namespace."""
    ns = pod_ns(st.name, n["k"], j)
    _add_netns(st, ns)
    container = f"{st.name}-{n['name']}-p{j}"
    result = None
    for conf in _plugin_confs(n):
        if result is not None:
            conf["prevResult"] = result
        p = run(os.path.join(CNI_PATH, conf["type"]), netns=n["ns"], input=json.dumps(conf),
                env=_cni_env("ADD", container, ns), check=False)
        if p.returncode != 0:
            raise LabError(f"{n['name']}: CNI {conf['type']} ADD for {ns}: {p.stdout.strip()} {p.stderr.strip()}")
        result = json.loads(p.stdout)
    ip = result["ips"][0]["address"].split("/")[0]
    pod = {"name": f"{n['name']}/p{j}", "ns": ns, "node": n["name"], "k": n["k"], "j": j, "ip": ip,
           "container": container}
    st.pods.append(pod)
    return pod


def down(name: str, progress=print) -> bool:
    """Remove everything the lab recorded, newest first.  Idempotent."""
    st = LabState.load(name)
    if st is None:
        # No record (its directory was removed by hand): namespaces named like
        # ours are still ours; remove them and whatever runs inside.
        leftovers = [ns for ns in _netns_list() if re.fullmatch(rf"{re.escape(name)}-(ul|n\d+(p\d+)?)", ns)]
        for ns in sorted(leftovers, key=len, reverse=True):
            _del_netns(ns, progress)
        if not leftovers:
            progress(f"lab {name}: not found (nothing to remove)")
        return bool(leftovers)
    # Agents first (all of them, in parallel), so none reacts to its OVS going away.
    _parallel(agents.stop_recorded, st.resources("agent"),
              lambda r, pid: pid and progress(f"stopped the ovs-mesh agent of {r['node']} (pid {pid})"))
    for r in reversed(st.resources()):
        kind = r["kind"]
        if kind == "ovs":
            OvsDaemons(r["rundir"], netns=r["netns"]).stop()
            progress(f"stopped ovsdb-server/ovs-vswitchd of {r['netns']}")
        elif kind == "proc":
            _kill(r["pid"], r.get("netns"))
        elif kind == "veth":
            if netns_exists(r["netns"]):
                run("ip", "-n", r["netns"], "link", "del", r["name"], check=False)
        elif kind == "netns":
            _del_netns(r["name"], progress)
        elif kind == "dir":
            shutil.rmtree(r["path"], ignore_errors=True)
    shutil.rmtree(st.dir, ignore_errors=True)
    progress(f"lab {name} is down")
    return True


def add_node(st: LabState, progress=print, wait: bool = True) -> dict:
    """Grow the lab by one node: namespace, underlay, OVS, agent; then add it to the topology file.

    The agent starts before the edit (it waits for its node to appear); the
    atomic edit of the shared topology file is the last step, so the caller
    can time everything that follows from the moment this returns with
    wait=False.  wait=True also waits until the new node's agent converged.
    """
    k = max([n["k"] for n in st.nodes] + [0]) + 1
    n = _node_record(st, k)
    if any(x["name"] == n["name"] for x in st.nodes):
        raise LabError(f"lab {st.name}: {n['name']} exists")
    with st.lock:
        st.nodes.append(n)
        st.save()
    _make_node(st, n)
    agents.write_local(n, _local_section(n))
    progress(f"{n['name']}: namespace {n['ns']}, {UNDERLAY_IF} {n['ip']}/24, ovsdb-server + ovs-vswitchd")
    pid = since = None
    if st.params.get("agents", True):
        # Like a machine that joins a cluster: its agent already runs and waits for its node.
        pid, since = agents.start(st, n)
        agents.wait_log(n, pid, f"local node {n['name']} is not in the topology")
        progress(f"{n['name']}: ovs-mesh agent pid {pid}: waiting for {n['name']} in the topology")
    topo = read_yaml(st.topology_path)
    entries = topo.setdefault("nodes", [])
    taken = [IPv4Network(e["subnet"]) for e in entries if e.get("subnet")]
    subnet = allocate(cluster_of(topo), taken + [None])[-1]
    entries.append({"name": n["name"], "ip": n["ip"], "subnet": str(subnet)})
    write_yaml(st.topology_path, topo)   # agents everywhere follow from here
    st.params["nodes"] = len(entries)
    st.save()
    progress(f"{n['name']}: added to {st.topology_path} with subnet {subnet}")
    if wait:
        if pid is None:
            apply_all(st, progress)
        else:
            agents.wait_ready(n, pid, since)
            progress(f"{n['name']}: ovs-mesh agent pid {pid}: converged")
    return n


def remove_from_topology(st: LabState, name: str) -> bool:
    """Drop a node from the shared topology file (atomically); False if it was not there."""
    topo = read_yaml(st.topology_path)
    entries = topo.get("nodes") or []
    kept = [e for e in entries if e["name"] != name]
    if len(kept) == len(entries):
        return False
    topo["nodes"] = kept
    write_yaml(st.topology_path, topo)
    st.params["nodes"] = len(kept)
    st.save()
    return True


def remove_node(st: LabState, node: dict | str, progress=print) -> None:
    """Shrink the lab: drop the node from the topology file, then remove its agent, pods, OVS, namespace."""
    n = _node(st, node)
    if remove_from_topology(st, n["name"]):
        progress(f"{n['name']}: removed from {st.topology_path}")
    pid = agents.stop(n)
    if pid:
        progress(f"{n['name']}: stopped its ovs-mesh agent (pid {pid})")
    spaces = {n["ns"], *[p["ns"] for p in st.pods if p["node"] == n["name"]]}

    def mine(r: dict) -> bool:
        return (r.get("node") == n["name"] or r.get("rundir") == n["rundir"]
                or bool(spaces & {r.get("netns"), r.get("peer_netns")})
                or (r["kind"] == "netns" and r["name"] in spaces))
    for r in reversed([r for r in st.resources() if mine(r)]):
        if r["kind"] == "ovs":
            OvsDaemons(r["rundir"], netns=r["netns"]).stop()
        elif r["kind"] == "proc":
            _kill(r["pid"], r.get("netns"))
        elif r["kind"] == "veth":
            if netns_exists(r["netns"]):
                run("ip", "-n", r["netns"], "link", "del", r["name"], check=False)
        elif r["kind"] == "netns":
            _del_netns(r["name"], progress)
        st.forget(r)
    with st.lock:
        st.data["pods"] = [p for p in st.pods if p["node"] != n["name"]]
        st.data["nodes"] = [x for x in st.nodes if x["name"] != n["name"]]
        st.save()
    shutil.rmtree(n["dir"], ignore_errors=True)
    progress(f"{n['name']}: removed from lab {st.name}")


def _del_netns(ns: str, progress) -> None:
    if netns_exists(ns):
        for pid in _netns_pids(ns):
            _kill(pid, ns)
        run("ip", "netns", "del", ns, check=False)
        progress(f"deleted namespace {ns}")


def _netns_list() -> list[str]:
    try:
        return sorted(os.listdir("/run/netns"))
    except FileNotFoundError:
        return []


def _netns_pids(ns: str) -> list[int]:
    p = run("ip", "netns", "pids", ns, check=False)
    return [int(x) for x in p.stdout.split()]


def _kill(pid: int, netns: str | None) -> None:
    """Kill a process we started, if it still runs in our namespace (pid reuse guard)."""
    if netns and netns_exists(netns):
        if pid not in _netns_pids(netns):
            return
    elif not _alive(pid):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.02)
