"""flow-restore-wait with fakes: the agent clears the flag only once the whole pipeline is in,
never leaves it set past the bound, retries a restore that failed, and leaves a flag that is
not its own alone.  Also the pieces: the flow monitor's lines and index, the saved inventory."""
import dataclasses
import json
import threading
import time

import pytest

from ovs_mesh.agent import restore as restore_mod
from ovs_mesh.agent.last_good import LastGood
from ovs_mesh.agent.loop import Agent
from ovs_mesh.agent.restore import FlowRestore, RestoreIncomplete
from ovs_mesh.agent.schedule import Reason, Scheduler
from ovs_mesh.agent.sdnotify import SdNotify
from ovs_mesh.agent.session import Inventory, NotReady, SayOnce
from ovs_mesh.agent.watch import Expectations, OvsWatcher
from ovs_mesh.ovs.model import Flow
from ovs_mesh.ovs.monitor import FlowEvent, FlowIndex, parse_update
from ovsdb_client.rows import RestoreWait
from tests.helpers import wait_for
from tests.unit.fakes import FakeFlows, FakeOvsdb, FakeSource, config, session


def ours_set(seconds_ago: float = 0.0) -> RestoreWait:
    return RestoreWait(True, str(int(time.time() - seconds_ago)))


@pytest.fixture
def agent_run(tmp_path):
    """start(ovsdb, flows, **agent_kw) -> the running agent; stopped afterwards."""
    started = []

    def start(ovsdb, flows, n=4, **kw):
        kw.setdefault("backoff", (0.05, 0.2))
        agent = Agent(FakeSource(config(tmp_path, n)), resync=3600, notifier=SdNotify(environ={}),
                      session=session(ovsdb, flows), watch=False, **kw)
        t = threading.Thread(target=agent.run, daemon=True)
        t.start()
        started.append((agent, t))
        return agent

    yield start
    for agent, t in started:
        agent.stop()
        t.join(10)
        assert not t.is_alive(), "the agent did not stop"


def converged(tmp_path, n=4):
    """The flows and ports a converged node holds (an agent run without any flag)."""
    ovsdb, flows = FakeOvsdb(), FakeFlows()
    agent = Agent(FakeSource(config(tmp_path, n)), resync=3600, notifier=SdNotify(environ={}),
                  session=session(ovsdb, flows), watch=False)
    assert agent.reconcile_once("test")
    return set(flows.flows), dict(ovsdb.ports)


def watching(at_clear: list, ovsdb: FakeOvsdb, flows: FakeFlows) -> None:
    """Record what OVS holds at the moment the flag is cleared."""
    ovsdb.on_clear = lambda: at_clear.append((set(flows.flows), dict(ovsdb.ports)))


def test_flag_cleared_only_once_the_whole_pipeline_is_in(agent_run, tmp_path):
    want_flows, want_ports = converged(tmp_path)
    ovsdb, flows, at_clear = FakeOvsdb(), FakeFlows(), []
    ovsdb.flag = ours_set()
    watching(at_clear, ovsdb, flows)
    agent = agent_run(ovsdb, flows)
    wait_for(lambda: not ovsdb.flag.set, 10, "the agent to clear flow-restore-wait")
    assert at_clear == [(want_flows, want_ports)]
    assert agent.metrics.registry.get_sample_value("ovs_mesh_flow_restores_total", {"result": "restored"}) == 1


def test_a_failing_restore_is_retried_and_the_flag_kept_until_it_succeeds(agent_run, tmp_path):
    want_flows, _ = converged(tmp_path)
    ovsdb, flows, at_clear = FakeOvsdb(), FakeFlows(), []
    ovsdb.flag = ours_set()
    flows.fail = 4      # ovs-vswitchd's management socket not answering yet
    watching(at_clear, ovsdb, flows)
    agent = agent_run(ovsdb, flows)
    wait_for(lambda: not ovsdb.flag.set, 10, "the agent to clear flow-restore-wait after the retries")
    assert flows.fail == 0 and agent.metrics.registry.get_sample_value("ovs_mesh_reconcile_errors_total") == 4
    assert [f for f, _ in at_clear] == [want_flows]


def test_a_failing_clear_is_retried(agent_run):
    ovsdb, flows = FakeOvsdb(), FakeFlows()
    ovsdb.flag = ours_set()
    ovsdb.clear_fail = 2
    agent_run(ovsdb, flows)
    wait_for(lambda: not ovsdb.flag.set, 10, "the clear to succeed on a retry")
    assert ovsdb.clear_fail == 0


def test_not_cleared_while_a_flow_is_missing_or_a_port_elsewhere(tmp_path):
    ovsdb, flows = FakeOvsdb(), FakeFlows()
    ovsdb.flag = ours_set()
    r = FlowRestore()
    flows.flows = {Flow(0, 1, "", "drop")}
    with pytest.raises(RestoreIncomplete, match="1 of our 2 flows"):
        r.complete(ovsdb, flows, 2, {})
    ovsdb.ports, ovsdb.ofports = {"obr0-vxlan": None}, {"obr0-vxlan": 1001}
    with pytest.raises(RestoreIncomplete, match="obr0-vxlan"):
        r.complete(ovsdb, flows, 1, {"obr0-vxlan": 10})
    assert ovsdb.flag.set
    ovsdb.ofports["obr0-vxlan"] = 10
    assert r.complete(ovsdb, flows, 1, {"obr0-vxlan": 10}) and not ovsdb.flag.set


def test_a_flag_someone_else_set_is_left_to_them(agent_run, tmp_path):
    want_flows, _ = converged(tmp_path)
    ovsdb, flows = FakeOvsdb(), FakeFlows()
    ovsdb.flag = RestoreWait(True, None)     # ovs-ctl restart restoring its saved flows
    agent = agent_run(ovsdb, flows)
    wait_for(lambda: agent.ready, 10, "convergence")
    assert flows.flows == want_flows and ovsdb.flag == RestoreWait(True, None)


def test_a_newer_mark_is_not_cleared_by_an_older_restore():
    ovsdb = FakeOvsdb()
    ovsdb.flag = RestoreWait(True, "200")
    assert ovsdb.clear_restore_wait("100") is False and ovsdb.flag.set


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_never_left_set_past_the_bound():
    """The bound counts from the mark (when the start hook set it), or from when the agent first
    saw it if that is later news: an agent that starts late clears an old flag at once."""
    wall, mono = Clock(1000.0), Clock(50.0)
    done = []
    r = FlowRestore(bound=30, clock=wall, monotonic=mono, on_done=lambda s, how: done.append((round(s), how)))
    ovsdb = FakeOvsdb()
    ovsdb.flag = RestoreWait(True, "990")    # set 10 s ago
    assert r.observe(ovsdb.flag) is True and r.observe(ovsdb.flag) is False   # due once
    wall.t, mono.t = 1019.0, 69.0            # 29 s after the mark
    assert r.expire(ovsdb) is False and ovsdb.flag.set
    wall.t, mono.t = 1020.0, 70.0            # 30 s
    assert r.expire(ovsdb) is True and not ovsdb.flag.set
    assert done == [(30, "bound")]
    ovsdb.flag = RestoreWait(True, "900")    # an agent that sees a flag set 100 s ago
    r.observe(ovsdb.flag)
    assert r.expire(ovsdb) is True and not ovsdb.flag.set


def test_the_watcher_enforces_the_bound_while_the_worker_cannot_restore():
    """No config, a hung pass, flows never accepted: the watcher thread clears it at the bound."""
    class Session:
        ovsdb = FakeOvsdb()

        def note_connected(self, connected):
            pass
    kicks = []
    mono = Clock(0.0)
    r = FlowRestore(bound=30, clock=Clock(0.0), monotonic=mono)
    s = Session()
    s.ovsdb.flag = RestoreWait(True, "not-a-time")   # a mark without a time: counted from first sight
    w = OvsWatcher(Expectations(), s, lambda reason, *a, **kw: kicks.append(reason), restore=r, monitor=False)
    w._check_restore()
    assert kicks == [Reason.RESTORE_WAIT] and s.ovsdb.flag.set
    mono.t = 29.9
    w._check_restore()
    assert s.ovsdb.flag.set and kicks == [Reason.RESTORE_WAIT]
    mono.t = 30.0
    w._check_restore()
    assert not s.ovsdb.flag.set


def test_the_read_back_catches_a_flag_that_stays(monkeypatch):
    monkeypatch.setattr(restore_mod, "READ_BACK", 0.2)
    ovsdb, flows = FakeOvsdb(), FakeFlows()
    ovsdb.flag = ours_set()
    ovsdb.clear_restore_wait = lambda mark: True      # says it cleared, but OVSDB still holds it
    with pytest.raises(RestoreIncomplete, match="still set"):
        FlowRestore().complete(ovsdb, flows, 0, {})


def test_pending_restore_makes_the_pass_full_and_retries_quick():
    s = Scheduler(60, backoff=(0.1, 10.0), clock=Clock(0.0))
    for _ in range(8):
        s.done(False)
    assert s.backoff == 10.0
    s.done(False, max_backoff=0.5)
    assert s.retry_at == 0.5


# -- the flow monitor ---------------------------------------------------------
LINES = """ONFST_FLOW_MONITOR reply (OF1.3) (xid=0x0):
 event=MODIFIED table=10 cookie=0x6f76736d00000001 ip,nw_dst=10.244.2.0/24
 event=ADDED table=0 cookie=0x6f76736d00000001 arp actions=NORMAL
 event=DELETED reason=delete table=0 cookie=0x6f76736d00000001 arp actions=NORMAL
 event=ADDED table=10 cookie=0 ip,nw_dst=10.244.2.0/24 actions=set_field:192.168.56.12->tun_dst,output:10
 event=ADDED table=30 idle_timeout=5 cookie=0x6f76736d00000001 actions=drop
 event=PAUSED
"""


def test_monitor_lines_parse():
    events = [e for e in map(parse_update, LINES.splitlines()) if e is not None]
    assert events == [
        FlowEvent("MODIFIED", 10, "0x6f76736d00000001", "ip,nw_dst=10.244.2.0/24", "drop"),
        FlowEvent("ADDED", 0, "0x6f76736d00000001", "arp", "NORMAL"),
        FlowEvent("DELETED", 0, "0x6f76736d00000001", "arp", "NORMAL"),
        FlowEvent("ADDED", 10, "0", "ip,nw_dst=10.244.2.0/24", "set_field:192.168.56.12->tun_dst,output:10"),
        FlowEvent("ADDED", 30, "0x6f76736d00000001", "", "drop"),
        FlowEvent("PAUSED")]


def test_monitor_drift_rules():
    out = Flow(10, 100, "ip,nw_dst=10.244.2.0/24", "set_field:192.168.56.12->tun_dst,output:10")
    arp = Flow(0, 5, "arp", "NORMAL")
    index = FlowIndex([out, arp])
    c = "0x6f76736d00000001"
    assert not index.drift(FlowEvent("ADDED", 10, c, out.match, out.actions))        # ours, as installed
    assert index.drift(FlowEvent("MODIFIED", 10, c, out.match, "drop"))              # mod-flows actions=drop
    assert index.drift(FlowEvent("DELETED", 0, c, "arp", "NORMAL"))                  # an installed flow deleted
    assert index.drift(FlowEvent("ADDED", 20, c, "ip", "drop"))                      # an unknown flow of ours
    assert not index.drift(FlowEvent("MODIFIED", 10, "0x0", out.match, "drop"))      # someone else's flow
    assert index.drift(FlowEvent("PAUSED"))                                          # changes were lost
    index.change([arp], [])                                                          # an incremental pass
    assert not index.drift(FlowEvent("DELETED", 0, c, "arp", "NORMAL")) and len(index) == 1


def test_monitor_events_during_a_pass_are_judged_after_it():
    expected = Expectations()
    flow = Flow(0, 5, "arp", "NORMAL")
    kicks = []
    w = OvsWatcher(expected, None, lambda reason, detail="", **kw: kicks.append(detail), monitor=False)
    expected.update(index=FlowIndex())
    with expected.changing():     # a pass adds the flow: its own event arrives meanwhile
        w._judge([FlowEvent("ADDED", 0, "0x6f76736d00000001", "arp", "NORMAL")])
        assert kicks == []
        expected.update(index=FlowIndex([flow]))
    w._judge([])
    assert kicks == []
    w._judge([FlowEvent("MODIFIED", 0, "0x6f76736d00000001", "arp", "drop")])
    assert kicks and "modified behind our back" in kicks[0]


# -- the saved inventory ------------------------------------------------------
def test_saved_inventory_round_trip_and_its_key(tmp_path):
    cfg = config(tmp_path, 3)
    lg = LastGood(str(tmp_path / "state"))
    assert lg.save(cfg, force=True)
    assert not lg.save(cfg, force=True)    # unchanged: not written again
    assert LastGood(str(tmp_path / "state")).load(cfg.with_nodes(())).nodes == cfg.nodes
    other = dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, node_prefix=25))
    assert LastGood(str(tmp_path / "state")).load(other) is None
    (tmp_path / "state" / "inventory.json").write_text("{broken")
    assert LastGood(str(tmp_path / "state")).load(cfg) is None


def test_saved_inventory_stands_in_until_the_source_answers(tmp_path):
    cfg = config(tmp_path, 3)
    lg = LastGood(str(tmp_path / "state"))
    lg.save(cfg, force=True)

    source = FakeSource(cfg.with_nodes(()))
    inv = Inventory(source, lambda *a: None, SayOnce(), last_good=LastGood(str(tmp_path / "state")))
    inv._current = lambda: (_ for _ in ()).throw(NotReady("waiting for the first list of Nodes"))
    got = inv.config()
    assert got.nodes == cfg.nodes and inv.stale
    grown = config(tmp_path, 4)
    inv._current = lambda: grown
    assert inv.config() is grown and not inv.stale
    inv._current = lambda: (_ for _ in ()).throw(NotReady("relisting"))
    with pytest.raises(NotReady):   # once the source answered, the saved copy is never used again
        inv.config()


def test_the_agent_saves_what_it_installed(agent_run, tmp_path):
    ovsdb, flows = FakeOvsdb(), FakeFlows()
    agent = agent_run(ovsdb, flows, state_dir=str(tmp_path / "state"))
    wait_for(lambda: agent.ready, 10, "convergence")
    data = json.loads((tmp_path / "state" / "inventory.json").read_text())
    assert [n["name"] for n in data["nodes"]] == ["node-1", "node-2", "node-3", "node-4"]


def test_status_says_when_the_node_waits_for_a_restore():
    from ovs_mesh.cli.status import render, restore_wait

    assert restore_wait(RestoreWait(), 100.0) is None
    assert restore_wait(RestoreWait(True, "90"), 100.0) == {"by": "ovs-mesh", "seconds": 10.0}
    assert restore_wait(RestoreWait(True, None), 100.0) == {"by": "other", "seconds": None}
    d = {"node": "node-1", "tunnel": "vxlan", "mode": "flow", "peers": [], "flows": 0, "converged": False,
         "pending_changes": 12, "families": ["ipv4"], "subnets": [], "underlay_family": "ipv4", "ip": "192.168.56.11",
         "last_reconcile": None, "health": {"probing": False, "summary": ""}, "problems": [],
         "flow_restore_wait": {"by": "ovs-mesh", "seconds": 3.0}}
    assert "waiting for a restore: flow-restore-wait is set (by ovs-mesh's start hook 3.0s ago" in render(d)


def test_flows_that_differ_are_replaced_in_one_bundle(tmp_path):
    """What an agent upgrade whose flows differ does: one apply (ovs-ofctl --bundle, atomic and
    ordered) holds every delete, add and modify, so no moment has neither the old nor the new flows."""
    ovsdb, flows = FakeOvsdb(), FakeFlows()
    source = FakeSource(config(tmp_path, 3))
    agent = Agent(source, resync=3600, notifier=SdNotify(environ={}), session=session(ovsdb, flows), watch=False)
    assert agent.reconcile_once("first version")
    before = set(flows.flows)
    calls = []
    real = flows.apply
    flows.apply = lambda changes: (calls.append([c.action for c in changes]), real(changes))[1]
    source.cfg = config(tmp_path, 3, vni=7)   # the tunnel key changes matches and actions
    assert agent.reconcile_once("another version")
    assert len(calls) == 1 and {"add", "delete"} <= set(calls[0]), calls
    assert flows.flows != before and len(flows.flows) == len(before)
