"""The one place that compares desired with observed state.  Pure.

Returns an ordered change list: adds and modifies of bridge then ports then
flows, and deletes in reverse (flows, ports, bridge), so applying in order is
always safe.  A converged node yields an empty list.
"""
from __future__ import annotations

from .state import Change, Flow, OvsState


def diff_flows(desired: frozenset[Flow], observed: frozenset[Flow]) -> list[Change]:
    if desired == observed:  # the common, converged case: no per-flow work
        return []
    # Only flows in the symmetric difference can change.
    want = {f.key: f for f in desired - observed}
    have = {f.key: f for f in observed - desired}
    out: list[Change] = []
    for key in sorted(want.keys() - have.keys()):
        out.append(Change("add", "flow", str(want[key]), new=want[key]))
    for key in sorted(want.keys() & have.keys()):
        out.append(Change("modify", "flow", str(want[key]), old=have[key], new=want[key]))
    for key in sorted(have.keys() - want.keys()):
        out.append(Change("delete", "flow", str(have[key]), old=have[key]))
    return out


def diff(desired: OvsState, observed: OvsState) -> list[Change]:
    changes: list[Change] = []
    d, o = desired.bridge, observed.bridge
    if d is not None and o is None:
        changes.append(Change("add", "bridge", d.name, new=d))
    elif d is not None and o != d:
        changes.append(Change("modify", "bridge", d.name, old=o, new=d))
    want, have = desired.port_map(), observed.port_map()
    for name in sorted(want.keys() - have.keys()):
        changes.append(Change("add", "port", name, new=want[name]))
    for name in sorted(want.keys() & have.keys()):
        if want[name] != have[name]:
            changes.append(Change("modify", "port", name, old=have[name], new=want[name]))
    flow_changes = diff_flows(desired.flows, observed.flows)
    changes += [c for c in flow_changes if c.action != "delete"]
    changes += [c for c in flow_changes if c.action == "delete"]
    for name in sorted(have.keys() - want.keys()):
        changes.append(Change("delete", "port", name, old=have[name]))
    if d is None and o is not None:
        changes.append(Change("delete", "bridge", o.name, old=o))
    return changes
