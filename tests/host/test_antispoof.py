"""Pods on kbr0 cannot claim addresses outside their node's subnet, by IP or by
ARP (the nftables table `bridge ovs_mesh`): crafted frames from one pod to
another, counted where they land; legitimate traffic still passes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.host.conftest import GATEWAY, NODE_IP, in_ns
from tests.host.test_host import ok, ping

PACKETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "packets.py")


def mac(ns: str, dev: str = "eth0") -> str:
    return json.loads(in_ns(ns, "ip", "-j", "link", "show", dev).stdout)[0]["address"]


def exchange(sender: str, receiver: str, specs: list[str]) -> list[str]:
    """Send `specs` (packets.py syntax) from pod `sender` to pod `receiver`,
    then a legitimate "end"; returns what the receiver saw."""
    rx = subprocess.Popen(["ip", "netns", "exec", receiver, sys.executable, PACKETS, "recv", "eth0"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert rx.stdout.readline().strip() == "READY", rx.stderr.read()
        src = json.loads(in_ns(sender, "ip", "-j", "-4", "addr", "show", "eth0").stdout)[0]["addr_info"][0]["local"]
        dst = json.loads(in_ns(receiver, "ip", "-j", "-4", "addr", "show", "eth0").stdout)[0]["addr_info"][0]["local"]
        in_ns(sender, sys.executable, PACKETS, "send", "eth0", mac(receiver),
              *[s.replace("DST", dst) for s in specs], f"ip:{src}:{dst}:end")
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
