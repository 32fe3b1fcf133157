"""Pods on kbr0 cannot claim addresses outside their node's subnet, by IP or by
ARP, by IPv6 source or neighbour advertisement, nor act as a router (the
nftables table `bridge ovs_mesh`): crafted frames from one pod to another,
counted where they land; legitimate traffic still passes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.host.conftest import GATEWAY, GATEWAY6, NODE_IP, NODE_IP6, REMOTE_POD6, in_ns
from tests.host.test_host import ok, ping

PACKETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "packets.py")


def mac(ns: str, dev: str = "eth0") -> str:
    return json.loads(in_ns(ns, "ip", "-j", "link", "show", dev).stdout)[0]["address"]


def pod_ip(ns: str, family: str = "-4") -> str:
    out = json.loads(in_ns(ns, "ip", "-j", family, "addr", "show", "eth0").stdout)[0]["addr_info"]
    return next(a["local"] for a in out if a.get("scope") == "global")


def exchange(sender: str, receiver: str, specs: list[str], family: str = "-4") -> list[str]:
    """Send `specs` (packets.py syntax) from pod `sender` to pod `receiver`,
    then a legitimate "end" (of `family`); returns what the receiver saw."""
    rx = subprocess.Popen(["ip", "netns", "exec", receiver, sys.executable, PACKETS, "recv", "eth0", mac(sender)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert rx.stdout.readline().strip() == "READY", rx.stderr.read()
        src, dst = pod_ip(sender, family), pod_ip(receiver, family)
        in_ns(sender, sys.executable, PACKETS, "send", "eth0", mac(receiver),
              *[s.replace("DST", dst) for s in specs], f"ip|{src}|{dst}|end")
        out, err = rx.communicate(timeout=30)
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    lines = out.splitlines()
    assert f"ip {src} end" in lines, f"the legitimate end marker never arrived: {out} {err}"
    return lines


def test_pods_cannot_spoof_ip_or_arp(node):
    ok(node.cli("apply"))
    a, ra = node.add_pod("pa")
    b, rb = node.add_pod("pb")
    ip_a, ip_b = (r["ips"][0]["address"].split("/")[0] for r in (ra, rb))

    seen = exchange(a, b, [
        f"ip:{ip_a}:DST:own",               # its own address: passes
        "ip:203.0.113.7:DST:outside",       # outside the cluster
        "ip:10.244.2.5:DST:other-node",     # another node's pod
        f"ip:{GATEWAY}:DST:gateway",        # the gateway
        f"arp:{ip_a}:DST",                  # its own address: passes
        "arp:10.244.2.5:DST",               # poisoning: another node's pod is here
        f"arp:{GATEWAY}:DST",               # poisoning: the gateway is here
        "arp:203.0.113.7:DST",
    ])
    assert f"ip {ip_a} own" in seen and f"arp {ip_a}" in seen
    leaked = [l for l in seen if any(x in l for x in ("203.0.113.7", "10.244.2.5", f"{GATEWAY} ", f"arp {GATEWAY}"))]
    assert leaked == [], seen

    # The node did not learn a spoofed neighbour either.
    neigh = node.sh("ip", "neigh", "show", "dev", "kbr0").stdout
    assert "10.244.2.5" not in neigh and "203.0.113.7" not in neigh

    # Legitimate traffic: pod <-> pod, node -> pod, pod -> gateway, pod -> node IP.
    assert ping(a, ip_b) and ping(b, ip_a)
    assert ping(node.ns, ip_a) and ping(a, GATEWAY) and ping(a, NODE_IP)

    node.cni_plugin("DEL", a)
    node.cni_plugin("DEL", b)
    ok(node.cli("teardown"))
    assert node.sh("nft", "list", "table", "bridge", "ovs_mesh", check=False).returncode != 0


def test_pods_cannot_spoof_ipv6_or_neighbour_discovery(node6):
    """A dual-stack node: each IPv6 attack next to its legitimate twin."""
    ok(node6.ctl("dual", "apply"))
    a, _ = node6.add_pod("pa")
    b, _ = node6.add_pod("pb")
    ip_a, ip_b = pod_ip(a, "-6"), pod_ip(b, "-6")
    gw_ll = next(x["local"] for x in json.loads(node6.sh("ip", "-6", "-j", "addr", "show", "dev", "kbr0").stdout)[0]
                 ["addr_info"] if x["local"].startswith("fe80"))
    assert ping(b, GATEWAY6)   # b has the gateway in its neighbour table: a forged NA would overwrite it
    gw_mac = json.loads(in_ns(b, "ip", "-6", "-j", "neigh", "show", GATEWAY6).stdout)[0]["lladdr"]
    ll_a = next(x["local"] for x in json.loads(in_ns(a, "ip", "-6", "-j", "addr", "show", "eth0").stdout)[0]
                ["addr_info"] if x["local"].startswith("fe80"))

    seen = exchange(a, b, [
        f"ip|{ip_a}|DST|own",                  # its own address: passes
        "ip|2001:db8::7|DST|outside",          # outside the cluster
        f"ip|{REMOTE_POD6}|DST|other-node",    # another node's pod
        f"ip|{GATEWAY6}|DST|gateway",          # the gateway
        f"ip|{ll_a}|DST|link-local-udp",       # link-local is for neighbour discovery only
        "ip|::|DST|unspecified",
        f"na|{ip_a}|DST|{ip_a}",               # advertising itself: passes
        f"na|{ip_a}|DST|{REMOTE_POD6}",        # poisoning: another node's pod is here
        f"na|{ip_a}|DST|{GATEWAY6}",           # poisoning: the gateway is here
        f"na|{ll_a}|DST|{gw_ll}",              # ... by its link-local address
        f"na|{ip_a}|DST|2001:db8::7",
        f"ra|{ll_a}|DST",                      # a rogue router
    ], family="-6")
    assert f"ip {ip_a} own" in seen and f"na {ip_a}" in seen
    leaked = [l for l in seen if l not in (f"ip {ip_a} own", f"na {ip_a}", f"ip {ip_a} end")]
    assert leaked == [], seen
    assert json.loads(in_ns(b, "ip", "-6", "-j", "neigh", "show", GATEWAY6).stdout)[0]["lladdr"] == gw_mac

    # Legitimate IPv6: pod <-> pod, node -> pod, pod -> gateway, pod -> the node's address.
    assert ping(a, ip_b) and ping(b, ip_a) and ping(node6.ns, ip_a) and ping(a, GATEWAY6)
    assert ping(a, NODE_IP6)
    node6.cni_plugin("DEL", a)
    node6.cni_plugin("DEL", b)
    ok(node6.ctl("dual", "teardown"))
    assert node6.sh("nft", "list", "table", "bridge", "ovs_mesh", check=False).returncode != 0


def test_service_dnat_and_masquerade_still_work(node):
    """kube-proxy style: a pod reaches another pod through a service VIP that the
    node DNATs (and SNATs, as kube-proxy does for hairpin traffic); a pod reaches
    the outside masqueraded (covered in test_cni_pod too)."""
    ok(node.cli("apply"))
    client, _ = node.add_pod("pc")
    server, rs = node.add_pod("ps")
    ip_s = rs["ips"][0]["address"].split("/")[0]
    vip = "10.96.0.10"
    table = f"omho_svc_{os.getpid()}"
    rules = (f"table ip {table} {{\n"
             f"  chain pre {{ type nat hook prerouting priority dstnat; ip daddr {vip} tcp dport 80 "
             f"dnat to {ip_s}:8080; }}\n"
             f"  chain post {{ type nat hook postrouting priority srcnat; ip daddr {ip_s} tcp dport 8080 "
             f"masquerade; }}\n}}\n")
    p = subprocess.run(["ip", "netns", "exec", node.ns, "nft", "-f", "-"], input=rules, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    srv = subprocess.Popen(["ip", "netns", "exec", server, sys.executable, "-c",
                            "import socket\ns = socket.create_server(('0.0.0.0', 8080))\nprint('READY', flush=True)\n"
                            "c, a = s.accept()\nc.sendall(('hello ' + a[0]).encode())\nc.close()"],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "READY"
        got = in_ns(client, sys.executable, "-c",
                    f"import socket\nc = socket.create_connection(('{vip}', 80), timeout=10)\n"
                    "print(c.recv(100).decode())").stdout.strip()
        assert got == f"hello {GATEWAY}"   # DNATed to the server, SNATed to the gateway by the node
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait()
    node.sh("nft", "delete", "table", "ip", table)
    ok(node.cli("teardown"))
