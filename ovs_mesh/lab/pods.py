"""Pods, made as a container runtime makes them: the CNI chain of the conflist ovs-mesh wrote.

A pod is a namespace `<lab>-n<k>p<j>` whose eth0 comes from running each
plugin of the node's conflist (the reference `bridge` + `host-local`) with
CNI_COMMAND=ADD inside the node's namespace (or on this machine when the node
has none: `lab pods` on a VM).  Pods are plain dicts in the lab state:
name (node/pj), ns, node, k, j, ip (the first address), ips (one per family,
as the CNI result lists them: IPv4 first in a dual-stack conflist), container.
"""
from __future__ import annotations

import json
import os
from ipaddress import ip_address

from .nodes import pod_ns
from .record import LabError, LabState, Node
from .resources import add_netns, run

CNI_PATH = os.environ.get("CNI_PATH", "/usr/lib/cni")


def _env(command: str, container: str, netns: str) -> dict:
    return {**os.environ, "CNI_COMMAND": command, "CNI_CONTAINERID": container,
            "CNI_NETNS": f"/run/netns/{netns}", "CNI_IFNAME": "eth0", "CNI_PATH": CNI_PATH}


def plugin_configs(n: Node) -> list[dict]:
    """The node's conflist as the runtime passes it, one network config per plugin.

    host-local keeps its leases in /var/lib/cni by default, shared by every
    lab node: when the conflist sets no ipam.dataDir, point it into the node's dir.
    """
    from ovs_mesh.host import cni  # on use: the host package loads pyroute2, which `lab --help` need not

    with open(n.cni_conf, encoding="utf-8") as f:
        content = f.read()
    out = []
    for i in range(len(json.loads(content)["plugins"])):
        conf = cni.plugin_config(content, i)
        ipam = conf.get("ipam")
        if isinstance(ipam, dict) and ipam.get("type") == "host-local" and not ipam.get("dataDir"):
            conf["ipam"] = {**ipam, "dataDir": n.ipam_dir}
        out.append(conf)
    return out


def add_pod(st: LabState, n: Node, j: int) -> dict:
    """A pod namespace with eth0 from the CNI chain, run inside the node namespace."""
    ns = pod_ns(st.name, n.k, j)
    add_netns(st, ns)
    container = f"{st.name}-{n.name}-p{j}"
    result = None
    for conf in plugin_configs(n):
        if result is not None:
            conf["prevResult"] = result
        p = run(os.path.join(CNI_PATH, conf["type"]), netns=n.ns, input=json.dumps(conf),
                env=_env("ADD", container, ns), check=False)
        if p.returncode != 0:
            raise LabError(f"{n.name}: CNI {conf['type']} ADD for {ns}: {p.stdout.strip()} {p.stderr.strip()}")
        result = json.loads(p.stdout)
    ips = [a["address"].split("/")[0] for a in result["ips"]]
    pod = {"name": f"{n.name}/p{j}", "ns": ns, "node": n.name, "k": n.k, "j": j, "ip": ips[0], "ips": ips,
           "container": container}
    with st.lock:
        st.pods.append(pod)
    return pod


def family_of(ip: str) -> str:
    return "ipv6" if ip_address(ip).version == 6 else "ipv4"


def address_of(pod: dict, family: str) -> str | None:
    """The pod's address of `family` (None if it has none); a record that
    lists only `ip` (one family) is read through it."""
    return next((ip for ip in pod.get("ips") or [pod["ip"]] if family_of(ip) == family), None)


def addresses(pod: dict) -> str:
    """All of the pod's addresses, comma-separated (for progress lines)."""
    return ",".join(pod.get("ips") or [pod["ip"]])
