"""The lab's per-node `ovs-mesh agent`s, with real packets.

One lab (2 nodes, port mode, VXLAN, one pod each; every node runs an agent on the
shared topology file) serves the three tests; each leaves it as it found it.
Times are printed (pytest -s shows them).
"""
import os
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ovs_mesh.lab import agents, build
from ovs_mesh.lab.daemons import OvsDaemons
from ovs_mesh.lab.pods import add_pod
from ovs_mesh.lab.resources import netns_exists
from ovs_mesh.lab.topology import read_yaml
from tests.helpers import run_cli, wait_for
from tests.lab.conftest import need_lab_tools
from tests.lab.ping import Ping, ns, restart_agents_under_ping, wait_ping

BOUND = 2.0  # seconds: how long traffic may take to come back after a vswitchd restart or a topology edit


@pytest.fixture(scope="module")
def lab():
    need_lab_tools()
    name = "a" + secrets.token_hex(2)
    try:
        st = build.up(name, nodes=2, tunnel="vxlan", mode="port", pods_per_node=1, progress=lambda s: None)
        yield st
    finally:
        build.down(name, progress=lambda s: None)


def pod_of(st, node_name):
    return next(p for p in st.pods if p["node"] == node_name)


def test_agent_restarts_lose_no_packets(lab):
    """SIGKILL both agents and restart them, then SIGTERM and restart: 0 lost."""
    a, b = pod_of(lab, "node-1"), pod_of(lab, "node-2")
    restart_agents_under_ping(lab, a, b["ip"])


def test_vswitchd_restart_traffic_back_within_2s(lab):
    """ovs-vswitchd of node-1 restarted (by pidfile); the agent, untouched, repairs it."""
    st = lab
    node = st.nodes[0]
    src, dst = pod_of(st, "node-2"), pod_of(st, "node-1")   # traffic across node-1
    agent_pid = agents.pid_of(node)
    assert agent_pid
    wait_ping(src["ns"], dst["ip"])
    ovs = OvsDaemons(node.rundir, netns=node.ns)
    old = ovs.pid("ovs-vswitchd")
    ping = Ping(src["ns"], dst["ip"], 0.01)                 # the tight probe: 100 per second
    try:
        ping.wait_for(lambda r: len(r) >= 3, 10, "first replies")
        ovs.stop_daemon("ovs-vswitchd")
        assert ovs.pid("ovs-vswitchd") is None
        ovs.start_vswitchd()                                  # returns once its control socket exists
        t_up = time.time()
        assert ovs.pid("ovs-vswitchd") not in (None, old)
        ping.wait_for(lambda r: r and r[-1] > t_up, 10, "reply after ovs-vswitchd came back")
        first = next(t for t in ping.replies if t > t_up)
    finally:
        ping.kill()
    print(f"ovs-vswitchd of {node.name} restarted: first reply {src['name']} -> {dst['name']} "
          f"{first - t_up:.3f}s after it was up")
    assert first - t_up <= BOUND
    assert agents.pid_of(node) == agent_pid                  # the agent was not restarted
    # It was the agent: its first pass after the restart put flows back (the status file it writes).
    try:
        wait_for(lambda: (s := agents.last_status(node) or {}).get("time", 0) > t_up and s["changes"], 10,
                 "a pass with changes after the restart")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{agents.log_tail(node)}") from None


def _state(node):
    """What OVS on this node holds: the bridge/port/interface view and the flows of obr0."""
    show = ns(node.ns, "ovs-vsctl", f"--db=unix:{node.rundir}/db.sock", "--columns=name,external_ids,options",
              "list", "Interface").stdout
    ports = ns(node.ns, "ovs-vsctl", f"--db=unix:{node.rundir}/db.sock", "--columns=name,external_ids",
               "list", "Port").stdout
    flows = ns(node.ns, "ovs-ofctl", "-O", "OpenFlow13", "dump-flows", f"unix:{node.rundir}/obr0.mgmt").stdout
    return show + ports + flows


def _until(deadline, fn, what):
    """The monotonic time when fn() first held (polled by wait_for), None at the deadline: the
    caller reports every probe's outcome before failing."""
    try:
        return wait_for(lambda: fn() and time.monotonic(), deadline - time.monotonic(), what)
    except AssertionError:
        return None


def test_node_added_and_removed_within_2s(lab):
    """A node added to the topology file is reachable from every other node's pods
    within 2 s of the edit; removed, no state for it is left on any other node within 2 s.

    The probe from each pod is a fresh one every time (the sending node's neighbour entry for the
    new gateway is dropped before each ping): a probe sent before the path exists would otherwise
    wait for the kernel's 1 s ARP retransmit timer, which measures the probe, not the mesh.
    """
    st = lab
    before = [n.name for n in st.nodes]
    others = list(st.nodes)
    new = build.add_node(st, progress=lambda s: None, wait=False)   # returns right after the atomic edit
    t_edit = time.monotonic()
    try:
        entry = next(e for e in read_yaml(st.topology_path)["nodes"] if e["name"] == new.name)
        subnet = entry["subnet"]
        gateway = subnet.rsplit(".", 1)[0] + ".1"
        deadline = t_edit + 15

        def reach(pod):
            node = next(n for n in others if n.name == pod["node"])

            def probe():
                ns(node.ns, "ip", "neigh", "del", gateway, "dev", "kbr0")
                return ns(pod["ns"], "ping", "-c1", "-W0.2", gateway).returncode == 0
            return _until(deadline, probe, f"{gateway} reachable from {pod['name']}")
        with ThreadPoolExecutor(max_workers=len(st.pods)) as ex:
            times = dict(zip([p["name"] for p in st.pods], ex.map(reach, list(st.pods))))
        for pod, t in times.items():
            print(f"{new.name} added: gateway {gateway} reachable from {pod} "
                  + (f"{t - t_edit:.3f}s after the edit" if t else "NEVER"))
        assert all(times.values()), times
        assert max(times.values()) - t_edit <= BOUND, times

        # The new node is a full member: a pod on it reaches every pod and back.
        agents.wait_ready(new, agents.pid_of(new), 0)
        pod = add_pod(st, new, 1)
        st.save()
        for other in [p for p in st.pods if p is not pod]:
            wait_ping(other["ns"], pod["ip"])
            wait_ping(pod["ns"], other["ip"])

        # Removed from the file: nothing about it stays on the other nodes.
        assert new.ip in _state(others[0]) and subnet in _state(others[0])
        build.remove_from_topology(st, new.name)
        t_edit = time.monotonic()
        gone = {}
        for n in others:
            gone[n.name] = _until(t_edit + 15, lambda n=n: not any(
                s in _state(n) for s in (new.ip, subnet, new.name)), f"no state for {new.name} on {n.name}")
        for name, t in gone.items():
            print(f"{new.name} removed: no state for it on {name} "
                  + (f"{t - t_edit:.3f}s after the edit" if t else "EVER"))
        assert all(gone.values()), {n.name: _state(n) for n in others}
        assert max(gone.values()) - t_edit <= BOUND, gone
        for p in [p for p in st.pods if p["node"] != new.name]:    # and the rest still works
            for q in [q for q in st.pods if q["node"] != new.name and q is not p]:
                wait_ping(p["ns"], q["ip"])
    finally:
        if any(n.name == new.name for n in st.nodes):
            build.remove_node(st, new, progress=lambda s: None)
    assert [n.name for n in st.nodes] == before
    assert not os.path.exists(new.dir) and not netns_exists(new.ns)


def test_lab_agent_commands(lab):
    """The same steps from the command line: restart-agent, apply (agents follow), bad input exits 2."""
    out = run_cli("lab", "restart-agent", "--name", lab.name, "--node", "node-2", "--signal", "KILL",
                  check=True, timeout=300).stdout
    assert re.search(r"node-2: agent pid \d+ stopped \(SIGKILL\); pid \d+ converged in [\d.]+s with 0 changes", out)
    out = run_cli("lab", "apply", "--name", lab.name, check=True, timeout=300).stdout
    assert "node-1: agent converged: 1 peers" in out and "node-2: agent converged: 1 peers" in out
    p = run_cli("lab", "restart-agent", "--name", lab.name, "--node", "node-9", timeout=300)
    assert p.returncode == 2 and "--node: node-9: not a node of lab" in p.stderr
    p = run_cli("lab", "remove-node", "--name", "nolab", "--node", "node-1", timeout=300)
    assert p.returncode == 2 and "no such lab" in p.stderr
