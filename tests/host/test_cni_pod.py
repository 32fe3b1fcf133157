"""A pod made by the real CNI `bridge` plugin from the conflist ovs-mesh wrote:
it gets an address of the node's subnet, reaches its gateway (kbr0), the node
forwards to and from it over the netdev underlay, and masquerade applies to
traffic leaving the cluster range."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

from tests.helpers import need
from tests.host.conftest import GATEWAY, NODE_IP, PEER_IP, SUBNET, in_ns, sh
from tests.host.test_host import ok, ping

from ovs_mesh import cni

CNI_BIN = "/usr/lib/cni"


def run_plugin(node, command: str, pod_ns: str, conf: dict) -> dict:
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": f"{pod_ns}-c", "CNI_NETNS": f"/var/run/netns/{pod_ns}",
           "CNI_IFNAME": "eth0", "CNI_PATH": CNI_BIN}
    p = subprocess.run(["ip", "netns", "exec", node.ns, os.path.join(CNI_BIN, conf["type"])],
                       input=json.dumps(conf), capture_output=True, text=True, timeout=60,
                       env={**os.environ, **env})
    assert p.returncode == 0, f"CNI {command}: {p.stdout} {p.stderr}"
    return json.loads(p.stdout) if p.stdout.strip() else {}


def test_pod_from_cni_bridge_plugin(node):
    need(os.path.join(CNI_BIN, "bridge"), os.path.join(CNI_BIN, "host-local"))
    ok(node.cli("apply"))
    with open(node.cni_conf) as f:
        conf = cni.plugin_config(f.read())
    # Keep this test's IP leases out of the machine-wide host-local store.
    conf["ipam"]["dataDir"] = os.path.join(node.tmp, "ipam")
    pod = node.ns.replace("-n", "-pod")
    sh("ip", "netns", "add", pod)
    node.created.append(pod)

    result = run_plugin(node, "ADD", pod, conf)
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

    run_plugin(node, "DEL", pod, conf)
    ok(node.cli("teardown"))
    assert node.sh("ip", "link", "show", "kbr0", check=False).returncode != 0
    assert ping(node.peer_ns, NODE_IP)
    shutil.rmtree(conf["ipam"]["dataDir"], ignore_errors=True)
