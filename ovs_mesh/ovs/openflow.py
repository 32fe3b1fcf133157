"""OpenFlow on our bridge through ovs-ofctl/ovs-appctl: read our flows, change
them atomically, trace a packet.

Only flows carrying our cookie are read or deleted.  Changes go in one
OpenFlow 1.3 bundle, so a peer's flows appear or vanish together and a failed
change leaves the table as it was.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable
from typing import TypeVar

from topology.errors import Transient

from ..process import daemon_pid
from .model import COOKIE_MATCH, T_FROM_PEERS, Flow, FlowChange, ours

OFCTL = ("ovs-ofctl", "-O", "OpenFlow13")   # every ovs-ofctl call of the project
_FLOW_COUNT = re.compile(r"flow_count=(\d+)")
# dump-flows WITH statistics: ovs-ofctl then prints each reply as it arrives; with --no-stats
# it keeps every reply until the last (127 MB for 35 000 flows, 7 MB streamed).
DUMP = (*OFCTL, "--no-names", "dump-flows")
_T = TypeVar("_T")


class OpenFlowError(Transient):
    """ovs-ofctl/ovs-appctl failed (vswitchd down or busy): retry later."""


# Fields ovs-ofctl prints between the cookie and the match when it shows statistics.
_STATS = ("duration=", "n_packets=", "n_bytes=", "idle_age=", "hard_age=")
_flow = tuple.__new__   # Flow(...) without the named tuple's Python-level __new__: hot


def parse_dump(lines: Iterable[str], known: dict[tuple, tuple[str, Flow]] | None = None) -> list[tuple[str, Flow]]:
    """`ovs-ofctl dump-flows` output lines, with or without statistics -> [(cookie, Flow)].

    Lines look like ` cookie=0x.., duration=1.2s, table=10, n_packets=0, n_bytes=0,
    priority=100,ip,nw_dst=.. actions=..` (`--no-stats` prints neither the counters nor
    table 0; the default priority is never printed).  Hot at thousands of peers, hence
    plain string slicing, and `known` (a line's fields without the counters -> parsed)
    from the previous dump: it is filled with this dump's flows, so an unchanged flow
    costs a dict lookup.  A str is read as its lines.
    """
    if isinstance(lines, str):
        lines = lines.splitlines()
    out = []
    seen: dict[tuple, tuple[str, Flow]] = {}
    for line in lines:
        i = line.find(" actions=")
        if i < 0:
            continue
        fields = line[:i].lstrip().split(", ", 5)
        if not fields[0].startswith("cookie="):
            continue
        if (len(fields) == 6 and fields[1].startswith("duration=") and fields[2].startswith("table=")
                and fields[4].startswith("n_bytes=") and not fields[5].startswith(_STATS)):
            table, head = fields[2], fields[5]    # the layout with counters: fixed fields first
        else:
            table, rest = "table=0", []
            for f in line[:i].strip().rstrip(",").split(", ")[1:]:
                if f.startswith("table="):
                    table = f
                elif not f.startswith(_STATS):
                    rest.append(f)
            head = ", ".join(rest)          # priority and match (and any flags or timeouts)
        actions = line[i + 9:].rstrip("\n")
        if known is None:
            out.append((fields[0][7:], _flow_of(table, head, actions)))
            continue
        key = (fields[0], table, head, actions)
        hit = known.get(key)
        if hit is None:
            hit = (fields[0][7:], _flow_of(table, head, actions))
        out.append(hit)
        seen[key] = hit
    if known is not None:
        known.clear()
        known.update(seen)
    return out


def _flow_of(table: str, head: str, actions: str) -> Flow:
    """("table=10", "priority=100,ip,nw_dst=..", actions) -> Flow (the default priority is not printed)."""
    if head.startswith("priority="):
        prio, _, match = head.partition(",")
        return _flow(Flow, (int(table[6:]), int(prio[9:]), match, actions))
    return _flow(Flow, (int(table[6:]), 32768, head, actions))


_RX_TABLE = f" table={T_FROM_PEERS},"
_N_PACKETS = re.compile(r"n_packets=(\d+)")


def _tap(lines: Iterable[str], rx: list[str]) -> Iterable[str]:
    """The lines, passed on; those of the receive table also kept in `rx`."""
    for line in lines:
        if _RX_TABLE in line:
            rx.append(line)
        yield line


def rx_counts(lines: list[str]) -> dict[Flow, int]:
    """Dump lines with statistics -> each flow's packet count."""
    out = {}
    for line in lines:
        m = _N_PACKETS.search(line)
        if m:
            for _, flow in parse_dump([line]):
                out[flow] = int(m.group(1))
    return out


def bundle_text(changes: list[FlowChange]) -> str:
    lines = []
    for ch in changes:
        if ch.action == "add":
            lines.append("add " + ch.new.spec())
        elif ch.action == "modify":
            lines.append("modify_strict " + ch.new.spec())
        else:
            lines.append("delete_strict " + ch.old.spec(with_actions=False))
    return "\n".join(lines) + "\n" if lines else ""


class OpenFlow:
    """Our flows on one bridge.  `dump`/`count` read, `apply` changes in one bundle
    (all or nothing; re-applying the same changes is harmless).  Raises OpenFlowError."""

    def __init__(self, rundir: str, bridge: str):
        self.rundir, self.bridge = rundir, bridge
        self._parsed: dict[tuple, tuple[str, Flow]] = {}   # the last dump's flows, parsed
        # the last dump's receive flows (table 20) -> their packet counts: when each peer
        # last sent us anything (the agent's passive peer health)
        self.rx_packets: dict[Flow, int] = {}

    @property
    def target(self) -> str:
        return f"unix:{os.path.join(self.rundir, self.bridge + '.mgmt')}"

    def available(self) -> bool:
        return os.path.exists(os.path.join(self.rundir, self.bridge + ".mgmt"))

    def _run(self, args, stdin: str | None = None) -> str:
        try:
            p = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=120)
        except FileNotFoundError:
            raise OpenFlowError(f"{args[0]} not found: install Open vSwitch") from None
        if p.returncode != 0:
            raise OpenFlowError(f"{' '.join(args[:4])}... failed: {p.stderr.strip()}")
        return p.stdout

    def _read(self, args, consume: Callable[[Iterable[str]], _T]) -> _T:
        """`consume` the output lines of ovs-ofctl while it still writes them (a dump is
        parsed while it is received).  Killed after 120 s, as _run's calls time out."""
        with tempfile.TemporaryFile() as err:
            try:
                # (a large buffer: fewer reads and wake-ups for a dump of megabytes)
                p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1 << 20)
            except FileNotFoundError:
                raise OpenFlowError(f"{args[0]} not found: install Open vSwitch") from None
            late: list[bool] = []

            def expire() -> None:
                late.append(True)
                p.kill()

            timer = threading.Timer(120, expire)
            timer.start()
            stdout = p.stdout
            assert stdout is not None   # stdout=PIPE
            try:
                with stdout:
                    out = consume(stdout)
            except BaseException:
                p.kill()
                raise
            finally:
                timer.cancel()
                p.wait()
            if p.returncode != 0:
                err.seek(0)
                why = "timed out after 120 s" if late else err.read().decode(errors="replace").strip()
                raise OpenFlowError(f"{' '.join(args[:4])}... failed: {why or f'exit {p.returncode}'}")
        return out

    def dump_all(self) -> list[tuple[str, Flow]]:
        return self._read([*DUMP, self.target], parse_dump)

    def dump(self) -> frozenset[Flow]:
        """Our flows only."""
        if not self.available():
            return frozenset()
        rx: list[str] = []
        flows = self._read([*DUMP, self.target, COOKIE_MATCH],
                           lambda lines: frozenset(f for _, f in parse_dump(_tap(lines, rx), self._parsed)))
        self.rx_packets = rx_counts(rx)
        return flows

    def foreign_flow_count(self) -> int:
        if not self.available():
            return 0
        return sum(1 for cookie, _ in self.dump_all() if not ours(cookie))

    def count(self) -> int | None:
        """How many flows carry our cookie (cheap: dump-aggregate), None when vswitchd cannot tell."""
        if not self.available():
            return None
        try:
            p = subprocess.run([*OFCTL, "dump-aggregate", self.target, COOKIE_MATCH],
                               capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return None
        m = _FLOW_COUNT.search(p.stdout) if p.returncode == 0 else None
        return int(m.group(1)) if m else None

    def apply(self, changes: list[FlowChange]) -> int:
        """Apply flow changes in one bundle; returns how many flows changed."""
        text = bundle_text(changes)
        if not text:
            return 0
        self._run([*OFCTL, "--bundle", "add-flows", self.target, "-"], stdin=text)
        return text.count("\n")


def appctl_target(rundir: str) -> str:
    """The ovs-vswitchd unixctl socket in `rundir` (found by its pidfile)."""
    pid = daemon_pid(rundir, "ovs-vswitchd")
    if pid is None:
        raise OpenFlowError(f"ovs-vswitchd is not running (no pidfile in {rundir})")
    return os.path.join(rundir, f"ovs-vswitchd.{pid}.ctl")


def trace(rundir: str, bridge: str, flow: str) -> str:
    p = subprocess.run(["ovs-appctl", "-t", appctl_target(rundir), "ofproto/trace", bridge, flow],
                       capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise OpenFlowError(f"ofproto/trace failed: {p.stderr.strip()}")
    return p.stdout
