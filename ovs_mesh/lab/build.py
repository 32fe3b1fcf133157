"""Build, grow, shrink and remove a lab: the orchestration of nodes, agents and pods.

Every namespace, veth, daemon directory and agent is recorded in the lab's
state file before it is created (record.py), so `down` removes all of it even
after a crash (resources.py releases each kind).  Node networking is done by
the product itself: each node runs `ovs-mesh --config <lab>/topology.yaml
--local <node>/local.yaml agent` inside its namespace (agents.py), so editing
the shared topology file changes the lab; `add_node`/`remove_node` grow and
shrink it.  Nodes are made by nodes.py, pods by the reference CNI plugins from
the conflist that ovs-mesh wrote (pods.py).
"""
from __future__ import annotations

import re
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from topology.nodes import node_subnets_of

from . import agents
from .nodes import UNDERLAY_IF, make_node, make_underlay, new_node, owns, underlay_cidr
from .pods import add_pod, addresses, del_pod
from .record import NAME_RE, LabError, LabExists, LabState, Node, lab_dir
from .resources import del_netns, netns_list, release
from .topology import (
    IP_FAMILIES,
    allocate_all,
    cluster_of,
    lab_cidr,
    make_topology,
    read_yaml,
    subnet_value,
    write_yaml,
)


def default_underlay(ip_family: str) -> str:
    """The underlay family when none is given: IPv6 for an IPv6-only lab, else IPv4."""
    return "ipv6" if ip_family == "ipv6" else "ipv4"


def check_params(name: str, nodes: int, pods_per_node: int, mesh_degree: int, ip_family: str = "ipv4",
                 underlay: str | None = None) -> list[str]:
    errors = []
    if ip_family not in IP_FAMILIES:
        errors.append(f"--ip-family: {ip_family}: must be one of {', '.join(IP_FAMILIES)}")
    if underlay not in (None, "ipv4", "ipv6"):
        errors.append(f"--underlay: {underlay}: must be ipv4 or ipv6")
    if not NAME_RE.match(name):
        errors.append(f"--name: {name}: must be 1-6 lowercase letters/digits starting with a letter")
    if not 1 <= nodes <= 200:
        errors.append(f"--nodes: {nodes}: must be between 1 and 200")
    if not 0 <= pods_per_node <= 50:
        errors.append(f"--pods-per-node: {pods_per_node}: must be between 0 and 50")
    if mesh_degree < 0:
        errors.append(f"--mesh-degree: {mesh_degree}: must be >= 0")
    elif mesh_degree == 1:
        errors.append(f"--mesh-degree: {mesh_degree}: must be 0 (a full mesh) or at least 2 (one peer per node "
                      "splits the mesh into pairs)")
    return errors


def parallel(fn, items, done, workers: int = 4):
    """fn(item) for every item on `workers` threads; done(item, result) in order; the first error is raised."""
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


def _made(progress, st: LabState, n: Node) -> None:
    progress(f"{n.name}: namespace {n.ns}, {UNDERLAY_IF} {underlay_cidr(st, n)}, ovsdb-server + ovs-vswitchd")


def up(name: str, nodes: int = 3, tunnel: str = "vxlan", mode: str = "flow", mesh_degree: int = 0,
       pods_per_node: int = 2, progress=print, apply: bool = True, agent: bool = True,
       ip_family: str = "ipv4", underlay: str | None = None, pods: str = "plugins") -> LabState:
    """Create the lab; on failure the caller runs `down` (everything is recorded).

    `ip_family` (ipv4, ipv6, dual) picks the pod ranges (lab_cidr), `underlay`
    (ipv4, ipv6; default_underlay) the family of the node addresses and so of
    the tunnels.  The topology is built and validated before anything is
    made: a ConfigError from it leaves nothing behind.
    Raises LabExists (nothing built) if the lab is there already.  Each node
    gets an `ovs-mesh agent` (agent=True) and pods are made once every agent
    has converged; agent=False configures nodes with one `ovs-mesh apply`
    each instead.  apply=False stops after the bare nodes (namespaces,
    underlay, OVS daemons, topology file): the caller configures them
    (tests/vagrant runs the VMs' provisioning script in each node namespace).
    `pods`: who makes the pods from the conflist ovs-mesh wrote, "plugins" (the lab runs the
    CNI plugins itself, as a runtime would) or "podman" (a real container engine: podman.py).
    """
    t0 = time.monotonic()
    if LabState.load(name) is not None:
        raise LabExists(f"lab {name} exists ({LabState(name).dir}); run `ovs-mesh lab down --name {name}` first")
    st = LabState(name)
    underlay = underlay or default_underlay(ip_family)
    st.params.update(nodes=nodes, tunnel=tunnel, mode=mode, mesh_degree=mesh_degree,
                     pods_per_node=pods_per_node, agents=apply and agent, ip_family=ip_family,
                     underlay=underlay, pods=pods)
    node_recs = [new_node(st, k) for k in range(1, nodes + 1)]
    topo = make_topology([(n.name, n.ip) for n in node_recs], tunnel=tunnel, mode=mode,
                         mesh_degree=mesh_degree, cidr=lab_cidr(ip_family))
    st.record("dir", path=st.dir)  # first in, last out
    st.nodes.extend(node_recs)
    st.save()
    write_yaml(st.topology_path, topo)
    progress(f"lab {name}: topology {st.topology_path}: {nodes} nodes, {tunnel}, {mode} mode, "
             f"pods {lab_cidr(ip_family)}, {underlay} underlay"
             + (f", mesh degree {mesh_degree}" if mode == "stp" else ""))

    ul = make_underlay(st)
    progress(f"underlay: namespace {ul}, bridge br0")
    for n in node_recs:
        make_node(st, n)
        _made(progress, st, n)
    if not apply:
        st.save()
        return st
    for n in node_recs:
        agents.write_local(n)
    if agent:
        start_agents(st, node_recs, progress)
    else:
        parallel(lambda n: agents.apply_once(st, n), node_recs,
                 lambda n, out: progress(f"{n.name}: ovs-mesh apply: {out}"))
    if pods_per_node:
        jobs = [(n, j) for n in node_recs for j in range(1, pods_per_node + 1)]
        parallel(lambda nj: add_pod(st, *nj), jobs,
                 lambda nj, pod: progress(f"{nj[0].name}: pod {pod['name']} {addresses(pod)} "
                                                 + ("(podman, CNI bridge)" if pods == "podman" else "(CNI bridge)")))
    st.pods.sort(key=lambda p: (p["k"], p["j"]))
    st.save()
    progress(f"lab {name} is up in {time.monotonic() - t0:.1f}s: {nodes} nodes, "
             f"{nodes * pods_per_node} pods; run `ovs-mesh lab check --name {name}`"
             + (f"; edit {st.topology_path} and the agents follow" if agent else ""))
    return st


def start_agents(st: LabState, nodes: list[Node], progress=print, wait: bool = True) -> None:
    """Start each node's agent (recorded first); wait until every one has converged."""
    started = [(n, *agents.start(st, n)) for n in nodes]
    if wait:
        parallel(lambda s: agents.wait_ready(*s), started,
                 lambda s, status: progress(f"{s[0].name}: ovs-mesh agent pid {s[1]}: converged, "
                                            f"{len(status.get('changes', []))} changes (log {s[0].agent_log})"))


def _node(st: LabState, node: Node | str) -> Node:
    return node if isinstance(node, Node) else st.node(node)


def restart_agent(st: LabState, node: Node | str, sig: int = signal.SIGTERM) -> dict:
    """Stop a node's agent with `sig` (SIGTERM or SIGKILL), start it again, wait until it is ready.

    Returns agents.restart's report (old/new pid, changes of the first pass, seconds).
    """
    return agents.restart(st, _node(st, node), sig)


def apply_all(st: LabState, progress=print) -> list[str]:
    """Make every node still in the (possibly edited) topology file follow it.

    A node with a running agent follows the file by itself: wait until it has
    converged.  A node without one gets a one-shot `ovs-mesh apply`.
    """
    topo = read_yaml(st.topology_path)
    names = {e["name"] for e in topo.get("nodes") or []}
    active = [n for n in st.nodes if n.name in names]
    c = cluster_of(topo)
    st.params.update(tunnel=c.tunnel, mode=c.mode, mesh_degree=c.mesh_degree)  # what `lab check` shows
    st.save()

    def follow(n):
        if agents.pid_of(n) is None:
            return f"ovs-mesh apply: {agents.apply_once(st, n)}"
        d = agents.wait_converged(st, n)
        return f"agent converged: {len(d['peers'])} peers, {d['flows']} flows"
    parallel(follow, active, lambda n, out: progress(f"{n.name}: {out}"))
    for n in st.nodes:
        if n.name not in names:
            progress(f"{n.name}: not in {st.topology_path}: left alone")
    return sorted(names)


def down(name: str, progress=print) -> bool:
    """Remove everything the lab recorded, newest first.  Idempotent."""
    st = LabState.load(name)
    if st is None:
        # No record (its directory was removed by hand): namespaces named like
        # ours are still ours; remove them and whatever runs inside.
        leftovers = [ns for ns in netns_list() if re.fullmatch(rf"{re.escape(name)}-(ul|n\d+(p\d+)?)", ns)]
        for ns in sorted(leftovers, key=len, reverse=True):
            del_netns(ns, progress)
        # Its processes are stopped now; one that ran until then (an agent saving its state)
        # may have made the lab's directory again.
        shutil.rmtree(lab_dir(name), ignore_errors=True)
        if not leftovers:
            progress(f"lab {name}: not found (nothing to remove)")
        return bool(leftovers)
    # Agents first (all of them, in parallel), so none reacts to its OVS going away.
    parallel(agents.stop_recorded, st.resources("agent"),
             lambda r, pid: pid and progress(f"stopped the ovs-mesh agent of {r['node']} (pid {pid})"))
    _delete_pods(st, progress)
    for r in reversed(st.resources()):
        release(r, progress)
        if r["kind"] == "ovs":
            progress(f"stopped ovsdb-server/ovs-vswitchd of {r['netns']}")
    shutil.rmtree(st.dir, ignore_errors=True)
    progress(f"lab {name} is down")
    return True


def _delete_pods(st: LabState, progress) -> None:
    """The lab's pods deleted as a runtime deletes them (each plugin's DEL: the pod guard forgets
    the pod, host-local its addresses), so that nothing on a node that outlives the lab (a
    Vagrant node's agent and guard sets) keeps entries of pods that are gone.  A pod whose DEL
    fails still has its namespace removed with the rest."""
    nodes = {n.name: n for n in st.nodes}

    def delete(pod: dict) -> str | None:
        try:
            del_pod(st, nodes[pod["node"]], pod)
        except (LabError, OSError) as e:
            return f"{pod['name']}: {e}: its namespace is removed with the lab"
        return None

    # In parallel, as `up` makes them: each DEL runs the chain's plugins (the guard is a Python start).
    parallel(delete, [p for p in st.pods if p["node"] in nodes], lambda _pod, said: said and progress(said))


def add_node(st: LabState, progress=print, wait: bool = True) -> Node:
    """Grow the lab by one node: namespace, underlay, OVS, agent; then add it to the topology file.

    The agent starts before the edit (it waits for its node to appear); the
    atomic edit of the shared topology file is the last step, so the caller
    can time everything that follows from the moment this returns with
    wait=False.  wait=True also waits until the new node's agent converged.
    """
    k = max([n.k for n in st.nodes] + [0]) + 1
    n = new_node(st, k)
    if any(x.name == n.name for x in st.nodes):
        raise LabExists(f"lab {st.name}: {n.name} exists")
    with st.lock:
        st.nodes.append(n)
        st.save()
    make_node(st, n)
    agents.write_local(n)
    _made(progress, st, n)
    pid = since = None
    if st.params.get("agents", True):
        # Like a machine that joins a cluster: its agent already runs and waits for its node.
        pid, since = agents.start(st, n)
        agents.wait_log(n, pid, f"local node {n.name} is not in the topology")
        progress(f"{n.name}: ovs-mesh agent pid {pid}: waiting for {n.name} in the topology")
    topo = read_yaml(st.topology_path)
    entries = topo.setdefault("nodes", [])
    taken = [node_subnets_of(e.get("subnet")) for e in entries]
    subnet = subnet_value(allocate_all(cluster_of(topo), taken + [{}])[-1])
    entries.append({"name": n.name, "ip": n.ip, "subnet": subnet})
    write_yaml(st.topology_path, topo)   # agents everywhere follow from here
    st.params["nodes"] = len(entries)
    st.save()
    progress(f"{n.name}: added to {st.topology_path} with subnet "
             + (subnet if isinstance(subnet, str) else ",".join(subnet)))
    if wait:
        if pid is None:
            apply_all(st, progress)
        else:
            agents.wait_ready(n, pid, since)
            progress(f"{n.name}: ovs-mesh agent pid {pid}: converged")
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


def remove_node(st: LabState, node: Node | str, progress=print) -> None:
    """Shrink the lab: drop the node from the topology file, then remove its agent, pods, OVS, namespace."""
    n = _node(st, node)
    if remove_from_topology(st, n.name):
        progress(f"{n.name}: removed from {st.topology_path}")
    pid = agents.stop(n)
    if pid:
        progress(f"{n.name}: stopped its ovs-mesh agent (pid {pid})")
    for r in reversed([r for r in st.resources() if owns(st, n, r)]):
        release(r, progress)   # the agent's record: stopped above
        st.forget(r)
    with st.lock:
        st.pods[:] = [p for p in st.pods if p["node"] != n.name]
        st.nodes[:] = [x for x in st.nodes if x.name != n.name]
        st.save()
    shutil.rmtree(n.dir, ignore_errors=True)
    progress(f"{n.name}: removed from lab {st.name}")
