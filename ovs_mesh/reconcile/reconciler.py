"""One reconcile pass: observe -> desired -> diff -> apply.

`Reconciler` is the only place that wires the pure stages to the clients
(small interfaces, see clients.py).  `plan()` and `apply()` compute the same
`Plan`; apply then executes it: OVSDB changes in one transaction, flow changes
in one bundle, then the host changes (on teardown flows go first, while the
bridge still exists).
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import time
from collections.abc import Callable, Mapping

from topology.errors import NotOurs
from topology.model import Config

from ..ovs import desired as desired_mod
from ..ovs.model import BRIDGE, OvsState, PortChange
from .clients import Flows, Host, OvsdbRows
from .plan import Observed, Plan, Result, diff

DEFAULT_UNDERLAY_MTU = 1500

# How a pass builds the desired state by part: (config, pod_mtu, ofports) -> Parts.
BuildParts = Callable[[Config, "int | None", Mapping[str, int]], desired_mod.Parts]


@contextlib.contextmanager
def long_lived_frozen():
    """What exists before a full pass (modules, config, OVSDB cache, the agent's record)
    is left out of the cyclic GC's traversals while the pass runs (`gc.freeze`).

    A pass allocates ~100 000 objects that form no cycles (each dumped flow parsed, each
    desired flow built: 70 000 at 5000 dual-stack peers), so the collector runs many
    times during it; without this, each full collection would traverse the whole heap
    to free nothing (0.05-0.4 s of a 0.5 s no-op pass).  The collector stays on, for
    every thread: it still collects what is allocated meanwhile, and after the pass the
    older objects are its again (`gc.unfreeze`), so cycles among them are still freed.
    Passes do not nest.  The agent freezes again what a full pass leaves, once it has
    collected (`agent.loop.freeze_long_lived`), so that its incremental passes skip it too."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class ReconcileError(NotOurs):
    """Apply refused: something it would have to change is not ours."""


class Reconciler:
    def __init__(self, config: Config, ovsdb: OvsdbRows, openflow: Flows, host: Host | None = None,
                 build_parts: BuildParts | None = None):
        self.config = config
        self.ovsdb = ovsdb
        self.openflow = openflow
        self.host = host  # host networking layer (None: manage OVS only)
        # builds the desired state by part (the agent passes one that reuses its record)
        self.build_parts: BuildParts = build_parts or desired_mod.build_parts

    def observe(self) -> Observed:
        owned = self.ovsdb.read(BRIDGE)
        flows = self.openflow.dump() if owned.bridge is not None else frozenset()
        problems = [str(owned.refusal)] if owned.refusal is not None else list(owned.problems)
        return Observed(OvsState(owned.bridge, owned.ports, flows, owned.globals), dict(owned.ofports), problems,
                        owned.refusal)

    def pod_mtu(self) -> int:
        """The underlay MTU minus the tunnel's overhead over the underlay's
        family (an IPv6 outer header is 20 bytes longer), or cluster.mtu."""
        underlay = self.host.underlay_mtu() if self.host is not None else DEFAULT_UNDERLAY_MTU
        return self.config.cluster.pod_mtu(underlay, self.config.underlay_family or "ipv4")

    def desired(self, observed: Observed, pod_mtu: int | None = None) -> OvsState:
        return desired_mod.compose(self.desired_parts(observed, pod_mtu))

    def desired_parts(self, observed: Observed, pod_mtu: int | None = None) -> desired_mod.Parts:
        return self.build_parts(self.config, pod_mtu or self.pod_mtu(), observed.ofports)

    def plan(self, teardown: bool = False, observed: Observed | None = None) -> Result:
        with long_lived_frozen():
            observed = observed or self.observe()
            _, _, plan = self._plan(observed, teardown)
        return Result(plan, observed.problems)

    def _plan(self, observed: Observed, teardown: bool) -> tuple[desired_mod.Parts | None, OvsState, Plan]:
        mtu = self.pod_mtu()
        parts = None if teardown else self.desired_parts(observed, mtu)
        want = OvsState() if parts is None else desired_mod.compose(parts)
        plan = diff(want, observed.ovs)
        if self.host is not None:
            plan = dataclasses.replace(plan, host=tuple(self.host.plan(mtu, teardown)))
        return parts, want, plan

    def _check_ports(self, want: OvsState) -> list[str]:
        """After an OVSDB change: interfaces OVS failed to create, ofports not as requested."""
        owned = self.ovsdb.read(BRIDGE)
        ofports = owned.ofports
        return [*owned.problems,
                *(f"port {p.name}: ofport {ofports.get(p.name)} is not the requested {p.ofport_request}"
                  for p in want.ports
                  if p.ofport_request and ofports.get(p.name) not in (p.ofport_request, -1))]

    def apply(self, teardown: bool = False) -> Result:
        start = time.monotonic()
        with long_lived_frozen():
            observed = self.observe()
            if observed.refusal is not None:
                raise ReconcileError(str(observed.refusal))
            parts, want, plan = self._plan(observed, teardown)
        result = Result(plan, [], desired=want, parts=parts, observed=observed)
        rows, flows = list(plan.ovsdb), list(plan.flows)
        if teardown:
            # Flows first (while the bridge exists), then the rows.
            result.flow_changes = self.openflow.apply(flows)
            keep = self.openflow.foreign_flow_count() > 0
            result.ovsdb_transactions = self.ovsdb.apply(BRIDGE, rows, keep_bridge=keep)
        else:
            result.ovsdb_transactions = self.ovsdb.apply(BRIDGE, rows)
            result.flow_changes = self.openflow.apply(flows)
        if self.host is not None:
            self.host.apply(list(plan.host), teardown)
        if not teardown:
            result.problems = self._check_ports(want) if rows else observed.problems
        result.seconds = time.monotonic() - start
        return result

    def apply_delta(self, plan: Plan) -> Result:
        """Apply a plan computed elsewhere (the agent's per-peer delta, agent/installed.py)
        without observing anything: rows in one transaction, flows in one bundle.
        Problems: ports of the plan that OVS did not create at their requested number
        (the flows would output elsewhere: the caller runs a full pass)."""
        start = time.monotonic()
        result = Result(plan, [])
        rows = list(plan.ovsdb)
        result.ovsdb_transactions = self.ovsdb.apply(BRIDGE, rows)
        result.flow_changes = self.openflow.apply(list(plan.flows))
        placed = [ch.new for ch in rows if ch.new is not None and isinstance(ch, PortChange)]
        if placed:
            health = self.ovsdb.health(p.name for p in placed)
            result.problems = [f"port {p.name}: ofport {health[p.name].ofport} is not the requested "
                               f"{p.ofport_request}" for p in placed
                               if p.ofport_request and health[p.name].ofport != p.ofport_request]
        result.seconds = time.monotonic() - start
        return result
