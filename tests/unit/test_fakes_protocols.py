"""Each fake of tests/unit/fakes.py, and each real client, can stand where its Protocol of
ovs_mesh/clients.py is expected: every method of the Protocol exists on it and accepts
every call the Protocol allows (same parameter names in the same places, a default
where the Protocol has one, nothing extra that is required), and every attribute the
Protocol declares is there.  A method added to a Protocol fails here until the fakes
have it too."""
from __future__ import annotations

import inspect

import pytest

from ovs_mesh.host import HostLayer
from ovs_mesh.ovs.openflow import OpenFlow
from ovs_mesh.reconcile.clients import Flows, Host, OvsdbRows
from ovsdb_client import OvsdbClient
from tests.unit.fakes import FakeFlows, FakeOvsdb

POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def call_problems(name: str, want: inspect.Signature, have: inspect.Signature) -> list[str]:
    """Why a method with signature `have` cannot take every call `want` allows ([] if it can)."""
    wanted = list(want.parameters.values())
    params = list(have.parameters.values())
    var_pos = any(p.kind is p.VAR_POSITIONAL for p in params)
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    by_name = {p.name: p for p in params}
    problems = []
    for i, w in enumerate(wanted):
        h = by_name.get(w.name)
        if h is None:
            if not (var_kw and (var_pos or w.kind not in POSITIONAL)):
                problems.append(f"{name}: no parameter {w.name!r}")
            continue
        if w.kind in POSITIONAL and (h.kind not in POSITIONAL or params.index(h) != i):
            problems.append(f"{name}: {w.name!r} is not positional parameter {i}")
        if w.default is not w.empty and h.default is h.empty:
            problems.append(f"{name}: {w.name!r} has no default")
    for h in params:
        if h.name not in want.parameters and h.default is h.empty and h.kind in (*POSITIONAL, h.KEYWORD_ONLY):
            problems.append(f"{name}: extra required parameter {h.name!r}")
    return problems


def conformance_problems(protocol: type, cls: type, instance=None) -> list[str]:
    """What `cls` lacks to satisfy `protocol`; the declared attributes are looked for on
    `instance` when one is given (an attribute may be set by __init__), else on the class."""
    problems = []
    for name in getattr(protocol, "__annotations__", {}):
        if not hasattr(instance if instance is not None else cls, name):
            problems.append(f"no attribute {name!r}")
    for name, member in vars(protocol).items():
        if name.startswith("_") or not inspect.isfunction(member):
            continue
        impl = getattr(cls, name, None)
        if not callable(impl):
            problems.append(f"no method {name!r}")
            continue
        problems += call_problems(name, inspect.signature(member), inspect.signature(impl))
    return problems


@pytest.mark.parametrize("protocol, cls, make", [
    (OvsdbRows, FakeOvsdb, FakeOvsdb),
    (Flows, FakeFlows, FakeFlows),
    # The real clients too: the Protocols describe them, not only the fakes.
    (OvsdbRows, OvsdbClient, None),        # (its `remote` is set by __init__: not looked for)
    (Flows, OpenFlow, None),
    (Host, HostLayer, None),               # (its `config` is set by __init__: not looked for)
], ids=lambda x: getattr(x, "__name__", ""))
def test_implementation_satisfies_its_protocol(protocol, cls, make):
    problems = conformance_problems(protocol, cls, make() if make else None)
    set_by_init = {OvsdbClient: "remote", HostLayer: "config"}.get(cls)
    problems = [p for p in problems if p != f"no attribute {set_by_init!r}"]
    assert problems == []


def test_the_check_catches_a_missing_method_and_an_incompatible_signature():
    class Partial:
        remote = "unix:/x"

        def read(self, name):                    # renamed parameter
            pass

        def apply(self, bridge, changes):        # keep_bridge missing
            pass

        def health(self, interfaces, extra):     # an extra required parameter
            pass

    problems = conformance_problems(OvsdbRows, Partial, Partial())
    assert "read: no parameter 'bridge'" in problems
    assert "apply: no parameter 'keep_bridge'" in problems
    assert "health: extra required parameter 'extra'" in problems
    assert "no method 'connected'" in problems and "no method 'close'" in problems
    assert conformance_problems(Flows, FakeOvsdb) != []
