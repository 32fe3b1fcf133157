"""Host networking (issue 3) on a real node namespace with OVS's userspace
datapath: kbr0, obr0 in kbr0, the cluster route, sysctls, masquerade, the CNI
file and the netdev underlay bridge; idempotence; strict teardown."""
from __future__ import annotations

import json
import time

from tests.host.conftest import GATEWAY, NODE_IP, SUBNET, in_ns

from ovs_mesh.host import ALIAS, ROUTE_PROTO


def ok(p):
    assert p.returncode == 0, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p


def links(node) -> dict:
    return {l["ifname"]: l for l in json.loads(node.sh("ip", "-d", "-j", "link", "show").stdout)}


def addrs(node, dev) -> list[str]:
    out = json.loads(node.sh("ip", "-4", "-j", "addr", "show", "dev", dev, check=False).stdout or "[]")
    return [f"{a['local']}/{a['prefixlen']}" for l in out for a in l.get("addr_info", [])]


def ping(ns, ip, timeout=10.0) -> bool:
    """Poll with a deadline: the first packets may wait for ARP / MAC learning."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if in_ns(ns, "ping", "-c", "1", "-W", "1", ip, check=False).returncode == 0:
            return True
    return False


def test_apply_converges_and_teardown_restores(node):
    forward_before = node.sysctl("net.ipv4.ip_forward")
    redirects_before = node.sysctl("net.ipv4.conf.all.send_redirects")
    assert forward_before == "0"

    plan = ok(node.cli("plan", "--json"))
    kinds = {c["kind"] for c in json.loads(plan.stdout)["changes"]}
    assert {"link", "address", "route", "setting", "cni", "masquerade", "underlay"} <= kinds
    ok(node.cli("apply"))

    l = links(node)
    assert l["kbr0"]["linkinfo"]["info_kind"] == "bridge"
    assert l["kbr0"].get("ifalias") == ALIAS
    assert l["kbr0"]["mtu"] == 1450  # 1500 underlay - 50 VXLAN
    assert "UP" in l["kbr0"]["flags"]
    assert addrs(node, "kbr0") == [f"{GATEWAY}/24"]
    assert l["obr0"].get("master") == "kbr0"
    assert l["obr0"]["mtu"] == 1450
    routes = json.loads(node.sh("ip", "-j", "route", "show", "10.244.0.0/16").stdout)
    assert len(routes) == 1 and routes[0]["dev"] == "kbr0" and routes[0]["prefsrc"] == GATEWAY
    assert routes[0]["protocol"] in (str(ROUTE_PROTO), ROUTE_PROTO)
    assert node.sysctl("net.ipv4.ip_forward") == "1"
    assert node.sysctl("net.ipv4.conf.kbr0.send_redirects") == "0"
    assert node.sysctl("net.ipv4.conf.all.send_redirects") == "0"
    conf = json.load(open(node.cni_conf))
    plugin = conf["plugins"][0]
    assert plugin["type"] == "bridge" and plugin["bridge"] == "kbr0" and plugin["mtu"] == 1450
    assert plugin["isGateway"] is True and plugin["ipMasq"] is False
    rng = plugin["ipam"]["ranges"][0][0]
    assert rng == {"subnet": SUBNET, "rangeStart": "10.244.1.2", "gateway": GATEWAY}
    nft = node.sh("nft", "list", "table", "ip", "ovs_mesh").stdout
    assert "masquerade" in nft and "10.244.0.0/16" in nft
    # netdev underlay: the node IP lives on br-phy, with the default route; the node is reachable.
    assert addrs(node, "br-phy") == [f"{NODE_IP}/24"] and addrs(node, node.underlay) == []
    default = json.loads(node.sh("ip", "-j", "route", "show", "default").stdout)
    assert default and default[0]["dev"] == "br-phy"
    assert node.underlay in node.ovs.vsctl("list-ports", "br-phy").split()
    assert ping(node.peer_ns, NODE_IP)

