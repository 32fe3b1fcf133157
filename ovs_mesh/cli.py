"""The `ovs-mesh` command line.

Exit codes: 0 ok, 1 runtime failure, 2 invalid input.  Invalid input is
detected before anything is touched.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from ipaddress import IPv4Address, ip_address

from topology.config import ConfigError
from topology.errors import InputError, Problem

from .node import load, open_node
from .status import remove_status, write_status

EXIT_OK, EXIT_FAIL, EXIT_INPUT = 0, 1, 2
DEFAULT_CONFIG = "/etc/ovs-mesh/config.yaml"
LOG = logging.getLogger("ovs-mesh")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: exit 2 with usage
        self.print_usage(sys.stderr)
        self.exit(EXIT_INPUT, f"ovs-mesh: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ovs-mesh", description="Open vSwitch GRE/VXLAN/Geneve overlay for Kubernetes pods.",
                epilog="exit codes: 0 ok, 1 runtime failure, 2 invalid input")
    p.add_argument("--config", default=os.environ.get("OVS_MESH_CONFIG", DEFAULT_CONFIG),
                   help=f"YAML config (default: $OVS_MESH_CONFIG or {DEFAULT_CONFIG})")
    p.add_argument("--node", help="this node's name (overrides local.node; default: the hostname)")
    p.add_argument("--ovsdb", help="OVSDB remote: unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT (overrides local.ovsdb)")
    p.add_argument("--local", metavar="FILE", dest="local_file",
                   help="YAML with this node's `local` settings, overriding the config's local section "
                        "(so every node can share one topology file)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    sub.add_parser("validate", help="check the config; report all errors at once")
    for name, text in (("plan", "show what apply would change (converged: no changes)"),
                       ("apply", "one reconcile pass; idempotent"),
                       ("status", "peers, tunnel health, flow counts, last reconcile")):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp = sub.add_parser("trace", help="the OpenFlow path a packet from SRC to DST takes (ofproto/trace)")
    sp.add_argument("src", metavar="SRC", help="source IPv4 address (a pod or node address)")
    sp.add_argument("dst", metavar="DST", help="destination IPv4 address")
    sp.add_argument("--proto", choices=("ip", "arp", "icmp", "tcp", "udp"), default="icmp")
    sub.add_parser("teardown", help="remove everything ovs-mesh owns on this node, nothing else")
    sp = sub.add_parser("allocate", help="give nodes without a subnet the lowest free one; write the file back")
    sp.add_argument("--dry-run", action="store_true", help="print the result instead of writing the file")
    _add_extra_commands(sub)
    return p


def _add_extra_commands(sub) -> None:
    """Commands that live in their own modules register here."""
    for module in ("ovs_mesh.lab.cli", "ovs_mesh.agent.cli"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ImportError:
            continue
        mod.register(sub)


def _print_result(result, as_json: bool, verb: str) -> None:
    if as_json:
        print(json.dumps(result.as_dict()))
        return
    if not result.changes:
        print(f"{verb}: no changes (converged)")
    else:
        print(f"{verb}: {len(result.changes)} changes")
        for ch in result.changes:
            print(f"  {ch}")
    for p in result.problems:
        print(f"problem: {p}", file=sys.stderr)


def cmd_validate(args) -> int:
    config = load(args)
    print(f"{args.config}: valid: {len(config.nodes)} nodes, {config.cluster.tunnel} tunnels, "
          f"{config.cluster.mode} mode, cluster {config.cluster.cidr}")
    return EXIT_OK


def _with_reconciler(args, fn, teardown: bool = False):
    """Load and check the config, connect, run fn(config, reconciler), disconnect.

    Teardown needs neither the local node in the inventory nor its subnet: it
    removes what is ours whatever the file says now."""
    config = load(args, require_local=not teardown)
    if not teardown and not config.local_node.subnets:
        raise ConfigError([f"nodes: {config.local.node}: has no subnet (run `ovs-mesh allocate`)"])
    node = open_node(config)
    try:
        return fn(config, node.reconciler())
    finally:
        node.close()


def cmd_plan(args) -> int:
    def run(config, rec):
        _print_result(rec.plan(), args.json, "plan")
        return EXIT_OK
    return _with_reconciler(args, run)


def cmd_apply(args) -> int:
    def run(config, rec):
        result = rec.apply()
        write_status(config.local.rundir, result)
        _print_result(result, args.json, "apply")
        return EXIT_FAIL if result.problems else EXIT_OK
    return _with_reconciler(args, run)


def cmd_teardown(args) -> int:
    def run(config, rec):
        result = rec.apply(teardown=True)
        _print_result(result, False, "teardown")
        remove_status(config.local.rundir)
        return EXIT_OK
    return _with_reconciler(args, run, teardown=True)


def cmd_status(args) -> int:
    from .status import collect, render

    def run(config, rec):
        data = collect(config, rec)
        print(json.dumps(data, indent=2) if args.json else render(data))
        return EXIT_OK if data["converged"] else EXIT_FAIL
    return _with_reconciler(args, run)


def _addr(field: str, value: str) -> IPv4Address:
    try:
        a = ip_address(value)
        if a.version == 4:
            return a
    except ValueError:
        pass
    raise InputError([Problem(field, value, "not an IPv4 address")])


def cmd_trace(args) -> int:
    from .openflow import trace

    src, dst = _addr("SRC", args.src), _addr("DST", args.dst)
    config = load(args)
    from .state import BRIDGE, TUNNEL_OFPORT

    owner = next((n for n in config.nodes if n.subnet and src in n.subnet), None)
    if owner is None and src not in {n.ip for n in config.nodes}:
        raise InputError([Problem("SRC", str(src), "not in any node's subnet and not a node IP")])
    local = config.local_node
    proto = args.proto
    if proto == "arp":
        pkt = f"arp,arp_spa={src},arp_tpa={dst}"
    else:
        pkt = f"{proto},nw_src={src},nw_dst={dst}"
    if owner is None or owner.name == local.name:
        flow = f"in_port=LOCAL,{pkt}"
    elif config.cluster.mode == "flow":
        flow = f"in_port={TUNNEL_OFPORT},tun_id={config.cluster.vni},tun_src={owner.ip},tun_dst={local.ip},{pkt}"
    else:
        from .desired import peer_port_name
        from .node import connect_ovsdb

        client = connect_ovsdb(config.local)
        try:
            ofports = client.read(BRIDGE).ofports
        finally:
            client.close()
        port = ofports.get(peer_port_name(config.cluster.tunnel, owner.name))
        if port is None:
            print(f"no tunnel port to {owner.name} on this node", file=sys.stderr)
            return EXIT_FAIL
        flow = f"in_port={port},{pkt}"
    print(f"trace: {flow}")
    print(trace(config.local.rundir, BRIDGE, flow))
    return EXIT_OK


def cmd_allocate(args) -> int:
    from .config_file import allocate_file

    changed = allocate_file(args.config, dry_run=args.dry_run)
    for name, subnet in changed:
        print(f"allocated {name}: {subnet}")
    if not changed:
        print("allocate: every node has a subnet; nothing changed")
    return EXIT_OK


COMMANDS = {"validate": cmd_validate, "plan": cmd_plan, "apply": cmd_apply, "status": cmd_status,
            "trace": cmd_trace, "teardown": cmd_teardown, "allocate": cmd_allocate}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    fn = COMMANDS.get(args.command) or getattr(args, "func", None)
    try:
        return fn(args)
    except InputError as e:
        for line in e.errors:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        return EXIT_FAIL
    except BrokenPipeError:  # `ovs-mesh ... | head`: the reader left; not a failure of ours
        sys.stderr.close()
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as e:  # runtime failure: say what, exit 1
        LOG.debug("failure", exc_info=True)
        print(f"ovs-mesh {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
