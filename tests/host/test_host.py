"""Host networking on a real node namespace with OVS's userspace
datapath: kbr0, obr0 in kbr0, the cluster route, sysctls, masquerade, the CNI
file and the netdev underlay bridge; idempotence; strict teardown."""
from __future__ import annotations

import json
import os

from ovs_mesh.host import ALIAS, ROUTE_PROTO
from tests.helpers import wait_for
from tests.host.conftest import GATEWAY, NODE_IP, SUBNET, in_ns


def ok(p):
    assert p.returncode == 0, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p


def links(node) -> dict:
    return {l["ifname"]: l for l in json.loads(node.sh("ip", "-d", "-j", "link", "show").stdout)}


def addrs(node, dev) -> list[str]:
    out = json.loads(node.sh("ip", "-4", "-j", "addr", "show", "dev", dev, check=False).stdout or "[]")
    return [f"{a['local']}/{a['prefixlen']}" for l in out for a in l.get("addr_info", [])]


def reachable(ns, ip) -> bool:
    """One ping from namespace `ns` (up to 1 s for the reply)."""
    return in_ns(ns, "ping", "-c", "1", "-W", "1", ip, check=False).returncode == 0


def ping(ns, ip, timeout=10.0) -> bool:
    """True once `ip` answers from `ns`, failing after `timeout` s: the first packets may
    wait for ARP / MAC learning."""
    return wait_for(lambda: reachable(ns, ip), timeout, f"{ip} to answer a ping from {ns}", interval=0)


def test_apply_converges_and_teardown_restores(node):
    forward_before = node.sysctl("net.ipv4.ip_forward")
    redirects_before = node.sysctl("net.ipv4.conf.all.send_redirects")
    assert forward_before == "0"

    plan = ok(node.cli("plan", "--json"))
    kinds = {c["kind"] for c in json.loads(plan.stdout)["changes"]}
    assert {"link", "address", "route", "sysctl", "offload", "cni", "masquerade", "antispoof",
            "underlay"} <= kinds
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
    nft = node.sh("nft", "list", "table", "inet", "ovs_mesh").stdout
    assert "masquerade" in nft and "10.244.0.0/16" in nft
    spoof = node.sh("nft", "list", "table", "bridge", "ovs_mesh").stdout
    assert f"ip saddr != {SUBNET} drop" in spoof and 'iifname != "obr0"' in spoof
    # netdev underlay: the node IP lives on br-phy, with the default route; the node is reachable.
    assert addrs(node, "br-phy") == [f"{NODE_IP}/24"] and addrs(node, node.underlay) == []
    default = json.loads(node.sh("ip", "-j", "route", "show", "default").stdout)
    assert default and default[0]["dev"] == "br-phy"
    assert node.underlay in node.ovs.vsctl("list-ports", "br-phy").split()
    assert ping(node.peer_ns, NODE_IP)

    replies = in_ns(node.peer_ns, "ping", "-c", "3", "-i", "0.2", "-W", "1", NODE_IP, check=False).stdout
    assert "DUP!" not in replies, replies

    # Converged: a second apply and a plan change nothing.
    again = ok(node.cli("apply", "--json"))
    assert json.loads(again.stdout)["changes"] == []
    assert "no changes" in ok(node.cli("plan")).stdout

    # Teardown: all of it gone, sysctls restored, the underlay back on its interface and working.
    ok(node.cli("teardown"))
    l = links(node)
    assert "kbr0" not in l and "obr0" not in l and "br-phy" not in l
    assert node.sh("ip", "route", "show", "proto", str(ROUTE_PROTO)).stdout.strip() == ""
    assert node.sysctl("net.ipv4.ip_forward") == forward_before
    assert node.sysctl("net.ipv4.conf.all.send_redirects") == redirects_before
    assert not os.path.exists(node.cni_conf)
    assert node.sh("nft", "list", "table", "inet", "ovs_mesh", check=False).returncode != 0
    assert node.sh("nft", "list", "table", "bridge", "ovs_mesh", check=False).returncode != 0
    assert addrs(node, node.underlay) == [f"{NODE_IP}/24"]
    default = json.loads(node.sh("ip", "-j", "route", "show", "default").stdout)
    assert default and default[0]["dev"] == node.underlay and default[0]["gateway"] == "192.168.77.2"
    assert node.ovs.vsctl("list-br").split() == []
    assert ping(node.peer_ns, NODE_IP)
    assert not os.path.exists(os.path.join(node.ovs.rundir, "ovs-mesh.host.json"))
    # A second teardown finds nothing to do.
    assert "no changes" in ok(node.cli("teardown")).stdout


def test_teardown_leaves_untagged_things_alone(node):
    """A kbr0, routes and nft table that ovs-mesh did not create survive teardown,
    and apply refuses to adopt a foreign kbr0."""
    node.sh("ip", "link", "add", "kbr0", "type", "bridge")
    node.sh("nft", "add", "table", "ip", "other")
    node.sh("nft", "add", "table", "bridge", "other")
    node.sh("ip", "route", "add", "10.99.0.0/16", "via", "192.168.77.2")
    bad = node.cli("apply")
    assert bad.returncode == 1 and "kbr0" in bad.stderr and "refusing" in bad.stderr
    ok(node.cli("teardown"))
    assert "kbr0" in links(node)
    assert node.sh("nft", "list", "table", "ip", "other", check=False).returncode == 0
    assert node.sh("nft", "list", "table", "bridge", "other", check=False).returncode == 0
    assert "10.99.0.0/16" in node.sh("ip", "route").stdout
    assert node.sysctl("net.ipv4.ip_forward") == "0"


def test_foreign_cni_file_is_not_overwritten_or_deleted(node):
    os.makedirs(os.path.dirname(node.cni_conf), exist_ok=True)
    with open(node.cni_conf, "w") as f:
        f.write('{"cniVersion": "1.0.0", "name": "someone-else", "plugins": []}\n')
    bad = node.cli("apply")
    assert bad.returncode == 1 and "cni_conf" in bad.stderr
    ok(node.cli("teardown"))
    assert "someone-else" in open(node.cni_conf).read()


def test_bad_input_exits_2(node):
    node.rewrite(underlay_interface="omh-nosuch0")
    p = node.cli("apply")
    assert p.returncode == 2, p.stderr
    assert "local.underlay_interface: omh-nosuch0" in p.stderr
    assert "kbr0" not in links(node)
    node.rewrite(underlay_interface=node.underlay, datapath="bogus")
    p = node.cli("plan")
    assert p.returncode == 2 and "local.datapath" in p.stderr


def test_mtu_follows_underlay_and_cluster_mtu(node):
    node.sh("ip", "link", "set", node.underlay, "mtu", "1400")
    ok(node.cli("apply"))
    assert links(node)["kbr0"]["mtu"] == 1350
    assert json.load(open(node.cni_conf))["plugins"][0]["mtu"] == 1350
    node.config["cluster"]["mtu"] = 1300
    node.rewrite()
    changes = json.loads(ok(node.cli("apply", "--json")).stdout)["changes"]
    assert {(c["kind"], c["action"]) for c in changes} >= {("link", "modify"), ("cni", "modify")}
    assert links(node)["kbr0"]["mtu"] == 1300 and links(node)["obr0"]["mtu"] == 1300
    assert json.load(open(node.cni_conf))["plugins"][0]["mtu"] == 1300
    node.config["cluster"]["masquerade"] = False
    node.rewrite()
    changes = json.loads(ok(node.cli("apply", "--json")).stdout)["changes"]
    assert [(c["kind"], c["action"]) for c in changes] == [("masquerade", "delete")]
    assert node.sh("nft", "list", "table", "inet", "ovs_mesh", check=False).returncode != 0
    ok(node.cli("teardown"))
