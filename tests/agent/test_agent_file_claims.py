"""The file source and a node entry that claims another's subnet or IP: unlike the Kubernetes source
(one Node judged at a time), the whole edit is refused, said once, and the last good topology stays
installed; the same edit without the claimant is applied at once."""
from __future__ import annotations

import copy

from tests.agent.conftest import flow_lines, our_flows
from tests.helpers import sandbox_config, wait_for

NODE3 = {"name": "node-3", "ip": "192.168.56.13", "subnet": "10.244.3.0/24"}


def test_a_colliding_entry_refuses_the_whole_edit(ovs, agent_factory):
    good = sandbox_config(ovs, 2)
    a = agent_factory(good).start()
    a.wait_ready()
    before = flow_lines(ovs)
    for claim, text in (({"name": "evil", "ip": "192.168.56.99", "subnet": "10.244.2.0/24"},
                         "nodes[3].subnet: 10.244.2.0/24: overlaps nodes[1].subnet 10.244.2.0/24"),
                        ({"name": "evil", "ip": "192.168.56.12", "subnet": "10.244.9.0/24"},
                         "nodes[3].ip: 192.168.56.12: duplicate of nodes[1].ip")):
        bad = copy.deepcopy(good)
        bad["nodes"] += [NODE3, claim]   # a legitimate node and a claimant in one edit
        a.write(bad, atomic=True)
        wait_for(lambda: text in a.log(), 5, f"the refusal: {text}")
        assert "keeping the last good config" in a.log()
        assert flow_lines(ovs) == before, "a refused edit changed the flows"
        assert a.log().count(text) == 1
    grown = copy.deepcopy(good)
    grown["nodes"].append(NODE3)
    a.write(grown, atomic=True)
    wait_for(lambda: "nw_dst=10.244.3.0/24" in our_flows(ovs), 2, "the edit without the claimant")
