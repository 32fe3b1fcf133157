"""The Reconciler driven through in-memory fakes of its clients (no OVS)."""
import dataclasses

import pytest

from ovs_mesh.ovs.model import BridgeChange, FlowChange, PortChange
from ovs_mesh.reconcile.reconciler import Reconciler
from tests.unit.fakes import FakeFlows, FakeOvsdb, config
from topology.errors import NotOurs


def make(tmp_path, **cluster):
    log: list = []
    ovsdb, flows = FakeOvsdb(), FakeFlows(log)
    return Reconciler(config(tmp_path, **cluster), ovsdb, flows), ovsdb, flows, log


def test_apply_then_converged(tmp_path):
    rec, ovsdb, flows, _ = make(tmp_path, mode="port")
    plan = rec.plan()
    assert plan.problems == [] and plan.plan.ovsdb and plan.plan.flows and plan.plan.host == ()
    assert all(isinstance(c, (BridgeChange, PortChange)) for c in plan.plan.ovsdb)
    assert all(isinstance(c, FlowChange) for c in plan.plan.flows)
    first = rec.apply()
    assert first.ovsdb_transactions == 1 and first.flow_changes == len(flows.flows) > 0
    assert [str(c) for c in first.changes] == [str(c) for c in plan.changes]
    assert ovsdb.bridge.name == "obr0" and len(ovsdb.ports) == 2
    again = rec.apply()
    assert (again.changes, again.ovsdb_transactions, again.flow_changes) == ([], 0, 0)
    assert rec.plan().as_dict()["changes"] == []


def test_peer_leaving_touches_only_that_peer(tmp_path):
    rec, ovsdb, flows, _ = make(tmp_path, mode="port")
    rec.apply()
    kept = {name: ovsdb.ofports[name] for name in ovsdb.ports}
    rec.config = dataclasses.replace(rec.config, nodes=rec.config.nodes[:2])
    result = rec.apply()
    assert [(c.action, c.kind) for c in result.plan.ovsdb] == [("delete", "port")]
    assert {c.action for c in result.plan.flows} == {"delete"}
    assert all(ovsdb.ofports[n] == kept[n] for n in ovsdb.ports)


def test_untagged_bridge_is_refused_not_adopted(tmp_path):
    rec, ovsdb, flows, log = make(tmp_path)
    ovsdb.untagged = True
    plan = rec.plan()
    assert plan.problems == ["bridge obr0 exists but was not created by ovs-mesh"]
    with pytest.raises(NotOurs, match="not created by ovs-mesh"):
        rec.apply()
    assert ovsdb.calls == [] and log == [] and ovsdb.bridge is None


def test_teardown_removes_flows_before_rows(tmp_path):
    rec, ovsdb, flows, log = make(tmp_path)
    rec.apply()
    order: list = []
    real_apply = ovsdb.apply
    ovsdb.apply = lambda *a, **kw: order.append(("rows", len(a[1]))) or real_apply(*a, **kw)
    flows.log = order
    n_flows = len(flows.flows)
    result = rec.apply(teardown=True)
    assert order == [("flows", n_flows), ("rows", 2)]   # flows first, while the bridge exists (rows: port, bridge)
    assert ovsdb.bridge is None and ovsdb.ports == {} and flows.flows == set()
    assert result.changes[-1].as_dict() == {"action": "delete", "kind": "bridge", "name": "obr0"}
    assert [c.kind for c in result.changes[:-1]].count("flow") == result.flow_changes
