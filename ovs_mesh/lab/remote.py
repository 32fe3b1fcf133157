"""`lab pods` and `lab remote-check`: the lab check against real machines (the Vagrant lab).

`ovs-mesh lab pods` runs ON a node (a VM): it creates test pods through the
CNI conflist ovs-mesh wrote (pods.add_pod, the namespace lab's own code),
records them like a lab (`ovs-mesh lab down --name NAME` removes them) and
prints them as JSON, with the topology the node was configured from.

`ovs-mesh lab remote-check` runs on the machine that can reach the nodes (the
Vagrant host): it calls `lab pods` on every node through a command prefix
(`--via 'ssh -F ssh_config {node} sudo'`), checks that all nodes run the same
topology, and runs the namespace lab's check (check.py) with every probe
sent through the same prefix.  The matrix and JSON are the lab's.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor

from .build import down
from .pods import add_pod, addresses
from .record import NAME_RE, LabError, LabState, Node
from .resources import run
from .topology import subnet_value

REMOTE_PYTHON = "/opt/ovs-mesh/venv/bin/python"
REMOTE_OVS_MESH = "/opt/ovs-mesh/venv/bin/ovs-mesh"
REMOTE_CONFIG = "/etc/ovs-mesh/config.yaml"


def register(lsub) -> None:
    p = lsub.add_parser("pods", help="create test pods on THIS node through its CNI config (print JSON)")
    p.add_argument("--name", required=True, help="record name (1-6 chars): `lab down --name` removes the pods")
    p.add_argument("--count", type=int, default=1, help="pods to create (default 1)")
    p.add_argument("--replace", action="store_true",
                   help="remove the pods of an earlier record of that name first (as `lab down --name` would)")
    p.set_defaults(func=cmd_pods)

    p = lsub.add_parser("remote-check", help="create pods on remote nodes and prove connectivity like `lab check`")
    p.add_argument("--name", default="omv", help="name of the pods' record on every node (default omv)")
    p.add_argument("--node", dest="nodes", action="append", required=True, metavar="NAME",
                   help="a node to check; repeat for each")
    p.add_argument("--via", required=True, metavar="PREFIX",
                   help="command prefix that runs a command on node {node} (number {k}) as root, "
                        "e.g. 'ssh -F ssh_config {node} sudo'")
    p.add_argument("--python", default=REMOTE_PYTHON, help=f"python on the nodes (default {REMOTE_PYTHON})")
    p.add_argument("--ovs-mesh", dest="ovs_mesh", default=REMOTE_OVS_MESH,
                   help=f"ovs-mesh on the nodes (default {REMOTE_OVS_MESH})")
    p.add_argument("--remote-config", default=REMOTE_CONFIG,
                   help=f"ovs-mesh config on the nodes, {{node}}/{{k}} substituted (default {REMOTE_CONFIG})")
    p.add_argument("--pods-per-node", type=int, default=1)
    p.add_argument("--timeout", type=float, help="seconds per target (default: as `lab check`)")
    p.add_argument("--keep", action="store_true", help="leave the test pods in place")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_remote_check)


def _err(*lines: str) -> int:
    for line in lines:
        print(f"error: {line}", file=sys.stderr)
    return 2


# --- on the node -------------------------------------------------------------
def cmd_pods(args) -> int:
    from ..config.file import load

    if not NAME_RE.match(args.name):
        return _err(f"--name: {args.name}: must be 1-6 lowercase letters/digits starting with a letter")
    if not 1 <= args.count <= 50:
        return _err(f"--count: {args.count}: must be between 1 and 50")
    config = load(args)
    me = config.local_node
    if LabState.load(args.name) is not None:
        if not args.replace:
            return _err(f"--name: {args.name}: exists on this node (run `ovs-mesh lab down --name {args.name}`, "
                        "or add --replace)")
        down(args.name, progress=lambda s: None)
    st = LabState(args.name)
    st.record("dir", path=st.dir)
    k = [n.name for n in config.nodes].index(me.name) + 1
    node = Node(name=me.name, k=k, ip=str(me.ip), ns=None, dir=st.dir, cni_conf=config.local.cni_conf)
    st.nodes.append(node)
    st.save()
    try:
        for j in range(1, args.count + 1):
            add_pod(st, node, j)
        st.save()
    except BaseException:
        down(args.name, progress=lambda s: None)
        raise
    c = config.cluster
    topology = {"cluster": {"cidr": ",".join(map(str, c.cidrs)), "tunnel": c.tunnel, "mode": c.mode},
                "nodes": [{"name": n.name, "ip": str(n.ip), "subnet": subnet_value(list(n.subnets))}
                          for n in config.nodes]}
    print(json.dumps({"node": node.to_dict(), "pods": st.pods, "topology": topology}))
    return 0


# --- on the host ---------------------------------------------------------------
def _via(template: str, node: str, k: int) -> list[str]:
    return shlex.split(template.format(node=node, k=k))


def cmd_remote_check(args) -> int:
    from .check import check, render

    if not NAME_RE.match(args.name):
        return _err(f"--name: {args.name}: must be 1-6 lowercase letters/digits starting with a letter")
    if not 1 <= args.pods_per_node <= 50:
        return _err(f"--pods-per-node: {args.pods_per_node}: must be between 1 and 50")
    try:
        _via(args.via, "x", 1)
        args.remote_config.format(node="x", k=1)
    except (KeyError, IndexError, ValueError) as e:
        return _err(f"--via/--remote-config: {args.via} {args.remote_config}: "
                    f"only {{node}} and {{k}} may be substituted ({e})")
    say = (lambda s: None) if args.json else (lambda s: print(s, flush=True))
    vias = {n: _via(args.via, n, k) for k, n in enumerate(args.nodes, 1)}

    def ovs_mesh(node: str, *cmd: str, check: bool = True):
        config = args.remote_config.format(node=node, k=args.nodes.index(node) + 1)
        return run(*vias[node], args.ovs_mesh, "--config", config, *cmd, check=check, timeout=180)

    def pods_on(node: str) -> dict:
        # --replace: a previous run's pods on that node (by its record) go first, in the same
        # command (one Python start less on a slow node).  Not `lab down` without a record: it
        # removes namespaces by name, which on nodes that share one /run/netns (the namespace
        # stand-ins of the Vagrant tests) could be another node's new pod.
        return json.loads(ovs_mesh(node, "lab", "pods", "--name", args.name, "--replace",
                                   "--count", str(args.pods_per_node)).stdout)

    st = LabState(args.name)
    try:
        with ThreadPoolExecutor(max_workers=4) as ex:
            made = list(ex.map(pods_on, args.nodes))
        topologies = {json.dumps(m["topology"], sort_keys=True) for m in made}
        if len(topologies) != 1:
            raise LabError("the nodes run different topologies: " + "; ".join(
                f"{m['node']['name']}: {json.dumps(m['topology'])}" for m in made))
        topology = made[0]["topology"]
        st.params.update(nodes=len(topology["nodes"]), tunnel=topology["cluster"]["tunnel"],
                         mode=topology["cluster"]["mode"], pods_per_node=args.pods_per_node)
        for node, m in zip(args.nodes, made):
            remote = {"via": vias[node], "python": args.python}
            st.nodes.append(Node.from_dict({**m["node"], **remote}))
            st.pods.extend({**p, **remote} for p in m["pods"])
            say(f"{node}: pods " + ", ".join(f"{p['name']} {addresses(p)}" for p in m["pods"]))
        os.makedirs(st.dir, exist_ok=True)
        with open(st.topology_path, "w", encoding="utf-8") as f:
            json.dump(topology, f)  # JSON is YAML: check.py reads the active nodes from it
        st.save()
        report = check(st, timeout=args.timeout, progress=say)
    except LabError as e:
        print(f"lab remote-check: {e}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:  # at once: each is a Python start on the node (seconds on a slow VM)
            with ThreadPoolExecutor(max_workers=4) as ex:
                list(ex.map(lambda node: ovs_mesh(node, "lab", "down", "--name", args.name, check=False),
                            args.nodes))
        shutil.rmtree(st.dir, ignore_errors=True)
    print(json.dumps(report, indent=1) if args.json else render(report))
    return 0 if report["summary"]["ok"] else 1
