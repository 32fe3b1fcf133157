"""A pod made by the real CNI `bridge` plugin from the conflist ovs-mesh wrote:
it gets an address of the node's subnet, reaches its gateway (kbr0), the node
forwards to and from it over the netdev underlay, and masquerade applies to
traffic leaving the cluster range."""
from __future__ import annotations

import json

from tests.host.conftest import GATEWAY, NODE_IP, PEER_IP, SUBNET, in_ns
from tests.host.test_host import ok, ping


def test_pod_from_cni_bridge_plugin(node):
    ok(node.cli("apply"))
    pod, result = node.add_pod("pod")
    ip = result["ips"][0]["address"]
    assert ip == "10.244.1.2/24" and result["ips"][0]["gateway"] == GATEWAY
    eth0 = json.loads(in_ns(pod, "ip", "-j", "link", "show", "eth0").stdout)[0]
    assert eth0["mtu"] == 1450
    assert ping(pod, GATEWAY)
    # The node forwards between the underlay and the pod (peer has a route via the node IP).
    assert ping(node.peer_ns, "10.244.1.2")
    # Masquerade: without a route back to the pod subnet, the peer can only answer the node IP.
    in_ns(node.peer_ns, "ip", "route", "del", SUBNET)
    assert ping(pod, PEER_IP)

    node.cni_plugin("DEL", pod)
    ok(node.cli("teardown"))
    assert node.sh("ip", "link", "show", "kbr0", check=False).returncode != 0
    assert ping(node.peer_ns, NODE_IP)
