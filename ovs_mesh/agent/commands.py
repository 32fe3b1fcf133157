"""The `agent` and `install-service` commands (registered into ovs_mesh.cli.main)."""
from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys

from topology.config import host_port_problem
from topology.errors import InputError, Problem, show

EXIT_OK = 0

LOG = logging.getLogger("ovs_mesh.agent")
OFF = ("", "off", "none")
RESYNC_MIN, RESYNC_MAX = 1.0, 86400.0  # seconds: not a busy loop, at least daily


def register(sub) -> None:
    sp = sub.add_parser("agent", help="reconcile forever (systemd service, DaemonSet)",
                        description="Reconcile at start, on every change of the source, on OVSDB "
                                    "changes to what ovs-mesh owns, when ovs-vswitchd restarts, and "
                                    "periodically.  A change of peers only is applied incrementally "
                                    "(just those peers' ports and flows); everything else, and the "
                                    "periodic resync, is a full pass that repairs any drift.  SIGTERM "
                                    "stops it and leaves the mesh installed.")
    sp.add_argument("--resync", type=float, default=60.0, metavar="SECONDS",
                    help=f"periodic full resync interval, {RESYNC_MIN:g} to {RESYNC_MAX:g} (default 60)")
    sp.add_argument("--metrics", metavar="HOST:PORT",
                    help="serve /metrics and /healthz here (overrides local.metrics; '' or off disables)")
    sp.add_argument("--state-dir", metavar="DIR", default=os.environ.get("STATE_DIRECTORY", "").split(":")[0],
                    help="keep the last good inventory here (inventory.json), to restore the pipeline after "
                         "a restart before the source answers (default: $STATE_DIRECTORY, which the unit's "
                         "StateDirectory= sets to /var/lib/ovs-mesh; '' or off: none)")
    sp.set_defaults(func=cmd_agent)
    ip = sub.add_parser("install-service", help="install the systemd unit, an example config and the drop-ins "
                                                 "of ovs-vswitchd and openvswitch-ipsec; enable the unit")
    ip.add_argument("--root", default="/", help="install below this directory (default /; "
                                                "anything else skips systemctl)")
    ip.add_argument("--exec", dest="exec_path", metavar="PATH",
                    help="the ovs-mesh executable for ExecStart (default: this one)")
    ip.add_argument("--dry-run", action="store_true", help="print what would be done, change nothing")
    ip.add_argument("--no-enable", action="store_true", help="do not run systemctl daemon-reload/enable")
    ip.set_defaults(func=cmd_install_service)
    up = sub.add_parser("uninstall-service", help="stop and disable the agent; remove its unit, the "
                                                  "drop-ins and their scripts (config and state stay)")
    up.add_argument("--root", default="/", help="below this directory (default /; anything else skips systemctl)")
    up.add_argument("--dry-run", action="store_true", help="print what would be done, change nothing")
    up.set_defaults(func=cmd_uninstall_service)


class _JournalFormatter(logging.Formatter):
    """`<priority>LEVEL name: message` lines: journald reads the priority prefix."""
    PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def format(self, record):
        return f"<{self.PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


def under_journald() -> bool:
    """stderr is connected to the journal (systemd sets JOURNAL_STREAM=dev:inode)."""
    js = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in js.split(":"))
        st = os.fstat(2)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if under_journald():  # journald adds time and unit; plain lines read best
        handler.setFormatter(_JournalFormatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)
    for noisy in ("ovsdbapp", "ovs", "kubernetes", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.WARNING)


def metrics_address(args, config) -> str | None:
    value = args.metrics if args.metrics is not None else config.local.metrics
    if value is None or value.strip().lower() in OFF:
        return None
    reason = host_port_problem(value)
    if reason:
        raise InputError([Problem("--metrics", show(value), f"{reason}, '' or off")])
    return value


def cmd_agent(args) -> int:
    from ovs_mesh.sources.file_source import FileSource

    from ..host.neigh_hold import NeighbourHold
    from .loop import Agent
    from .schedule import Reason

    if not RESYNC_MIN <= args.resync <= RESYNC_MAX:  # also refuses nan and inf
        raise InputError([Problem("--resync", str(args.resync), f"must be a number of seconds between "
                                  f"{RESYNC_MIN:g} and {RESYNC_MAX:g}")])
    setup_logging(args.verbose)
    from ..config.file import overrides

    # A node that is not (yet) in the topology file waits for it, like a new
    # machine whose agent runs before the file lists it (the loop says so once).
    source = FileSource(args.config, overrides(args), require_local=False)
    config = source.load()  # bad config at start: exit 2, nothing touched
    state_dir = None if args.state_dir.strip().lower() in OFF else args.state_dir
    agent = Agent(source, resync=args.resync, metrics_address=metrics_address(args, config), probe=True,
                  state_dir=state_dir, neigh_hold=NeighbourHold())
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    signal.signal(signal.SIGHUP, lambda *_: agent.kick(Reason.SIGHUP, reset_backoff=True))
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1` prints every thread's stack to the log
    LOG.info("agent starting: node %s, config %s (source %s), OVSDB %s, resync every %gs, state %s",
             config.local.node, source.path, config.source, config.local.ovsdb, args.resync, state_dir or "none")
    return agent.run()


def cmd_install_service(args) -> int:
    from .install import install_service

    # ExecStart= takes one absolute path here: a space, newline or '%' would split it or
    # inject another unit directive.
    if args.exec_path is not None and (not os.path.isabs(args.exec_path)
                                       or any(ch.isspace() or ch in "%\\;\"'" or not ch.isprintable()
                                              for ch in args.exec_path)):
        raise InputError([Problem("--exec", show(args.exec_path), "must be an absolute path without "
                                  "spaces, quotes, '%', ';' or control characters")])
    for line in install_service(root=args.root, exec_path=args.exec_path, dry_run=args.dry_run,
                                enable=not args.no_enable):
        print(line)
    return EXIT_OK


def cmd_uninstall_service(args) -> int:
    from .install import uninstall_service

    for line in uninstall_service(root=args.root, dry_run=args.dry_run):
        print(line)
    return EXIT_OK


__all__ = ["register"]
