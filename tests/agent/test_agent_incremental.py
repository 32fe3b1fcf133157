"""The agent process: a file edit that only adds a peer is an incremental pass; drift behind
its back (a flow deleted by hand, a port removed) is still noticed by the watcher and
repaired by a full pass."""
import copy

from ovs_mesh.ovs.desired import peer_port_name
from tests.agent.conftest import our_flows
from tests.helpers import sandbox_config, wait_for

NODE4 = {"name": "node-4", "ip": "192.168.56.14", "subnet": "10.244.4.0/24"}
FULL = 'ovs_mesh_reconcile_passes_total{kind="full"}'
INCREMENTAL = 'ovs_mesh_reconcile_passes_total{kind="incremental"}'


def test_peer_edit_is_incremental_and_drift_gets_a_full_pass(ovs, agent_factory):
    data = sandbox_config(ovs, 3, mode="port")
    a = agent_factory(data).start()
    a.wait_ready()
    wait_for(lambda: (a.metric(FULL) or 0) >= 1, 5, "the first full pass counted")

    # A join: node-4's port and flows, through an incremental pass.
    grown = copy.deepcopy(data)
    grown["nodes"].append(NODE4)
    incremental = a.metric(INCREMENTAL) or 0
    a.write(grown, atomic=True)
    port = peer_port_name("vxlan", "node-4")
    wait_for(lambda: "nw_dst=10.244.4.0/24" in our_flows(ovs) and port in ovs.vsctl("list-ports", "obr0"),
             5, "node-4's port and flows")
    wait_for(lambda: a.metric(INCREMENTAL) == incremental + 1, 5, "one incremental pass")
    full = a.metric(FULL)

    # A flow of node-4 deleted by hand: the watcher's flow count notices, a full pass replays it.
    ovs.ofctl("--strict", "del-flows", ovs.mgmt("obr0"), "cookie=0x6f76736d00000001/-1,table=10,priority=100,"
              "ip,nw_dst=10.244.4.0/24")
    wait_for(lambda: "ip,nw_dst=10.244.4.0/24" in our_flows(ovs), 5, "the deleted flow back")
    wait_for(lambda: a.metric(FULL) > full, 5, "a full pass for the lost flow")
    full = a.metric(FULL)

    # node-4's port removed by hand: the OVSDB watcher notices, a full pass puts it back.
    ovs.vsctl("del-port", "obr0", port)
    wait_for(lambda: port in ovs.vsctl("list-ports", "obr0"), 5, "the port back")
    wait_for(lambda: a.metric(FULL) > full, 5, "a full pass for the lost port")

    # And a leave is incremental again, not disturbed by what happened.
    incremental = a.metric(INCREMENTAL)
    a.write(data, atomic=True)
    wait_for(lambda: "10.244.4.0/24" not in our_flows(ovs) and port not in ovs.vsctl("list-ports", "obr0"),
             5, "node-4 gone")
    wait_for(lambda: a.metric(INCREMENTAL) == incremental + 1, 5, "one more incremental pass")
    assert a.proc.poll() is None
