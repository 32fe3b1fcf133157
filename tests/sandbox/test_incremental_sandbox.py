"""The agent's incremental passes against a real OVS.

Property: any sequence of joins, leaves and IP changes (alone or in bursts), applied by
the agent's incremental pass, leaves OVS exactly as a full pass wants it (its plan finds
zero changes); and when someone also edited OVS behind the agent's back (a flow of ours
deleted, a port of ours removed, a foreign flow added), the next full pass repairs what
is ours and leaves the foreign flow alone.
"""
import dataclasses
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ovs_mesh.agent.loop import Agent
from ovs_mesh.agent.schedule import Kick, Pass, Reason
from ovs_mesh.agent.sdnotify import SdNotify
from ovs_mesh.ovs.desired import peer_port_name
from ovs_mesh.ovs.model import BRIDGE, COOKIE_MATCH
from ovs_mesh.ovs.openflow import parse_dump
from tests.helpers import installed_flows, sandbox_config, wait_for
from topology.config import parse_config
from topology.model import Node

SOURCE = Pass((Kick(Reason.SOURCE),))
RESYNC = Pass((Kick(Reason.RESYNC),))
BASE = 3   # node-1 (local), node-2, node-3
FOREIGN_COOKIE = "0x1234"


class Source:
    def __init__(self, cfg):
        self.cfg = cfg

    def config(self):
        return self.cfg

    def start(self, notify):
        pass

    def stop(self):
        pass


def peer(i: int, net: int = 56) -> Node:
    return Node(f"node-{i}", IPv4Address(f"192.168.{net}.{10 + i}"), IPv4Network(f"10.244.{i}.0/24"))


@pytest.fixture(params=["flow", "port"])
def agent(request, ovs):
    cfg = parse_config(sandbox_config(ovs, BASE, mode=request.param))
    a = Agent(Source(cfg), resync=3600, notifier=SdNotify(environ={}), watch=False)
    a.base, a.ovs = cfg, ovs
    try:
        yield a
    finally:
        a.session.close()


def plan_changes(a: Agent) -> list[str]:
    return [str(c) for c in a.session.node.reconciler().plan().changes]


def flows_in_ovs(ovs, cookie: str = COOKIE_MATCH) -> list:
    return [f for _, f in parse_dump(ovs.ofctl("--no-stats", "--no-names", "dump-flows", ovs.mgmt(BRIDGE), cookie))]


SOURCE_OP = st.one_of(st.tuples(st.just("join"), st.integers(2, 9)),
                      st.tuples(st.just("leave"), st.integers(2, 9)),
                      st.tuples(st.just("ip"), st.integers(2, 9), st.integers(57, 90)))
FOREIGN_OP = st.one_of(st.tuples(st.just("del_flow"), st.integers(0, 10 ** 6)),
                       st.tuples(st.just("del_port"), st.integers(0, 10 ** 6)),
                       st.tuples(st.just("foreign_flow"), st.integers(1, 250)))
STEP = st.one_of(st.lists(SOURCE_OP, min_size=1, max_size=4).map(lambda ops: ("source", ops)),
                 FOREIGN_OP.map(lambda op: ("foreign", op)))


def apply_source(a: Agent, ops) -> None:
    nodes = {n.name: n for n in a.source.cfg.nodes}
    for op in ops:
        name = f"node-{op[1]}"
        if op[0] == "join":
            nodes.setdefault(name, peer(op[1]))
        elif op[0] == "leave":
            nodes.pop(name, None)
        else:
            nodes[name] = peer(op[1], op[2])
    a.source.cfg = dataclasses.replace(a.source.cfg, nodes=tuple(sorted(nodes.values())))
    assert a.reconcile_once(SOURCE), "an incremental pass failed"


def apply_foreign(a: Agent, op) -> bool:
    """Edit OVS behind the agent's back; False when there was nothing to edit."""
    ovs = a.ovs
    if op[0] == "del_flow":
        ours = sorted(flows_in_ovs(ovs))
        f = ours[op[1] % len(ours)]
        ovs.ofctl("--strict", "del-flows", ovs.mgmt(BRIDGE), f.spec(with_actions=False))
        return True
    if op[0] == "del_port":
        ports = sorted(p.name for p in a.session.ovsdb.read(BRIDGE).ports)
        if not ports:
            return False
        name = ports[op[1] % len(ports)]
        ovs.vsctl("--if-exists", "del-port", BRIDGE, name)
        wait_for(lambda: name not in {p.name for p in a.session.ovsdb.read(BRIDGE).ports}, 10,
                 "the agent's OVSDB cache sees the port gone")
        return True
    ovs.ofctl("add-flow", ovs.mgmt(BRIDGE), f"cookie={FOREIGN_COOKIE},table=40,priority={op[1]},actions=drop")
    return False   # a foreign flow is not drift: it is not ours


@given(steps=st.lists(STEP, min_size=1, max_size=6))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_incremental_passes_leave_what_a_full_pass_wants(agent, steps):
    a = agent
    a.source.cfg = a.base
    assert a.reconcile_once(RESYNC) and not plan_changes(a)   # every example starts converged
    foreign_before = flows_in_ovs(a.ovs, f"cookie={FOREIGN_COOKIE}/-1")
    drift = False
    for kind, op in steps:
        if kind == "source":
            apply_source(a, op)
        else:
            drift = apply_foreign(a, op) or drift
    incremental = a.passes["incremental"]
    if not drift:
        # Only our own incremental passes since the last full one: OVS is what a full pass wants,
        # and what the record says.
        assert plan_changes(a) == []
        assert frozenset(flows_in_ovs(a.ovs)) == installed_flows(a.installed)
    assert a.reconcile_once(RESYNC)       # the full pass repairs any drift (a later step may have) ...
    assert plan_changes(a) == [] and a.passes["incremental"] == incremental
    assert frozenset(flows_in_ovs(a.ovs)) == installed_flows(a.installed)
    # ... and never touches what is not ours.
    foreign = flows_in_ovs(a.ovs, f"cookie={FOREIGN_COOKIE}/-1")
    assert set(foreign_before) <= set(foreign)


def test_port_mode_join_after_leave_does_not_reuse_the_number_in_one_transaction(ovs):
    """node-2 leaves and node-4 joins in one incremental pass: node-4 does not get node-2's
    number (OVS would number it elsewhere); a later join does."""
    cfg = parse_config(sandbox_config(ovs, BASE, mode="port"))
    a = Agent(Source(cfg), resync=3600, notifier=SdNotify(environ={}), watch=False)
    try:
        assert a.reconcile_once(RESYNC)
        freed = a.installed.peers["node-2"].ports[0].ofport_request
        apply_source(a, [("leave", 2), ("join", 4)])
        four, five = peer_port_name("vxlan", "node-4"), peer_port_name("vxlan", "node-5")
        assert a.session.ovsdb.health([four])[four].ofport not in (freed, None, -1)
        apply_source(a, [("join", 5)])
        assert a.session.ovsdb.health([five])[five].ofport == freed
        assert a.passes == {"full": 1, "incremental": 2} and plan_changes(a) == []
    finally:
        a.session.close()
