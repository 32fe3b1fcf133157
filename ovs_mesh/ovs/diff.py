"""The one place that compares desired with observed OVS state.  Pure.

`diff_rows` gives the OVSDB row changes (adds and modifies of bridge then ports,
then port deletes and the bridge delete), `diff_flows` the flow changes (adds,
modifies, deletes); `reconcile.plan.diff` puts both in a `Plan`.  A converged
node yields no changes.
"""
from __future__ import annotations

from .model import BridgeChange, Flow, FlowChange, GlobalChange, OvsState, PortChange, RowChange


def diff_flows(desired: frozenset[Flow], observed: frozenset[Flow]) -> list[FlowChange]:
    if desired == observed:  # the common, converged case: no per-flow work
        return []
    # Only flows in the symmetric difference can change.
    want = {f.key: f for f in desired - observed}
    have = {f.key: f for f in observed - desired}
    out: list[FlowChange] = []
    for key in sorted(want.keys() - have.keys()):
        out.append(FlowChange("add", str(want[key]), new=want[key]))
    for key in sorted(want.keys() & have.keys()):
        out.append(FlowChange("modify", str(want[key]), old=have[key], new=want[key]))
    for key in sorted(have.keys() - want.keys()):
        out.append(FlowChange("delete", str(have[key]), old=have[key]))
    return out


def diff_rows(desired: OvsState, observed: OvsState) -> list[RowChange]:
    changes: list[RowChange] = []
    d, o = desired.bridge, observed.bridge
    if d is not None and o is None:
        changes.append(BridgeChange("add", d.name, new=d))
    elif d is not None and o != d:
        changes.append(BridgeChange("modify", d.name, old=o, new=d))
    want, have = desired.port_map(), observed.port_map()
    for name in sorted(want.keys() - have.keys()):
        changes.append(PortChange("add", name, new=want[name]))
    for name in sorted(want.keys() & have.keys()):
        if want[name] != have[name]:
            changes.append(PortChange("modify", name, old=have[name], new=want[name]))
    for name in sorted(have.keys() - want.keys()):
        changes.append(PortChange("delete", name, old=have[name]))
    if d is None and o is not None:
        changes.append(BridgeChange("delete", o.name, old=o))
    g, h = desired.globals, observed.globals
    if g is not None and h is None:
        changes.insert(0, GlobalChange("add", g.label, new=g))
    elif g is not None and g != h:
        changes.insert(0, GlobalChange("modify", g.label, old=h, new=g))
    elif g is None and h is not None:
        changes.append(GlobalChange("delete", h.label, old=h))
    return changes
