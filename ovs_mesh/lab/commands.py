"""`ovs-mesh lab up|check|down|apply|add-node|remove-node|restart-agent|topology`: the lab's command line.

Each subcommand returns an exit code: 0 ok, 1 runtime failure (or a failed
check), 2 invalid input.
"""
from __future__ import annotations

import json
import sys

from topology.errors import InputError
from topology.model import ENCRYPTIONS, MODES, TUNNELS

from .record import NAME_RE, LabError, LabExists, LabState
from .topology import IP_FAMILIES

DEFAULT_NAME = "oml"


def _progress(line: str) -> None:
    print(line, flush=True)


def register(sub) -> None:
    lab = sub.add_parser("lab", help="one-machine multi-node lab in network namespaces")
    lsub = lab.add_subparsers(dest="lab_command", required=True, metavar="LAB_COMMAND",
                              parser_class=type(lab))

    def named(p):
        p.add_argument("--name", default=DEFAULT_NAME,
                       help=f"lab name: prefix of its namespaces (default {DEFAULT_NAME})")
        return p

    p = named(lsub.add_parser("up", help="build the lab: nodes, underlay, OVS, an ovs-mesh agent per node, pods",
                              description="Each node runs `ovs-mesh agent` on the lab's one topology file "
                                          "(<lab dir>/topology.yaml) and its own local.yaml: edit the "
                                          "topology file and the lab follows within a second.  Pod "
                                          "ranges: 10.244.0.0/16 (/24 per node) and, with --ip-family "
                                          "ipv6 or dual, fd00:10:244::/56 (/64 per node).  Underlay: "
                                          "192.168.213.0/24 or fd00:56::/64, inside the lab's "
                                          "namespaces only."))
    p.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    p.add_argument("--tunnel", choices=TUNNELS, default="vxlan")
    p.add_argument("--mode", choices=MODES, default="flow")
    p.add_argument("--mesh-degree", type=int, default=0, help="stp mode: peers per node (0: full mesh; 1 is refused)")
    p.add_argument("--pods-per-node", type=int, default=2)
    p.add_argument("--ip-family", choices=tuple(IP_FAMILIES), default="ipv4",
                   help="pod addresses: ipv4 (default), ipv6 or dual (both; `lab check` proves each)")
    p.add_argument("--underlay", choices=("ipv4", "ipv6"),
                   help="family of the node addresses, so of the tunnels (default: ipv6 with "
                        "--ip-family ipv6, else ipv4)")
    p.add_argument("--no-agent", action="store_true",
                   help="configure each node with one `ovs-mesh apply` instead of running an agent")
    p.add_argument("--encryption", choices=ENCRYPTIONS, default="none",
                   help="only none: the lab's userspace datapath cannot encrypt (the Vagrant lab can)")
    p.add_argument("--pods", choices=("plugins", "podman"), default="plugins", dest="pod_runtime",
                   help="who makes the pods from the conflist ovs-mesh wrote: plugins (default: the lab "
                        "runs the CNI plugins itself) or podman (its CNI backend, from the node's "
                        "namespace; needs podman, runc and busybox-static)")
    p.set_defaults(func=cmd_up)

    p = named(lsub.add_parser("check", help="prove pod<->pod and node->pod connectivity with real packets"))
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--timeout", type=float, help="seconds per target before it counts as failed "
                   "(default 20; 60 in stp mode)")
    p.set_defaults(func=cmd_check)

    p = named(lsub.add_parser("apply", help="wait until every node still in the topology file follows it "
                                            "(one-shot `ovs-mesh apply` where no agent runs)"))
    p.set_defaults(func=cmd_apply)

    p = named(lsub.add_parser("add-node", help="add a node (namespace, underlay, OVS, agent) and put it "
                                               "in the topology file"))
    p.add_argument("--pods", type=int, default=0, help="pods to create on it once it converged")
    p.set_defaults(func=cmd_add_node)

    p = named(lsub.add_parser("remove-node", help="drop a node from the topology file and remove it"))
    p.add_argument("--node", required=True, help="node name (node-K)")
    p.set_defaults(func=cmd_remove_node)

    p = named(lsub.add_parser("restart-agent", help="stop a node's agent with a signal and start it again"))
    p.add_argument("--node", required=True, help="node name (node-K)")
    p.add_argument("--signal", choices=("TERM", "KILL"), default="TERM")
    p.set_defaults(func=cmd_restart_agent)

    p = named(lsub.add_parser("down", help="remove everything the lab created (idempotent)"))
    p.set_defaults(func=cmd_down)

    p = lsub.add_parser("topology", help="print a topology file for NAME=IP nodes (used by the Vagrant lab)")
    p.add_argument("--node", dest="nodes", action="append", required=True, metavar="NAME=IP",
                   help="a node; repeat for each")
    p.add_argument("--tunnel", choices=TUNNELS, default="vxlan")
    p.add_argument("--mode", choices=MODES, default="flow")
    p.add_argument("--mesh-degree", type=int, default=0)
    p.add_argument("--cidr", default="10.244.0.0/16",
                   help="cluster range, or one per family: 10.244.0.0/16,fd00:10:244::/56")
    p.add_argument("--local", metavar="NODE", help="also write a local section for this node")
    p.add_argument("--local-set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra local keys with --local (e.g. datapath=system)")
    p.add_argument("-o", "--output", help="write here (atomically) instead of stdout")
    p.set_defaults(func=cmd_topology)

    from .remote import register as register_remote  # `lab pods`, `lab remote-check` (Vagrant lab)
    register_remote(lsub)


def _input_error(*lines: str) -> int:
    for line in lines:
        print(f"error: {line}", file=sys.stderr)
    return 2


def _lab(args) -> LabState | None:
    return LabState.load(args.name) if NAME_RE.match(args.name) else None


NO_ENCRYPTION = ("--encryption {0}: the namespace lab runs Open vSwitch's userspace datapath (netdev), and "
                 "{1} acts only on packets of the kernel datapath, which this lab cannot have (no openvswitch "
                 "kernel module on such hosts, and one kernel for all its nodes); the Vagrant lab's VMs "
                 "encrypt (vagrant/, docs/encryption.md)")


def cmd_up(args) -> int:
    from . import build

    if args.encryption != "none":
        return _input_error(NO_ENCRYPTION.format(args.encryption,
                                                 "IPsec (XFRM)" if args.encryption == "ipsec" else "WireGuard"))
    errors = build.check_params(args.name, args.nodes, args.pods_per_node, args.mesh_degree,
                                args.ip_family, args.underlay)
    if args.pod_runtime == "podman":
        from . import podman
        why = podman.available()
        if why:
            errors.append(f"--pods podman: {why}")
    if errors:
        return _input_error(*errors)
    try:
        build.up(args.name, nodes=args.nodes, tunnel=args.tunnel, mode=args.mode,
                 mesh_degree=args.mesh_degree, pods_per_node=args.pods_per_node, progress=_progress,
                 agent=not args.no_agent, ip_family=args.ip_family, underlay=args.underlay,
                 pods=args.pod_runtime)
    except InputError as e:   # the topology was refused before anything was built
        return _input_error(str(e))
    except LabExists as e:   # nothing was built: the lab there is someone's, leave it
        print(f"lab up: {e}", file=sys.stderr)
        return 1
    except LabError as e:
        print(f"lab up: {e}", file=sys.stderr)
        if LabState.load(args.name) is not None:
            print("lab up failed: removing what was built", file=sys.stderr)
            build.down(args.name, progress=_progress)
        return 1
    except BaseException:
        print("lab up failed: removing what was built", file=sys.stderr)
        build.down(args.name, progress=_progress)
        raise
    return 0


def cmd_check(args) -> int:
    from .check import check, render

    st = _lab(args)
    if st is None:
        return _input_error(f"--name: {args.name}: no such lab (run `ovs-mesh lab up --name {args.name}`)")
    report = check(st, timeout=args.timeout, progress=None if args.json else _progress)
    print(json.dumps(report, indent=1) if args.json else render(report))
    return 0 if report["summary"]["ok"] else 1


def cmd_apply(args) -> int:
    from .build import apply_all

    st = _lab(args)
    if st is None:
        return _input_error(f"--name: {args.name}: no such lab")
    apply_all(st, progress=_progress)
    return 0


def _on_node(args, fn) -> int:
    """Run a lab step on a named lab (and node); LabError (AgentError too) -> exit 1."""
    st = _lab(args)
    if st is None:
        return _input_error(f"--name: {args.name}: no such lab")
    node = getattr(args, "node", None)
    if node is not None and node not in [n.name for n in st.nodes]:
        return _input_error(f"--node: {node}: not a node of lab {args.name} "
                            f"({', '.join(n.name for n in st.nodes)})")
    try:
        fn(st)
    except LabError as e:
        print(f"lab {args.lab_command}: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_add_node(args) -> int:
    from .build import add_node
    from .pods import add_pod, addresses

    def add(st):
        n = add_node(st, progress=_progress)
        for j in range(1, args.pods + 1):
            pod = add_pod(st, n, j)
            st.save()
            _progress(f"{n.name}: pod {pod['name']} {addresses(pod)} (CNI bridge)")
    if args.pods < 0:
        return _input_error(f"--pods: {args.pods}: must be >= 0")
    return _on_node(args, add)


def cmd_remove_node(args) -> int:
    from .build import remove_node

    return _on_node(args, lambda st: remove_node(st, args.node, progress=_progress))


def cmd_restart_agent(args) -> int:
    import signal

    from .build import restart_agent

    def restart(st):
        r = restart_agent(st, args.node, getattr(signal, f"SIG{args.signal}"))
        _progress(f"{args.node}: agent pid {r['old_pid']} stopped (SIG{args.signal}); pid {r['pid']} "
                  f"converged in {r['seconds']:.2f}s with {r['changes']} changes")
    return _on_node(args, restart)


def cmd_down(args) -> int:
    from .build import down

    if not NAME_RE.match(args.name):
        return _input_error(f"--name: {args.name}: not a lab name")
    down(args.name, progress=_progress)
    return 0


def cmd_topology(args) -> int:
    from .topology import make_topology, node_config, to_yaml, write_yaml

    pairs, errors = [], []
    for i, spec in enumerate(args.nodes):
        name, sep, ip = spec.partition("=")
        if not sep or not name or not ip:
            errors.append(f"--node[{i}]: {spec}: must be NAME=IP")
        pairs.append((name, ip))
    local = {}
    for spec in args.local_set:
        k, sep, v = spec.partition("=")
        if not sep:
            errors.append(f"--local-set: {spec}: must be KEY=VALUE")
        local[k] = {"true": True, "false": False}.get(v, v)
    if errors:
        return _input_error(*errors)
    doc = make_topology(pairs, tunnel=args.tunnel, mode=args.mode, mesh_degree=args.mesh_degree,
                        cidr=args.cidr)
    if args.local:
        doc = node_config(doc, {"node": args.local, **local})
    if args.output:
        write_yaml(args.output, doc)
    else:
        sys.stdout.write(to_yaml(doc))
    return 0
