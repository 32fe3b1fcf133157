"""`ovs-mesh lab up|check|down|apply|topology`: the lab's command line.

Each subcommand returns an exit code: 0 ok, 1 runtime failure (or a failed
check), 2 invalid input.
"""
from __future__ import annotations

import argparse
import json
import sys

from topology.model import MODES, TUNNELS

from .state import NAME_RE, LabState

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

    p = named(lsub.add_parser("up", help="build the lab: nodes, underlay, OVS, ovs-mesh apply, pods"))
    p.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    p.add_argument("--tunnel", choices=TUNNELS, default="vxlan")
    p.add_argument("--mode", choices=MODES, default="flow")
    p.add_argument("--mesh-degree", type=int, default=0, help="stp mode: peers per node (0: full mesh)")
    p.add_argument("--pods-per-node", type=int, default=2)
    p.set_defaults(func=cmd_up)

    p = named(lsub.add_parser("check", help="prove pod<->pod and node->pod connectivity with real packets"))
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--timeout", type=float, help="seconds per target before it counts as failed "
                   "(default 20; 60 in stp mode)")
    p.set_defaults(func=cmd_check)

    p = named(lsub.add_parser("apply", help="re-apply the lab's topology file on every node still in it"))
    p.set_defaults(func=cmd_apply)

    p = named(lsub.add_parser("down", help="remove everything the lab created (idempotent)"))
    p.set_defaults(func=cmd_down)

    p = lsub.add_parser("topology", help="print a topology file for NAME=IP nodes (used by the Vagrant lab)")
    p.add_argument("--node", dest="nodes", action="append", required=True, metavar="NAME=IP",
                   help="a node; repeat for each")
    p.add_argument("--tunnel", choices=TUNNELS, default="vxlan")
    p.add_argument("--mode", choices=MODES, default="flow")
    p.add_argument("--mesh-degree", type=int, default=0)
    p.add_argument("--cidr", default="10.244.0.0/16")
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


def cmd_up(args) -> int:
    from . import build

    errors = build.check_params(args.name, args.nodes, args.pods_per_node, args.mesh_degree)
    if errors:
        return _input_error(*errors)
    try:
        build.up(args.name, nodes=args.nodes, tunnel=args.tunnel, mode=args.mode,
                 mesh_degree=args.mesh_degree, pods_per_node=args.pods_per_node, progress=_progress)
    except build.LabError as e:
        print(f"lab up: {e}", file=sys.stderr)
        if LabState.load(args.name) is not None and "exists" not in str(e):
            print(f"lab up failed: removing what was built", file=sys.stderr)
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
