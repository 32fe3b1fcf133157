"""The Agent driven through in-memory fakes (source, OVSDB, flows): backoff on transient
failures, keep-last-good on bad input, coalescing of a burst.  No OVS, no subprocess."""
import dataclasses
import logging
import threading

import pytest

from ovs_mesh.agent.loop import Agent
from ovs_mesh.agent.sdnotify import SdNotify
from tests.helpers import wait_for
from tests.unit.fakes import FakeFlows, FakeOvsdb, FakeSource, config, session
from topology.errors import InputError, Problem


@pytest.fixture
def running(tmp_path):
    """start(**agent_kw) -> (agent, source, ovsdb, flows); the agent is stopped afterwards."""
    started = []

    def start(n=3, mode="flow", **kw):
        source, ovsdb, flows = FakeSource(config(tmp_path, n, mode=mode)), FakeOvsdb(), FakeFlows()
        kw.setdefault("backoff", (0.05, 0.2))
        agent = Agent(source, resync=3600, notifier=SdNotify(environ={}), session=session(ovsdb, flows),
                      watch=False, **kw)
        t = threading.Thread(target=agent.run, daemon=True)
        started.append((agent, t))
        return agent, source, ovsdb, flows, t

    yield start
    for agent, t in started:
        agent.stop()
        t.join(10)
        assert not t.is_alive(), "the agent did not stop"


def test_transient_failures_back_off_then_converge(running):
    agent, source, ovsdb, flows, t = running()
    ovsdb.fail = 5
    t.start()
    wait_for(lambda: agent.ready, 10, "convergence after the failures")
    times = [at for _, at in ovsdb.calls]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(times) == 6 and getattr(ovsdb.bridge, "name", None) == "obr0"
    # 0.05, 0.1, 0.2, then capped at 0.2 (lower bounds only: the machine may be slow)
    for gap, least in zip(gaps, (0.05, 0.1, 0.2, 0.2, 0.2)):
        assert gap >= least * 0.9, gaps
    assert agent.metrics.registry.get_sample_value("ovs_mesh_reconcile_errors_total") == 5
    assert ovsdb.closed is False


def test_bad_input_keeps_last_good(running, caplog):
    caplog.set_level(logging.INFO, logger="ovs_mesh.agent")
    agent, source, ovsdb, flows, t = running()
    t.start()
    wait_for(lambda: agent.ready, 10, "first convergence")
    ports, installed = dict(ovsdb.ports), set(flows.flows)
    done = agent.reconciles
    bad = InputError([Problem("nodes[2].ip", "300.1.2.3", "not an IPv4 address")])
    for _ in range(3):
        source.set(error=bad)
        wait_for(lambda: agent.reconciles > done, 5, "a pass with the last good topology")
        done = agent.reconciles
    assert ovsdb.ports == ports and flows.flows == installed
    assert caplog.text.count("nodes[2].ip: 300.1.2.3: not an IPv4 address") == 1, caplog.text
    # The local node vanishing from the topology is bad input too: the mesh stays.
    cfg = source.cfg
    source.set(cfg=dataclasses.replace(cfg, nodes=cfg.nodes[1:]))
    wait_for(lambda: "keeping the last good topology (3 nodes)" in caplog.text, 5, "the warning")
    assert ovsdb.ports == ports and flows.flows == installed


def test_burst_is_coalesced(running, tmp_path):
    """100 edits in a burst cost a few passes, and the last one wins."""
    agent, source, ovsdb, flows, t = running(n=2, settle=0.02)
    t.start()
    wait_for(lambda: agent.ready, 10, "first convergence")
    before = agent.reconciles
    grown = config(tmp_path, 4, mode="port")
    for i in range(100):
        source.set(cfg=grown if i == 99 else dataclasses.replace(source.cfg))
    wait_for(lambda: len(ovsdb.ports) == 3, 5, "the last edit applied")
    agent.stop()                     # the pass under way finishes: every pass the burst caused is counted
    t.join(10)
    assert 1 <= agent.reconciles - before <= 5, agent.reconciles - before
    assert any("10.244.4.0/24" in f.match for f in flows.flows)
