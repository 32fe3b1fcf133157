"""The `ovs-mesh` command line.

Exit codes: 0 ok, 1 runtime failure, 2 invalid input.  Invalid input is
detected before anything is touched.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys

from topology.config import ConfigError
from topology.errors import InputError
from topology.nodes import missing_subnets

from ..config.file import load
from ..reconcile.families import change_family, count
from ..reconcile.status_file import remove_status, write_status
from .packet_trace import PROTOS

# The node's clients (ovs, ovsdbapp, pyroute2) are imported by the commands that connect:
# `validate` or `--help` pays for no OVSDB, OpenFlow or netlink library (seconds on a small or
# emulated machine; tests/unit/test_cli_imports.py).
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
    for name, text in (("plan", "show what apply would change (converged: no changes); with IPv6, "
                                "a count per address family"),
                       ("apply", "one reconcile pass; idempotent"),
                       ("status", "peers with their subnets of each family, the underlay family, "
                                  "tunnel health, flow counts, last reconcile")):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp = sub.add_parser("trace", help="the OpenFlow path a packet from SRC to DST takes (ofproto/trace), "
                                      "and where it ends: a peer's tunnel, this node or a drop",
                        description="Trace a packet through obr0 with ofproto/trace. SRC and DST are both IPv4 "
                                    "or both IPv6. Without SRC the packet comes from this node's gateway of "
                                    "DST's family. The last line says where it went (tun_dst / tun_ipv6_dst "
                                    "and the peer, the peer's port, LOCAL, or the table that dropped it).")
    sp.add_argument("src", metavar="SRC", nargs="?",
                    help="source address, IPv4 or IPv6: a pod or node address (default: this node's gateway)")
    sp.add_argument("dst", metavar="DST", help="destination address, IPv4 or IPv6")
    sp.add_argument("--proto", choices=PROTOS, default="icmp",
                    help="ip, icmp, tcp, udp (traced as ipv6, icmp6, tcp6, udp6 with IPv6 addresses); arp (IPv4) or nd "
                         "(IPv6 neighbour solicitation for DST); default icmp")
    sub.add_parser("teardown", help="remove everything ovs-mesh owns on this node, nothing else")
    sp = sub.add_parser("allocate", help="give nodes without a subnet (of each cluster family) the lowest free one; "
                                         "write the file back")
    sp.add_argument("--dry-run", action="store_true", help="print the result instead of writing the file")
    sp = sub.add_parser("wireguard-key", help="print this node's WireGuard public key (for "
                                              "nodes[].wireguard_public_key); the private key is made on first use "
                                              "in local.wireguard_key, mode 0600, and never printed")
    sp.add_argument("--rotate", action="store_true", help="replace the private key with a new one first (the old "
                                                          "one is gone: peers need the new public key)")
    _add_extra_commands(sub)
    return p


def _add_extra_commands(sub) -> None:
    """Commands that live in their own modules register here.  They are loaded by name
    (nothing in the product imports `lab`); one that fails to import is an error, not
    a command quietly missing from the CLI."""
    for module in ("ovs_mesh.lab.commands", "ovs_mesh.agent.commands"):
        importlib.import_module(module).register(sub)


def print_result(result, as_json: bool, verb: str, config, annotation: dict | None = None) -> None:
    """The changes; with the address family of each (JSON: `family`) and, in a
    cluster with IPv6, a count per family after the total.  ANNOTATION: the Node
    annotation the agent would write (`plan` with the Kubernetes source), counted
    as a change (JSON: `annotations`)."""
    families = [change_family(ch) for ch in result.changes]
    if as_json:
        d = result.as_dict()
        for item, family in zip(d["changes"], families):
            if family is not None:
                item["family"] = family
        d.update(families=list(config.cluster.families), underlay_family=config.underlay_family)
        if annotation is not None:
            d["annotations"] = [annotation]
        print(json.dumps(d))
        return
    total = len(result.changes) + (annotation is not None)
    if not total:
        print(f"{verb}: no changes (converged)")
    else:
        per = ""
        if _has_ipv6(config) and result.changes:
            per = " (" + ", ".join(f"{f} {n}" for f, n in count(families).items()) + ")"
        print(f"{verb}: {total} changes{per}")
        for ch in result.changes:
            print(f"  {ch}")
        if annotation is not None:
            from ..sources.kube_once import annotation_line
            print(f"  {annotation_line(annotation)}")
    for p in result.problems:
        print(f"problem: {p}", file=sys.stderr)


def _has_ipv6(config) -> bool:
    """IPv6 pods or an IPv6 underlay: the outputs then say which family is which."""
    return "ipv6" in (*config.cluster.families, config.underlay_family)


def cmd_validate(args) -> int:
    config = load(args)
    print(f"{args.config}: valid: {len(config.nodes)} nodes, {config.cluster.tunnel} tunnels, "
          f"{config.cluster.mode} mode, cluster {','.join(str(c) for c in config.cluster.cidrs)}"
          + (f", {config.underlay_family} underlay" if _has_ipv6(config) else ""))
    return EXIT_OK


def _with_reconciler(args, fn, teardown: bool = False, inventory=None):
    """Load and check the config, connect, run fn(config, reconciler), disconnect.

    Teardown needs neither the local node in the inventory nor its subnet: it
    removes what is ours whatever the file says now.  With `source: kubernetes`
    the Nodes are listed once (`inventory`, when the caller did it already)."""
    config = load(args, require_local=not teardown) if inventory is None else inventory.config
    if not teardown:
        from ..sources.kube_once import list_nodes

        inventory = inventory or list_nodes(config)
        if inventory.waiting:
            raise ConfigError([f"nodes: {inventory.waiting}"])
        config = inventory.config
    lacks = None if teardown else missing_subnets(config.cluster, config.local_node)
    if lacks:
        raise ConfigError([f"nodes: {config.local.node}: has no {lacks} (run `ovs-mesh allocate`)"])
    from ..reconcile.node import open_node

    node = open_node(config)
    try:
        return fn(config, node.reconciler())
    finally:
        node.close()


def cmd_plan(args) -> int:
    from ..sources.kube_once import list_nodes

    inventory = list_nodes(load(args))

    def run(config, rec):
        print_result(rec.plan(), args.json, "plan", config, _annotation(config, inventory.annotation))
        return EXIT_OK
    return _with_reconciler(args, run, inventory=inventory)


def _annotation(config, current) -> dict | None:
    """The Node annotation the agent would write (the Kubernetes source with WireGuard), or None.
    The key file is only read: a bad one is refused by the pass itself, with its own message."""
    from ..sources.kube_once import annotation_change
    if config.source != "kubernetes" or config.cluster.encryption != "wireguard":
        return None
    from ..encryption.wg_keys import read_public_key
    return annotation_change(config, current, read_public_key(config.local.wireguard_key))


def cmd_apply(args) -> int:
    def run(config, rec):
        result = rec.apply()
        write_status(config.local.rundir, result)
        print_result(result, args.json, "apply", config)
        return EXIT_FAIL if result.problems else EXIT_OK
    return _with_reconciler(args, run)


def cmd_teardown(args) -> int:
    def run(config, rec):
        result = rec.apply(teardown=True)
        print_result(result, False, "teardown", config)
        remove_status(config.local.rundir)
        return EXIT_OK
    return _with_reconciler(args, run, teardown=True)


def cmd_status(args) -> int:
    from ..sources.kube_once import kept_out_lines, list_nodes
    from .status import collect, render

    inventory = list_nodes(load(args))
    kept = [{"node": n, "reason": r, "message": m} for n, r, m in inventory.kept_out]
    if inventory.waiting:   # the local node's own Node holds the agent back: say so, and who is kept out
        data = {"node": inventory.config.local.node, "waiting": inventory.waiting, "kept_out": kept}
        print(json.dumps(data, indent=2) if args.json else "\n".join(
            [f"node {data['node']}: waiting: {inventory.waiting}", *kept_out_lines(inventory.kept_out)]))
        return EXIT_FAIL

    def run(config, rec):
        data = {**collect(config, rec), "kept_out": kept}
        print(json.dumps(data, indent=2) if args.json else "\n".join(
            [render(data), *kept_out_lines(inventory.kept_out)]))
        return EXIT_OK if data["converged"] else EXIT_FAIL
    return _with_reconciler(args, run, inventory=inventory)


def cmd_trace(args) -> int:
    from ..ovs.model import BRIDGE
    from ..ovs.openflow import trace
    from . import packet_trace as pt

    src = pt.parse_addr("SRC", args.src) if args.src is not None else None
    dst = pt.parse_addr("DST", args.dst)
    config = load(args)
    if src is None:
        src = pt.default_source(config, dst)
    pt.packet(args.proto, src, dst)   # the protocol fits the family: checked before any I/O
    pt.check_pair(config, src, dst)
    ofports = None
    if config.cluster.mode != "flow":
        from ..reconcile.node import connect_ovsdb

        client = connect_ovsdb(config.local)
        try:
            ofports = dict(client.read(BRIDGE).ofports)
        finally:
            client.close()
    try:
        flow = pt.trace_flow(config, src, dst, args.proto, ofports)
    except LookupError as e:
        print(e.args[0], file=sys.stderr)
        return EXIT_FAIL
    print(f"trace: {flow}")
    text = trace(config.local.rundir, BRIDGE, flow)
    print(text)
    print(pt.summarize(config, text, ofports))
    return EXIT_OK


def cmd_allocate(args) -> int:
    from ..config.file import allocate_file

    changed = allocate_file(args.config, dry_run=args.dry_run)
    for name, subnet in changed:
        print(f"allocated {name}: {subnet}")
    if not changed:
        print("allocate: every node has a subnet; nothing changed")
    return EXIT_OK


def cmd_wireguard_key(args) -> int:
    from ..encryption.wg_keys import ensure_private_key, rotate_private_key

    config = load(args, require_local=False)
    path = config.local.wireguard_key
    if args.rotate:
        public, old = rotate_private_key(path)
        print(f"replaced the private key in {path} (mode 0600; public key was {old or 'none'}). The agent puts "
              f"it on the WireGuard device at its next full pass (now: systemctl reload ovs-mesh); the other "
              f"nodes need the new public key in this node's nodes[].wireguard_public_key (the Kubernetes "
              f"source: the agent writes it to its Node's annotation)", file=sys.stderr)
        print(public)
        return EXIT_OK
    public, made = ensure_private_key(path)
    if made:
        print(f"made a new private key in {path} (mode 0600)", file=sys.stderr)
    print(public)
    return EXIT_OK


COMMANDS = {"validate": cmd_validate, "plan": cmd_plan, "apply": cmd_apply, "status": cmd_status,
            "trace": cmd_trace, "teardown": cmd_teardown, "allocate": cmd_allocate,
            "wireguard-key": cmd_wireguard_key}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    fn = COMMANDS.get(args.command) or getattr(args, "func", None)
    assert fn is not None   # a required subcommand: each is in COMMANDS or sets func
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
