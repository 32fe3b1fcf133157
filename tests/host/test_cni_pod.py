"""A pod made by the real CNI `bridge` plugin from the conflist ovs-mesh wrote:
it gets an address of the node's subnet (of each family in a dual-stack
cluster), reaches its gateway (kbr0), the node forwards to and from it over
the netdev underlay, and masquerade applies to traffic leaving the cluster
range, never to pod <-> pod traffic."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import wait_for
from tests.host.conftest import (
    GATEWAY,
    GATEWAY6,
    NODE_IP,
    NODE_IP6,
    PEER_IP,
    PEER_IP6,
    REMOTE_POD,
    REMOTE_POD6,
    SUBNET,
    in_ns,
)
from tests.host.test_host import ok, ping, reachable


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


def source_seen(server_ns: str, server_ip: str, client_ns: str, port: int = 8080) -> str:
    """The source address a TCP server in `server_ns` sees for a connection
    from `client_ns` to `server_ip`: the sender's own address unless NATed."""
    code = ("import socket, sys\nip = sys.argv[1]\n"
            f"s = socket.create_server((ip, {port}), family=socket.AF_INET6 if ':' in ip else socket.AF_INET)\n"
            "print('READY', flush=True)\nc, a = s.accept()\nprint(a[0], flush=True)\n")
    srv = subprocess.Popen(["ip", "netns", "exec", server_ns, sys.executable, "-c", code, server_ip],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "READY", srv.stderr.read()
        in_ns(client_ns, sys.executable, "-c",
              f"import socket\nsocket.create_connection(('{server_ip}', {port}), timeout=10).close()")
        out, _ = srv.communicate(timeout=30)
        return out.strip()
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()


def redirects_received(ns: str) -> int:
    """ICMPv6 redirects the namespace received (counted before they are judged)."""
    for line in in_ns(ns, "cat", "/proc/net/snmp6").stdout.splitlines():
        if line.startswith("Icmp6InRedirects"):
            return int(line.split()[1])
    return 0


def test_dual_stack_pod_addresses_masquerade_and_no_nat_between_pods(node6):
    ok(node6.ctl("dual", "apply"))
    pod, result = node6.add_pod("pod")
    ips = {i["address"]: i.get("gateway") for i in result["ips"]}
    assert ips == {"10.244.1.2/24": GATEWAY, "fd00:10:244:1::2/64": GATEWAY6}
    routes = json.loads(in_ns(pod, "ip", "-6", "-j", "route", "show", "default").stdout)
    assert [r["gateway"] for r in routes] == [GATEWAY6]
    assert json.loads(in_ns(pod, "ip", "-j", "link", "show", "eth0").stdout)[0]["mtu"] == 1450
    assert ping(pod, GATEWAY6) and ping(node6.ns, "fd00:10:244:1::2") and ping(pod, GATEWAY)

    # Leaving the cluster: masqueraded to the node's address of each family (the peer has no
    # route back to the pod subnets, so an answer proves it too).
    assert source_seen(node6.peer_ns, PEER_IP6, pod) == NODE_IP6
    assert source_seen(node6.peer_ns, PEER_IP, pod) == NODE_IP
    # Pod -> another node's pod (routed by the node out of kbr0, through obr0): never NATed,
    # and the node's ICMPv6 redirect for this kbr0-in, kbr0-out hop is dropped.
    assert source_seen(node6.remote_ns, REMOTE_POD6, pod) == "fd00:10:244:1::2"
    assert source_seen(node6.remote_ns, REMOTE_POD, pod) == "10.244.1.2"
    assert ping(pod, REMOTE_POD6)
    assert redirects_received(pod) == 0
    # ...which is what our rule does: without it the node sends them.
    node6.sh("nft", "delete", "chain", "inet", "ovs_mesh", "output")
    wait_for(lambda: reachable(pod, REMOTE_POD6) and redirects_received(pod) > 0, timeout=20,
             what="an ICMPv6 redirect once our output chain is gone")

    node6.cni_plugin("DEL", pod)
    ok(node6.ctl("dual", "teardown"))
    assert node6.sh("nft", "list", "table", "inet", "ovs_mesh", check=False).returncode != 0


def test_ipv6_only_pod(node6):
    ok(node6.ctl("ipv6", "apply", "--underlay", "ipv6"))
    assert json.load(open(node6.cni_conf))["plugins"][0]["mtu"] == 1430   # IPv6 underlay: 20 bytes more
    pod, result = node6.add_pod("pod")
    assert [i["address"] for i in result["ips"]] == ["fd00:10:244:1::2/64"]
    assert "inet " not in in_ns(pod, "ip", "-4", "addr", "show", "eth0").stdout
    assert source_seen(node6.peer_ns, PEER_IP6, pod) == NODE_IP6
    assert source_seen(node6.remote_ns, REMOTE_POD6, pod) == "fd00:10:244:1::2"
    node6.cni_plugin("DEL", pod)
    ok(node6.ctl("ipv6", "teardown", "--underlay", "ipv6"))
