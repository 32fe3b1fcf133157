"""Running agents with `source: kubernetes` against Nodes that claim what other Nodes hold.

Nodes node-1..node-5 have been in the cluster for a day; then Nodes appear that claim
node-3's pod subnet, node-4's InternalIP, the local node's subnet, the whole cluster range,
that carry garbage-typed fields, or 5000 addresses.  Two agents (node-1 and node-2, each
on its own OVS) must keep every incumbent's flows exactly as they were, keep the
claimants out (and agree on who and why), say so once per Node and reason in their logs
(also across heartbeats and relists), in the metrics and in `status`, and go on
applying every later change: a Node joining, a Node leaving, a claimant taking over
once its holder left.
"""
from __future__ import annotations

import os
import re
import tempfile
import time

import pytest

from tests.agent.conftest import flow_lines, our_flows
from tests.agent_process import AgentProc
from tests.helpers import base_config, run_cli, sandbox_ovs, wait_for
from tests.kube.fake_apiserver import make_node, timestamp

DAY = timestamp(86400)


def good(i: int) -> dict:
    return make_node(f"node-{i}", f"192.168.56.{10 + i}", f"10.244.{i}.0/24", created=DAY)


def garbage() -> dict:
    n = make_node("evil-5", "192.168.56.35", "10.244.35.0/24")
    n["spec"]["podCIDRs"] = [{"cidr": "10.244.35.0/24"}]
    n["status"]["addresses"] = [{"type": "InternalIP", "address": 42}]
    return n


def typeless() -> dict:
    n = make_node("evil-6", "192.168.56.36", "10.244.36.0/24")
    n["spec"], n["status"] = "garbage", 7
    return n


def many_addresses() -> dict:
    ips = ["192.168.56.15"] + [f"10.99.{i // 250}.{i % 250 + 1}" for i in range(4999)]
    return make_node("evil-7", None, "10.244.37.0/24",
                     addresses=[{"type": "InternalIP", "address": a} for a in ips])


# (Node, reason, the one log line it gets: on node-1's agent)
CLAIMS = [
    (make_node("evil-1", "192.168.56.31", "10.244.3.0/24"), "subnet-taken",
     "node evil-1: spec.podCIDR: 10.244.3.0/24: overlaps node node-3's spec.podCIDR 10.244.3.0/24: "
     "kept out: node node-3 holds it (created earlier)"),
    (make_node("evil-2", "192.168.56.14", "10.244.32.0/24"), "address-taken",
     "node evil-2: status.addresses[InternalIP]: 192.168.56.14: duplicate of node node-4's "
     "status.addresses[InternalIP]: kept out: node node-4 holds it (created earlier)"),
    (make_node("evil-3", "192.168.56.33", "10.244.1.0/24"), "subnet-taken",
     "node evil-3: spec.podCIDR: 10.244.1.0/24: overlaps node node-1's spec.podCIDR 10.244.1.0/24: "
     "kept out: node node-1 holds it (the local node)"),
    (make_node("evil-4", "192.168.56.34", "10.244.0.0/16"), "invalid",
     "node evil-4: spec.podCIDR: 10.244.0.0/16: wrong size: cluster.node_prefix is /24: skipped"),
    (garbage(), "invalid", "node evil-5: status.addresses[InternalIP]: 42: "),
    (typeless(), "incomplete", "node evil-6: spec.podCIDR: not set yet: waiting for it"),
    (many_addresses(), "address-taken",
     "node evil-7: status.addresses[InternalIP]: 192.168.56.15: duplicate of node node-5's "
     "status.addresses[InternalIP]: kept out: node node-5 holds it (created earlier)"),
]


def kept_series(agent: AgentProc) -> set[tuple[str, str]]:
    _, text = agent.http("/metrics")
    return set(re.findall(r'^ovs_mesh_node_kept_out\{node="([^"]+)",reason="([^"]+)"\} 1\.0$', text, re.M))


def kube_config(apiserver, workdir: str, ovs, node: str) -> dict:
    data = base_config(0)
    del data["nodes"]
    data["source"] = "kubernetes"
    data["kubernetes"] = {"kubeconfig": apiserver.kubeconfig(os.path.join(workdir, "kubeconfig")),
                          "resync_seconds": 1}   # a relist every second: the log must stay short anyway
    data["local"].update(node=node, ovsdb=ovs.remote)
    return data


@pytest.fixture
def second_ovs():
    with sandbox_ovs(prefix="ovsm-tr2-") as daemons:
        yield daemons


def test_claims_never_move_incumbents_nor_freeze_two_agents(ovs, second_ovs, agent_factory, apiserver,
                                                              monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for i in range(1, 6):
        apiserver.add(good(i))
    a = agent_factory(kube_config(apiserver, tempfile.mkdtemp(prefix="tr-", dir=ovs.rundir), ovs, "node-1"))
    workdir2 = tempfile.mkdtemp(prefix="tr-", dir=second_ovs.rundir)
    b = AgentProc(second_ovs, workdir2, kube_config(apiserver, workdir2, second_ovs, "node-2"))
    try:
        a.start()
        b.start()
        # 60 s: the first use of the kubernetes client is slow on a loaded machine
        for agent in (a, b):
            wait_for(lambda: "READY=1" in agent.notify.fields() or (agent.proc.poll() is not None
                                                                    and agent.fail("agent exited")), 60, "READY=1")
        before_a, before_b = flow_lines(ovs), flow_lines(second_ovs)
        assert "192.168.56.13->tun_dst" in our_flows(ovs)

        for obj, _, _ in CLAIMS:
            apiserver.add(obj)
        want = {(obj["metadata"]["name"], reason) for obj, reason, _ in CLAIMS}
        wait_for(lambda: kept_series(a) == want, 10, "node-1's agent keeping the claimants out")
        wait_for(lambda: kept_series(b) == want, 10, "node-2's agent keeping the claimants out")
        assert a.metric('ovs_mesh_nodes_kept_out{reason="subnet-taken"}') == 2
        assert a.metric('ovs_mesh_nodes_kept_out{reason="address-taken"}') == 2
        assert a.metric("ovs_mesh_local_node_waiting") == 0

        # Heartbeats of every claimant and two relists later: nothing moved, nothing said twice.
        lists = apiserver.count(watch=False)
        for obj, _, _ in CLAIMS:
            apiserver.heartbeat(obj["metadata"]["name"])
        wait_for(lambda: apiserver.count(watch=False) >= lists + 4, 10, "two relists by each agent")
        assert flow_lines(ovs) == before_a, "an incumbent's flows changed on node-1"
        assert flow_lines(second_ovs) == before_b, "an incumbent's flows changed on node-2"
        log = a.log()
        for _obj, _, line in CLAIMS:
            assert log.count(line) == 1, (line, log)
        kube_lines = [x for x in log.splitlines() if " kubernetes: " in x]
        assert max(len(x) for x in kube_lines) < 400, "a log line grew with the Node's fields"
        assert "local node node-1 is not in the topology" not in log
        # node-2's agent keeps evil-3 out as well: node-1 is older
        assert ("node evil-3: spec.podCIDR: 10.244.1.0/24: overlaps node node-1's spec.podCIDR 10.244.1.0/24: "
                "kept out: node node-1 holds it (created earlier)") in b.log()

        status = run_cli("--config", a.config, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "kept out: 7 Nodes (address-taken 2, incomplete 1, invalid 2, subnet-taken 2)" in status.stdout
        assert CLAIMS[0][2] in status.stdout

        # Never frozen: a Node joining is installed within a second on both, a Node leaving is removed.
        t0 = time.monotonic()
        apiserver.add(make_node("node-6", "192.168.56.16", "10.244.6.0/24"))
        wait_for(lambda: "192.168.56.16->tun_dst" in our_flows(ovs), 5, "node-6 on node-1")
        joined = time.monotonic() - t0
        wait_for(lambda: "192.168.56.16->tun_dst" in our_flows(second_ovs), 5, "node-6 on node-2")
        assert joined < 1.0, f"node-6 took {joined:.2f} s to be installed"
        apiserver.delete("node-5")   # evil-7 listed node-5's address first: it holds it from now on
        wait_for(lambda: "nw_dst=10.244.5.0/24" not in our_flows(ovs), 5, "node-5 gone on node-1")
        wait_for(lambda: "nw_dst=10.244.37.0/24" in our_flows(ovs), 5, "evil-7 taking node-5's address")

        # The holder leaves: the claimant takes over, on both agents, and it is said.
        apiserver.delete("node-3")
        wait_for(lambda: "192.168.56.31->tun_dst" in our_flows(ovs), 5, "evil-1 holding 10.244.3.0/24 now")
        wait_for(lambda: "192.168.56.31->tun_dst" in our_flows(second_ovs), 5, "the same on node-2")
        assert "192.168.56.13->tun_dst" not in our_flows(ovs)
        wait_for(lambda: "node evil-1 is no longer kept out" in a.log(), 5, "the take-over said")

        # Only the local node's own Node may hold the agent back, and it says so.
        apiserver.delete("node-1")
        wait_for(lambda: a.metric("ovs_mesh_local_node_waiting") == 1, 10, "node-1's agent waiting")
        wait_for(lambda: "local node node-1 is not in the topology" in a.log(), 5, "the waiting line")
        status = run_cli("--config", a.config, "status")
        assert status.returncode == 1 and "waiting: local node node-1 is not in the topology" in status.stdout
        apiserver.add(good(1))
        wait_for(lambda: a.metric("ovs_mesh_local_node_waiting") == 0, 10, "node-1's agent back")
        apiserver.add(make_node("node-7", "192.168.56.17", "10.244.7.0/24"))
        wait_for(lambda: "192.168.56.17->tun_dst" in our_flows(ovs), 5, "node-7 after the wait")
        assert a.proc.poll() is None and b.proc.poll() is None
    finally:
        b.kill()
        b.notify.close()
