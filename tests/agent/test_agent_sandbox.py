"""The agent as a process against a real ovsdb-server + ovs-vswitchd (dummy datapath)."""
import copy
import glob
import os
import signal
import subprocess
import time

from ovs_mesh.reconcile.status_file import read_status
from tests.agent.conftest import flow_lines, our_flows
from tests.helpers import sandbox_config, wait_for

NODE3 = {"name": "node-3", "ip": "192.168.56.13", "subnet": "10.244.3.0/24"}


def has_peer(ovs, subnet: str) -> bool:
    return f"nw_dst={subnet}" in our_flows(ovs)


def test_converges_follows_file_edits_and_keeps_last_good(ovs, agent_factory):
    data = sandbox_config(ovs)
    a = agent_factory(data, extra_env={"WATCHDOG_USEC": "400000"}).start()
    a.wait_ready()
    assert has_peer(ovs, "10.244.2.0/24")
    assert any(f.startswith("STATUS=converged") for f in a.notify.fields())
    wait_for(lambda: "WATCHDOG=1" in a.notify.fields(), 3, "a watchdog ping")

    # Add a node (in-place write): its flows appear within 2 s.
    added = copy.deepcopy(data)
    added["nodes"].append(NODE3)
    t0 = time.monotonic()
    a.write(added)
    wait_for(lambda: has_peer(ovs, "10.244.3.0/24"), 2, "node-3's flows")
    print(f"add node -> flows: {time.monotonic() - t0:.3f}s")

    # Remove it with an atomic rename: gone within 2 s.
    t0 = time.monotonic()
    a.write(data, atomic=True)
    wait_for(lambda: not has_peer(ovs, "10.244.3.0/24"), 2, "node-3's flows gone")
    print(f"remove node (rename) -> flows gone: {time.monotonic() - t0:.3f}s")

    # A bad edit is logged once, with field and value; the old flows stay.
    bad = copy.deepcopy(added)
    bad["nodes"][2]["ip"] = "300.1.2.3"
    a.write(bad)
    wait_for(lambda: "nodes[2].ip: 300.1.2.3: not an IPv4 address" in a.log(), 2, "the error logged")
    os.utime(a.config)         # touch: same bad content again
    a.write(bad, atomic=True)  # and rewritten
    # Another bad edit, logged in turn: the file source reads changes in order, so by
    # the time this one is logged it has seen the touch and the rewrite.
    other = copy.deepcopy(bad)
    other["nodes"][2]["ip"] = "300.9.9.9"
    a.write(other, atomic=True)
    wait_for(lambda: "nodes[2].ip: 300.9.9.9: not an IPv4 address" in a.log(), 2, "the next error logged")
    assert a.log().count("nodes[2].ip: 300.1.2.3") == 1, a.log()
    assert has_peer(ovs, "10.244.2.0/24") and not has_peer(ovs, "10.244.3.0/24")

    # Fixing the file applies it.
    a.write(added, atomic=True)
    wait_for(lambda: has_peer(ovs, "10.244.3.0/24"), 2, "node-3's flows after the fix")

    # Metrics and health.
    wait_for(lambda: a.metric("ovs_mesh_peers") == 2, 2, "2 peers in metrics")
    status, body = a.http("/metrics")
    assert status == 200
    for name in ("ovs_mesh_reconcile_total", "ovs_mesh_reconcile_errors_total", "ovs_mesh_flows",
                 "ovs_mesh_reconcile_duration_seconds_bucket", "ovs_mesh_last_reconcile_timestamp_seconds",
                 'ovs_mesh_tunnel_up{peer="node-3"} 1.0', 'ovs_mesh_tunnels{peer="node-2",state="up"} 1.0'):
        assert name in body, name
    assert a.metric("ovs_mesh_flows") == len(flow_lines(ovs))
    status, body = a.http("/healthz")
    assert status == 200, body


def test_repairs_ovs_behind_its_back(ovs, agent_factory):
    a = agent_factory().start()
    a.wait_ready()
    # Someone deletes our tunnel port: repaired.
    ovs.vsctl("del-port", "obr0", "obr0-vxlan")
    wait_for(lambda: "obr0-vxlan" in ovs.vsctl("list-ports", "obr0"), 2, "the port back")
    # Someone deletes our flows: replayed.
    ovs.ofctl("del-flows", ovs.mgmt("obr0"))
    try:
        wait_for(lambda: has_peer(ovs, "10.244.2.0/24"), 5, "flows back after del-flows")
    except AssertionError:
        raise AssertionError(f"flows not replayed after del-flows; log:\n{a.log()}") from None

    # ovs-vswitchd dies and comes back: flows within 2 s of it being up.
    before = flow_lines(ovs)
    mark = len(a.log())
    ovs.stop_daemon("ovs-vswitchd", signal.SIGKILL)
    wait_for(lambda: "ovs-vswitchd is not running" in a.log()[mark:], 2, "the agent to see ovs-vswitchd gone")
    ovs.start_vswitchd()
    up = time.monotonic()
    try:
        wait_for(lambda: flow_lines(ovs) == before, 2, "the same flows after restart", interval=0.05)
    except AssertionError:
        raise AssertionError(f"flows {flow_lines(ovs)}\nlog:\n{a.log()}") from None
    print(f"vswitchd up -> flows back: {time.monotonic() - up:.3f}s")

    # ovsdb-server restarts: the agent reconnects and resyncs.
    mark = len(a.log())
    ovs.stop_daemon("ovsdb-server")
    # The outage itself: the server stays away for a moment.  Nothing to wait for here: the
    # agent logs nothing while OVSDB is away (python-ovs's reconnect messages are below its
    # log level), and what it does about the outage is what the waits below check.
    time.sleep(0.3)
    ovs.start_ovsdb()
    t0 = time.monotonic()
    # Either the watcher sees the new session first, or a reconcile that failed while the server
    # was away succeeds on retry: both are full reconciles against the new server's contents.
    try:
        wait_for(lambda: any(m in a.log()[mark:] for m in ("reconcile (ovsdb-server reconnected: full resync",
                                                          "reconcile recovered")), 15, "a full resync")
    except AssertionError:
        raise AssertionError(f"no full resync after ovsdb-server restart; log:\n{a.log()}") from None
    print(f"ovsdb-server up -> resync: {time.monotonic() - t0:.3f}s")
    ovs.vsctl("del-port", "obr0", "obr0-vxlan")
    wait_for(lambda: "obr0-vxlan" in ovs.vsctl("list-ports", "obr0"), 5, "the port repaired after reconnect")
    assert a.proc.poll() is None
    wait_for(lambda: a.http("/healthz")[0] == 200, 5, "healthy")


def test_a_rewritten_flow_is_repaired_within_a_second(ovs, agent_factory):
    """`mod-flows ... actions=drop` on one of our flows keeps the flow count: the flow monitor
    sees the change and the agent repairs it at once, not at the next resync (60 s here)."""
    a = agent_factory().start()
    a.wait_ready()

    def following():   # the agent's ovs-ofctl monitor answers on its control socket: it has subscribed
        return any(subprocess.run(["ovs-appctl", "-t", ctl, "version"], capture_output=True).returncode == 0
                   for ctl in glob.glob(os.path.join(ovs.rundir, "ovs-mesh-monitor.*.ctl")))
    wait_for(following, 10, "the agent's flow monitor to follow obr0", interval=0.05)
    before = flow_lines(ovs)
    target = next(line for line in before if "nw_dst=10.244.2.0/24" in line)
    mark = len(a.log())
    ovs.ofctl("mod-flows", ovs.mgmt("obr0"), "table=10,ip,nw_dst=10.244.2.0/24,actions=drop")
    t0 = time.monotonic()
    assert target not in flow_lines(ovs)
    try:
        wait_for(lambda: flow_lines(ovs) == before, 1, "the rewritten flow repaired", interval=0.02)
    except AssertionError:
        raise AssertionError(f"flows {flow_lines(ovs)}\nlog:\n{a.log()[mark:]}") from None
    print(f"mod-flows actions=drop -> repaired: {time.monotonic() - t0:.3f}s")
    wait_for(lambda: "behind our back" in a.log()[mark:], 5, "the agent to log why it repaired")


def test_restart_is_converged_and_sigterm_leaves_the_mesh(ovs, agent_factory):
    a = agent_factory().start()
    a.wait_ready()
    flows = flow_lines(ovs)
    a.kill()  # SIGKILL
    a.start()
    a.wait_ready()
    assert "converged, 0 changes" in a.log(), a.log()
    assert a.metric("ovs_mesh_reconcile_changes_total") == 0
    assert flow_lines(ovs) == flows

    t0 = time.monotonic()
    a.signal(signal.SIGTERM)
    assert a.wait_exit(10) == 0
    print(f"SIGTERM -> exit: {time.monotonic() - t0:.3f}s")
    assert time.monotonic() - t0 < 3
    assert "STOPPING=1" in a.notify.fields()
    assert flow_lines(ovs) == flows
    assert "obr0-vxlan" in ovs.vsctl("list-ports", "obr0")


def test_burst_of_edits_is_coalesced(ovs, agent_factory):
    data = sandbox_config(ovs)
    a = agent_factory(data).start()
    a.wait_ready()
    before = a.metric("ovs_mesh_reconcile_total")
    for i in range(100):
        d = copy.deepcopy(data)
        d["nodes"].append({**NODE3, "ip": f"192.168.57.{i + 1}"})
        a.write(d, atomic=bool(i % 2))
    flows = wait_for(lambda: "192.168.57.100->tun_dst" in (f := our_flows(ovs)) and f, 3,
                     "the last edit applied")
    assert "192.168.57.99->" not in flows      # the last edit wins: no earlier peer address is left

    # One more edit after the burst (node-3 leaves): once the status file, which the agent
    # writes after counting a pass, shows that pass, every pass the burst caused is counted.
    def removed_node3() -> bool:
        changes = (read_status(ovs.rundir) or {}).get("changes", [])
        return any(c["action"] == "delete" and "192.168.57.100" in c["name"] for c in changes)

    a.write(data, atomic=True)
    wait_for(removed_node3, 3, "the pass that removed node-3 after the burst")
    passes = a.metric("ovs_mesh_reconcile_total") - before - 1
    print(f"100 edits -> {passes:.0f} reconciles")
    assert passes <= 20, passes
