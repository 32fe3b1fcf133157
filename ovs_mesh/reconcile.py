"""One reconcile pass: observe -> desired -> diff -> apply.

`Reconciler` is the only place that wires the pure stages to the clients.
`plan()` and `apply()` compute the same change list; apply then executes it:
OVSDB changes in one transaction, then flow changes in one bundle.
"""
from __future__ import annotations

import dataclasses
import time

from topology.model import Config

from . import desired as desired_mod
from .diff import diff
from .openflow import OpenFlow
from .state import BRIDGE, Change, Conflict, OvsState

DEFAULT_UNDERLAY_MTU = 1500


@dataclasses.dataclass
class Observed:
    ovs: OvsState
    ofports: dict[str, int]
    problems: list[str]


@dataclasses.dataclass
class Result:
    changes: list[Change]
    problems: list[str]
    ovsdb_transactions: int = 0
    flow_changes: int = 0
    seconds: float = 0.0
    desired: OvsState | None = None   # what the node holds once converged

    def as_dict(self) -> dict:
        return {"changes": [c.as_dict() for c in self.changes], "problems": self.problems,
                "ovsdb_transactions": self.ovsdb_transactions, "flow_changes": self.flow_changes,
                "seconds": round(self.seconds, 4)}


class ReconcileError(RuntimeError):
    pass


class Reconciler:
    def __init__(self, config: Config, ovsdb, openflow: OpenFlow | None = None, host=None):
        self.config = config
        self.ovsdb = ovsdb
        self.openflow = openflow or OpenFlow(config.local.rundir, BRIDGE)
        self.host = host  # host networking layer (None: manage OVS only)

    def observe(self) -> Observed:
        state, ofports, problems = self.ovsdb.read(BRIDGE)
        flows = self.openflow.dump() if state.bridge is not None else frozenset()
        return Observed(dataclasses.replace(state, flows=flows), ofports, problems)

    def pod_mtu(self) -> int:
        underlay = self.host.underlay_mtu() if self.host is not None else DEFAULT_UNDERLAY_MTU
        return self.config.cluster.pod_mtu(underlay)

    def desired(self, observed: Observed, pod_mtu: int | None = None) -> OvsState:
        return desired_mod.build(self.config, pod_mtu or self.pod_mtu(), observed.ofports)

    def plan(self, teardown: bool = False, observed: Observed | None = None) -> Result:
        observed = observed or self.observe()
        _, changes = self._changes(observed, teardown)
        return Result(changes, observed.problems)

    def _changes(self, observed: Observed, teardown: bool) -> tuple[OvsState, list[Change]]:
        mtu = self.pod_mtu()
        want = OvsState() if teardown else self.desired(observed, mtu)
        changes = diff(want, observed.ovs)
        if self.host is not None:
            changes += self.host.plan(mtu, teardown)
        return want, changes

    def _check_ports(self, want: OvsState) -> list[str]:
        """After an OVSDB change: interfaces OVS failed to create, ofports not as requested."""
        _, ofports, problems = self.ovsdb.read(BRIDGE)
        problems += [f"port {p.name}: ofport {ofports.get(p.name)} is not the requested {p.ofport_request}"
                     for p in want.ports
                     if p.ofport_request and ofports.get(p.name) not in (p.ofport_request, -1)]
        return problems

    def apply(self, teardown: bool = False) -> Result:
        start = time.monotonic()
        observed = self.observe()
        conflicts = [p for p in observed.problems if isinstance(p, Conflict)]
        if conflicts:
            raise ReconcileError("; ".join(conflicts))
        want, changes = self._changes(observed, teardown)
        ovs_changes = [c for c in changes if c.kind in ("bridge", "port")]
        flow_changes = [c for c in changes if c.kind == "flow"]
        result = Result(changes, [], desired=want)
        if teardown:
            # Flows first (while the bridge exists), then the rows.
            result.flow_changes = self.openflow.apply(flow_changes)
            keep = self.openflow.foreign_flow_count() > 0
            result.ovsdb_transactions = self.ovsdb.apply(BRIDGE, ovs_changes, keep_bridge=keep)
        else:
            result.ovsdb_transactions = self.ovsdb.apply(BRIDGE, ovs_changes)
            result.flow_changes = self.openflow.apply(flow_changes)
        if self.host is not None:
            self.host.apply([c for c in changes if c.kind not in ("bridge", "port", "flow")], teardown)
        if not teardown:
            result.problems = self._check_ports(want) if ovs_changes else observed.problems
        result.seconds = time.monotonic() - start
        return result
