"""The agent's incremental pass (agent/installed.py, Agent._incremental) against in-memory fakes:
only the changed peers are diffed and applied, nothing is observed, a burst is one
transaction and one bundle, the record changes only after success, and everything that is
not per-peer runs a full pass."""
import dataclasses
import random
from ipaddress import IPv4Address, IPv4Network

import pytest

from ovs_mesh.agent.installed import Installed, blocker, changed_names, delta, node_map
from ovs_mesh.agent.loop import Agent
from ovs_mesh.agent.schedule import Kick, Pass, Reason
from ovs_mesh.agent.sdnotify import SdNotify
from ovs_mesh.ovs import desired
from ovs_mesh.ovs.model import FIRST_PEER_OFPORT, OvsState
from tests.helpers import installed_flows, wait_for
from tests.unit.fakes import FakeFlows, FakeOvsdb, FakeSource, config, session
from topology.model import Node

SOURCE = Pass((Kick(Reason.SOURCE),))


def peer(i: int, ip: str | None = None) -> Node:
    return Node(f"node-{i}", IPv4Address(ip or f"192.168.{56 + (10 + i) // 256}.{(10 + i) % 256}"),
                IPv4Network(f"10.244.{i}.0/24"))


def nodes_plus(cfg, *extra, drop=()):
    return dataclasses.replace(cfg, nodes=tuple(sorted([*(n for n in cfg.nodes if n.name not in drop), *extra])))


class Counting:
    """Wraps the fakes to count the reads an incremental pass must not make."""

    def __init__(self, ovsdb: FakeOvsdb, flows: FakeFlows):
        self.reads = self.dumps = 0
        read, dump = ovsdb.read, flows.dump

        def counted_read(bridge):
            self.reads += 1
            return read(bridge)

        def counted_dump():
            self.dumps += 1
            return dump()
        ovsdb.read, flows.dump = counted_read, counted_dump


@pytest.fixture
def agent(tmp_path):
    """make(n, **cluster) -> (agent, source, ovsdb, flows, counts), after a first full pass."""
    def make(n=3, **cluster):
        source, ovsdb, flows = FakeSource(config(tmp_path, n, **cluster)), FakeOvsdb(), FakeFlows()
        source.notify = lambda: None
        a = Agent(source, resync=3600, notifier=SdNotify(environ={}), session=session(ovsdb, flows), watch=False)
        assert a.reconcile_once(Pass((Kick(Reason.START),))) and a.passes == {"full": 1, "incremental": 0}
        return a, source, ovsdb, flows, Counting(ovsdb, flows)
    return make


def installed_equals_full_build(a: Agent, ovsdb: FakeOvsdb, flows: FakeFlows) -> None:
    """The record, the fakes and a full build from the current config all agree."""
    cfg = a.source.config()
    want = desired.build(cfg, cfg.cluster.pod_mtu(1500), ovsdb.ofports)
    assert installed_flows(a.installed) == want.flows == frozenset(flows.flows)
    assert a.installed.rows().ports == want.ports == tuple(ovsdb.ports[k] for k in sorted(ovsdb.ports))
    assert a.installed.flow_count == len(want.flows) == a.expected.now().flows


@pytest.mark.parametrize("mode", ["flow", "port"])
def test_join_leave_ip_change_touch_only_that_peer(agent, mode):
    a, source, ovsdb, flows, counts = agent(3, mode=mode)
    steps = [lambda c: nodes_plus(c, peer(4)), lambda c: nodes_plus(c, drop={"node-2"}),
             lambda c: nodes_plus(c, peer(3, "192.168.56.99"), drop={"node-3"})]
    for step in steps:
        before = len(flows.log)
        source.cfg = step(source.cfg)
        assert a.reconcile_once(SOURCE)
        installed_equals_full_build(a, ovsdb, flows)
        assert len(flows.log) - before <= 1           # at most one bundle
    assert a.passes == {"full": 1, "incremental": 3}
    assert (counts.reads, counts.dumps) == (0, 0)     # no OVSDB read, no flow dump
    sizes = [n for _, n in flows.log[1:]]
    # flow mode: 4 flows in, 4 out; the IP change modifies the 2 out flows (tun_dst) and replaces
    # the 2 in flows (tun_src is in their match).  Port mode: the IP change is one port row, no flow.
    assert sizes == ([4, 4, 6] if mode == "flow" else [4, 4, 0])
    # A full pass afterwards finds nothing to do.
    transactions = ovsdb.transactions
    assert a.reconcile_once(Pass((Kick(Reason.RESYNC),))) and a.passes["full"] == 2
    assert flows.log[-1] == ("flows", 0) and ovsdb.transactions == transactions


def test_a_burst_is_one_transaction_and_one_bundle(agent):
    a, source, ovsdb, flows, counts = agent(3, mode="port")
    applies, bundles = len(ovsdb.calls), len(flows.log)
    source.cfg = nodes_plus(source.cfg, *(peer(i) for i in range(4, 204)), drop={"node-2"})
    assert a.reconcile_once(SOURCE)
    assert len(ovsdb.calls) - applies == 1 and len(flows.log) - bundles == 1
    assert flows.log[-1] == ("flows", 4 * 200 + 4)
    installed_equals_full_build(a, ovsdb, flows)
    # node-2's number (100) was freed in that transaction, so nobody got it there ...
    assert FIRST_PEER_OFPORT not in {p.ofport_request for p in ovsdb.ports.values()}
    # ... and the next join takes it.
    source.cfg = nodes_plus(source.cfg, peer(250))
    assert a.reconcile_once(SOURCE)
    assert ovsdb.ports[desired.peer_port_name("vxlan", "node-250")].ofport_request == FIRST_PEER_OFPORT
    assert a.passes == {"full": 1, "incremental": 2} and counts.reads == 0


def test_failed_apply_keeps_the_record_and_the_next_pass_is_full(agent):
    a, source, ovsdb, flows, counts = agent(3, mode="port")
    recorded = dict(a.installed.peers)
    source.cfg = nodes_plus(source.cfg, peer(4))
    ovsdb.fail = 1
    assert not a.reconcile_once(SOURCE)
    assert a.installed.peers == recorded and a.full_due
    assert a.passes == {"full": 1, "incremental": 0}
    # Even a source event now gets a full pass, which installs node-4 and rebuilds the record.
    assert a.reconcile_once(SOURCE)
    assert a.passes == {"full": 2, "incremental": 0} and counts.reads >= 1
    assert "node-4" in a.installed.peers
    installed_equals_full_build(a, ovsdb, flows)


def test_a_port_not_at_its_number_gets_a_full_pass(agent):
    a, source, ovsdb, flows, _ = agent(3, mode="port")
    recorded = dict(a.installed.peers)
    ovsdb.ofports[desired.peer_port_name("vxlan", "node-4")] = 7   # OVS will give the new port 7
    source.cfg = nodes_plus(source.cfg, peer(4))
    assert not a.reconcile_once(SOURCE)
    assert a.full_due and a.installed.peers == recorded


@pytest.mark.parametrize("change, why", [
    (lambda c: dataclasses.replace(c, cluster=dataclasses.replace(c.cluster, vni=7)), "cluster"),
    (lambda c: nodes_plus(c, peer(1, "192.168.56.77"), drop={"node-1"}), "local node"),
])
def test_not_per_peer_changes_run_a_full_pass(agent, change, why):
    a, source, ovsdb, flows, counts = agent(3)
    source.cfg = change(source.cfg)
    assert why in blocker(a.installed, source.cfg)
    assert a.reconcile_once(SOURCE)
    assert a.passes == {"full": 2, "incremental": 0} and counts.dumps == 1
    installed_equals_full_build(a, ovsdb, flows)


def test_peer_changes_under_wireguard_run_a_full_pass(tmp_path):
    """A peer's WireGuard key (a rotation) or endpoint lives in the device, on the host: only a full
    pass sets it, so no peer change is incremental then."""
    cfg = config(tmp_path, 3)
    cfg = dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, encryption="wireguard"))
    rec = Installed.after_full_pass(cfg, desired.build_parts(cfg, 1450), {}, ())
    assert "WireGuard device" in blocker(rec, cfg)


def test_stp_partial_mesh_is_never_incremental(tmp_path):
    cfg = config(tmp_path, 6, mode="stp", mesh_degree=2)
    rec = Installed.after_full_pass(cfg, desired.build_parts(cfg, 1450), {}, ())
    assert "mesh_degree" in blocker(rec, cfg)
    full = config(tmp_path, 6, mode="stp")
    assert blocker(Installed.after_full_pass(full, desired.build_parts(full, 1450), {}, ()), full) is None


@pytest.mark.parametrize("mode", ["flow", "port", "stp"])
def test_random_deltas_match_a_full_build(tmp_path, mode):
    """Pure: any sequence of joins, leaves and IP changes, applied as deltas to the record,
    gives what `desired.build` gives for the final inventory (with the record's ofports)."""
    rnd = random.Random(11)
    cfg = config(tmp_path, 5, mode=mode)
    rec = Installed.after_full_pass(cfg, desired.build_parts(cfg, 1450), {"foreign": 101}, ())
    present = {n.name: n for n in cfg.nodes}
    for _ in range(40):
        for _ in range(rnd.randint(1, 4)):
            i = rnd.randint(2, 30)
            name = f"node-{i}"
            if name in present and rnd.random() < 0.5:
                del present[name]
            else:
                present[name] = peer(i, f"192.168.57.{rnd.randint(1, 250)}" if rnd.random() < 0.5 else None)
        ips = {}
        for n in sorted(present.values()):
            if ips.setdefault(n.ip, n.name) != n.name:
                present[n.name] = peer(int(n.name[5:]))   # no two nodes share an IP
        new = dataclasses.replace(cfg, nodes=tuple(sorted(present.values())))
        nodes = node_map(new)
        d = delta(rec, new, changed_names(rec, nodes), nodes)
        freed = {c.old.ofport_request for c in d.plan.ovsdb if c.action == "delete"}
        assert not freed & {c.new.ofport_request for c in d.plan.ovsdb if c.action == "add"}
        rec.commit(d)
        want = desired.build(new, 1450, rec.ofports)
        assert rec.rows() == OvsState(want.bridge, want.ports) and installed_flows(rec) == want.flows
        assert rec.flow_count == len(want.flows) and rec.ofports["foreign"] == 101


@pytest.mark.parametrize("mode", ["flow", "port"])
def test_full_pass_reuses_the_recorded_part_of_an_unchanged_peer(tmp_path, mode):
    """parts_reusing == build_parts; a peer whose Node object and ofport are the recorded
    ones keeps its recorded part (no rebuild), any other is rebuilt."""
    from ovs_mesh.agent.installed import parts_reusing

    cfg = config(tmp_path, 4, mode=mode)
    rec = Installed.after_full_pass(cfg, desired.build_parts(cfg, 1450), {}, ())
    moved = nodes_plus(cfg, peer(3, "192.168.56.99"), drop={"node-3"})
    parts = parts_reusing(rec, moved, 1450, rec.ofports)
    assert parts == desired.build_parts(moved, 1450, rec.ofports)
    assert parts.peers["node-2"] is rec.peers["node-2"] and parts.peers["node-4"] is rec.peers["node-4"]
    assert parts.peers["node-3"] != rec.peers["node-3"]
    # Not reusable at all when the basis changed.
    other = dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, vni=9))
    assert parts_reusing(rec, other, 1450, rec.ofports).peers["node-2"] is not rec.peers["node-2"]


def test_dump_parse_reuses_the_previous_dump_and_forgets_gone_lines():
    from ovs_mesh.ovs.openflow import parse_dump

    a = " cookie=0x6f76736d00000001, table=10, priority=100,ip,nw_dst=10.244.2.0/24 actions=output:10"
    b = " cookie=0x6f76736d00000001, table=30, priority=0 actions=drop"
    known: dict = {}
    first = parse_dump(f"{a}\n{b}\n", known)
    again = parse_dump(f"{a}\n", known)
    assert again == parse_dump(f"{a}\n") and again[0] is first[0] and len(known) == 1
    # The same flow dumped with counters (a later dump: other duration and counters) is a hit.
    counted = a.replace("table=10, ", "duration=12.5s, table=10, n_packets=3, n_bytes=180, ")
    assert parse_dump([counted + "\n"], known)[0] is first[0]
    changed = parse_dump(a.replace("output:10", "output:11") + "\n", known)
    assert changed[0][1].actions == "output:11" and len(known) == 1


def test_the_watcher_does_not_judge_what_it_read_while_a_pass_changed_ovs(tmp_path):
    """Rows read while a pass is changing OVS (epoch odd, or moved meanwhile) are read again
    on the next turn instead of kicking a full pass; drift read while idle kicks one."""
    from types import SimpleNamespace

    from ovs_mesh.agent.watch import Expectations, OvsWatcher

    ovsdb = FakeOvsdb()
    kicks, turns = [], []            # the watcher reports the connection state at the end of each OVSDB check
    expected = Expectations()
    expected.update(rows=OvsState())
    session = SimpleNamespace(ovsdb=ovsdb, note_connected=turns.append)
    ovsdb.bridge = desired.build(config(tmp_path, 2), 1450).bridge      # differs from the expected rows

    def two_more_turns():            # so that one whole turn began after what the test just did
        n = len(turns)
        wait_for(lambda: len(turns) >= n + 2, 5, "two turns of the watcher")

    w = OvsWatcher(expected, session, lambda reason, *a, **k: kicks.append(reason), interval=0.005)
    try:
        with expected.changing():        # a pass is changing OVS (the epoch is odd) from the first turn on:
            w.start()                    # a turn before it would see the difference while idle
            two_more_turns()             # a new client: the watcher remembers its session
            ovsdb.transactions += 1      # the cache changed ...
            two_more_turns()             # ... while a pass runs: not judged
            assert kicks == []
        wait_for(lambda: kicks, 5, "a kick")   # idle now: the same difference is drift
        assert kicks == [Reason.OVSDB_ROWS]
    finally:
        w.stop()
