"""The agent's per-family metrics, scraped from a running agent of a dual-stack
node against a real sandbox OVS."""
import copy

from tests.agent.conftest import flow_lines
from tests.helpers import base_config_v6, wait_for


def family(name: str, fam: str) -> str:
    return f'{name}{{family="{fam}"}}'


def ipv6_flows(ovs) -> int:
    return sum(1 for line in flow_lines(ovs) if "ipv6" in line.split(" actions=")[0].replace("tun_ipv6", "")
               or "icmp6" in line)


def test_per_family_metrics_follow_the_topology(ovs, agent_factory):
    data = base_config_v6(3, family="dual")
    data["local"]["ovsdb"] = ovs.remote
    a = agent_factory(data).start()
    a.wait_ready()
    wait_for(lambda: a.metric(family("ovs_mesh_peers_with_subnet", "ipv6")) == 2, 5, "2 IPv6 peers")
    assert a.metric(family("ovs_mesh_peers_with_subnet", "ipv4")) == 2
    assert a.metric(family("ovs_mesh_overlay_routes", "ipv6")) == 2
    assert a.metric(family("ovs_mesh_overlay_routes", "ipv4")) == 2
    assert a.metric(family("ovs_mesh_family_flows", "ipv6")) == ipv6_flows(ovs) > 0
    _, body = a.http("/metrics")
    assert ('ovs_mesh_pod_subnet_info{family="ipv6",gateway="fd00:10:244:1::1",subnet="fd00:10:244:1::/64"} 1.0'
            in body), body
    assert 'ovs_mesh_underlay_info{address="192.168.56.11",family="ipv4"} 1.0' in body

    # node-3 keeps only its IPv4 subnet: one IPv6 peer and one IPv6 route less
    single = copy.deepcopy(data)
    single["nodes"][2]["subnet"] = "10.244.3.0/24"
    a.write(single, atomic=True)
    wait_for(lambda: a.metric(family("ovs_mesh_peers_with_subnet", "ipv6")) == 1, 5, "1 IPv6 peer")
    assert a.metric(family("ovs_mesh_peers_with_subnet", "ipv4")) == 2
    wait_for(lambda: a.metric(family("ovs_mesh_overlay_routes", "ipv6")) == 1, 5, "1 IPv6 route")
    assert a.metric(family("ovs_mesh_family_flows", "ipv6")) == ipv6_flows(ovs)
