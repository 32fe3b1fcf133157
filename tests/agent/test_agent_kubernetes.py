"""The agent with `source: kubernetes`, against the fake API server (real client, kubeconfig)."""
from tests.agent.conftest import our_flows
from tests.helpers import base_config, wait_for
from tests.kube.fake_apiserver import make_node


def test_agent_follows_the_kubernetes_nodes(ovs, agent_factory, apiserver, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    data = base_config(0)
    del data["nodes"]
    data["source"] = "kubernetes"
    data["kubernetes"] = {"kubeconfig": apiserver.kubeconfig(str(tmp_path / "kubeconfig"))}
    data["local"]["ovsdb"] = ovs.remote
    # The local node is registered but has no podCIDR yet: the agent waits.
    apiserver.add(make_node("node-1", "192.168.56.11"))
    apiserver.add(make_node("node-2", "192.168.56.12", "10.244.2.0/24"))
    a = agent_factory(data).start()
    try:
        # 30 s: the first use of the kubernetes client imports CoreV1Api (~50 000 lines of pydantic
        # models), 4 s on a 2-core machine under load and more when it is busier
        wait_for(lambda: "not reconciling: local node node-1" in a.log(), 30, "the agent waiting")
    except AssertionError:
        a.fail("the agent did not wait for node-1's podCIDR")
    assert "READY=1" not in a.notify.fields()
    apiserver.set_pod_cidr("node-1", "10.244.1.0/24")
    a.wait_ready()
    assert "nw_dst=10.244.2.0/24" in our_flows(ovs)

    apiserver.add(make_node("node-3", "192.168.56.13", "10.244.3.0/24"))
    wait_for(lambda: "nw_dst=10.244.3.0/24" in our_flows(ovs), 2, "node-3's flows")
    apiserver.delete("node-2")
    wait_for(lambda: "nw_dst=10.244.2.0/24" not in our_flows(ovs), 2, "node-2's flows gone")
    apiserver.set_ip("node-3", "192.168.56.23")
    wait_for(lambda: "192.168.56.23->tun_dst" in our_flows(ovs), 2, "node-3's new IP")

    # An API outage never removes peers.
    apiserver.down()
    try:
        before = our_flows(ovs)
        a.signal(1)  # SIGHUP: a resync during the outage
        wait_for(lambda: "reconcile (SIGHUP)" in a.log(), 5, "the forced resync")
        assert our_flows(ovs) == before
    finally:
        apiserver.up()
    assert a.proc.poll() is None
