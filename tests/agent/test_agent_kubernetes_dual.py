"""The agent with `source: kubernetes` in a dual-stack cluster: dual-stack Nodes from
the fake API server (real client, kubeconfig) become IPv4 and IPv6 flows in a real sandbox OVS."""
from tests.agent.conftest import our_flows
from tests.helpers import base_config, wait_for
from tests.kube.fake_apiserver import make_node


def dual_node(i: int, v6: bool = True) -> dict:
    cidrs = [f"10.244.{i}.0/24"] + ([f"fd00:10:244:{i}::/64"] if v6 else [])
    return make_node(f"node-{i}", None, cidrs[0], pod_cidrs=cidrs,
                     addresses=[{"type": "InternalIP", "address": f"192.168.56.{10 + i}"},
                                {"type": "InternalIP", "address": f"fd00:56::{10 + i}"}])


def test_agent_installs_both_families_from_dual_stack_nodes(ovs, agent_factory, apiserver, tmp_path,
                                                              monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    data = base_config(0)
    del data["nodes"]
    data["cluster"]["cidr"] = "10.244.0.0/16,fd00:10:244::/56"
    data["source"] = "kubernetes"
    data["kubernetes"] = {"kubeconfig": apiserver.kubeconfig(str(tmp_path / "kubeconfig"))}
    data["local"]["ovsdb"] = ovs.remote
    apiserver.add(dual_node(1))
    apiserver.add(dual_node(2))
    apiserver.add(dual_node(3, v6=False))   # single-stack: skipped until it gets its IPv6 podCIDR
    a = agent_factory(data).start()
    a.wait_ready(timeout=60)   # the first use of the kubernetes client is slow on a loaded machine
    flows = our_flows(ovs)
    assert "ipv6,ipv6_dst=fd00:10:244:2::/64" in flows and "ip,nw_dst=10.244.2.0/24" in flows, flows
    assert "192.168.56.12->tun_dst" in flows          # the IPv4 underlay of a dual-stack cluster
    assert "10.244.3.0/24" not in flows
    line = "node node-3: spec.podCIDRs: [10.244.3.0/24]: no IPv6 pod CIDR, the cluster has fd00:10:244::/56"
    wait_for(lambda: line in a.log(), 5, "the skip line")

    apiserver.set_pod_cidrs("node-3", ["10.244.3.0/24", "fd00:10:244:3::/64"])
    wait_for(lambda: "ipv6,ipv6_dst=fd00:10:244:3::/64" in our_flows(ovs), 10, "node-3's IPv6 flows")
    assert "ip,nw_dst=10.244.3.0/24" in our_flows(ovs)
    assert a.log().count(line) == 1
