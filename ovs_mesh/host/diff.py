"""The one place that compares desired with observed host state.  Pure.

Objects are matched by (kind, key) and compared whole.  Adds and modifies
come in desired order, deletes in reverse observed order, so applying in
order is safe.  Objects that are only the state of something not ours
(`deletable = False`: obr0 enslaved, a device up, a setting) are never
deleted.  A converged host yields an empty list.
"""
from __future__ import annotations

from .model import HostChange, HostState


def diff_host(desired: HostState, observed: HostState) -> list[HostChange]:
    have = {(o.kind, o.key): o for o in observed.objects}
    wanted = {(w.kind, w.key) for w in desired.objects}
    out: list[HostChange] = []
    for w in desired.objects:
        h = have.get((w.kind, w.key))
        if h is None:
            out.append(HostChange("add", new=w))
        elif h != w:
            out.append(HostChange("modify", old=h, new=w))
    out += [HostChange("delete", old=h) for h in reversed(observed.objects)
            if (h.kind, h.key) not in wanted and getattr(h, "deletable", True)]
    return out
