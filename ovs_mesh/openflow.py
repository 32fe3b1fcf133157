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

from topology.errors import Transient

from .daemons import daemon_pid
from .state import COOKIE_MATCH, Flow, FlowChange, ours

OFCTL = ("ovs-ofctl", "-O", "OpenFlow13")   # every ovs-ofctl call of the project
_FLOW_COUNT = re.compile(r"flow_count=(\d+)")


class OpenFlowError(Transient):
    """ovs-ofctl/ovs-appctl failed (vswitchd down or busy): retry later."""


def parse_dump(text: str, known: dict[str, tuple[str, Flow]] | None = None) -> list[tuple[str, Flow]]:
    """`ovs-ofctl --no-stats dump-flows` output -> [(cookie, Flow)].

    Lines look like ` cookie=0x.., table=10, priority=100,ip,nw_dst=.. actions=..`
    (table 0 and the default priority are not printed).  Hot at thousands of
    peers, hence plain string slicing, and `known` (line -> parsed) from the
    previous dump: it is filled with this dump's lines, so an unchanged table
    costs a dict lookup per line.
    """
    out = []
    seen: dict[str, tuple[str, Flow]] = {}
    for line in text.splitlines():
        if known is not None:
            hit = known.get(line)
            if hit is not None:
                out.append(hit)
                seen[line] = hit
                continue
        i = line.find(" actions=")
        if i < 0:
            continue
        head = line[:i].strip()
        if not head.startswith("cookie="):
            continue
        cookie, _, rest = head.partition(", ")
        table = 0
        if rest.startswith("table="):
            t, _, rest = rest.partition(", ")
            table = int(t[6:])
        if rest.startswith("priority="):
            prio, _, match = rest.partition(",")
            priority = int(prio[9:])
        else:
            priority, match = 32768, rest
        out.append((cookie[7:], Flow(table, priority, match, line[i + 9:])))
        seen[line] = out[-1]
    if known is not None:
        known.clear()
        known.update(seen)
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
        self._parsed: dict[str, tuple[str, Flow]] = {}   # the last dump's lines, parsed

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

    def dump_all(self) -> list[tuple[str, Flow]]:
        return parse_dump(self._run([*OFCTL, "--no-stats", "--no-names", "dump-flows", self.target]))

    def dump(self) -> frozenset[Flow]:
        """Our flows only."""
        if not self.available():
            return frozenset()
        text = self._run([*OFCTL, "--no-stats", "--no-names", "dump-flows", self.target, COOKIE_MATCH])
        return frozenset(f for _, f in parse_dump(text, self._parsed))

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
