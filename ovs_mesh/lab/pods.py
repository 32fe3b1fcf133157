"""Pods, made as a container runtime makes them: the CNI chain of the conflist ovs-mesh wrote.

A pod is a namespace `<lab>-n<k>p<j>` whose eth0 comes from running each
plugin of the node's conflist (the reference `bridge` + `host-local`) with
CNI_COMMAND=ADD inside the node's namespace (or on this machine when the node
has none: `lab pods` on a VM).  With `lab up --pods podman` a real container
engine makes them from the same conflist instead (podman.py); their namespace
is podman's (`cni-...`) and their record says runtime "podman".  Pods are plain dicts in the lab state:
name (node/pj), ns, node, k, j, ip (the first address), ips (one per family,
as the CNI result lists them: IPv4 first in a dual-stack conflist), container.
"""
from __future__ import annotations

import json
import os
import sys
from ipaddress import ip_address

from . import podman
from .nodes import pod_ns
from .record import LabError, LabState, Node
from .resources import add_netns, del_netns, run

# The reference plugins, then where this ovs-mesh's console scripts are (ovs-mesh-guard), as a
# runtime searches its CNI_PATH.
CNI_PATH = os.environ.get("CNI_PATH", "/usr/lib/cni") + os.pathsep + os.path.dirname(sys.executable)


def plugin_path(kind: str) -> str:
    """The executable of plugin `kind`: the first in CNI_PATH, as a runtime finds it."""
    for d in CNI_PATH.split(os.pathsep):
        path = os.path.join(d, kind)
        if d and os.access(path, os.X_OK):
            return path
    raise LabError(f"CNI plugin {kind} not found in CNI_PATH {CNI_PATH}")


def _env(command: str, container: str, netns: str) -> dict:
    return {**os.environ, "CNI_COMMAND": command, "CNI_CONTAINERID": container,
            "CNI_NETNS": f"/run/netns/{netns}", "CNI_IFNAME": "eth0", "CNI_PATH": CNI_PATH}


def plugin_configs(n: Node) -> list[dict]:
    """The node's conflist as the runtime passes it, one network config per plugin.

    host-local keeps its leases in /var/lib/cni by default.  Nodes in network
    namespaces share this machine's, so when the conflist sets no ipam.dataDir
    it points into the node's dir.  A node that is this machine (`lab pods` on a
    VM) keeps the default, as its container runtime would: every lab's pods then
    draw from one pool, and host-local hands addresses out in turn, so a pod made
    after another was deleted gets a new address (the other nodes' kbr0 may still
    hold the old pod's MAC for the old one for up to a minute).
    """
    from ovs_mesh.host import cni  # on use: the host package loads pyroute2, which `lab --help` need not

    with open(n.cni_conf, encoding="utf-8") as f:
        content = f.read()
    out = []
    for i in range(len(json.loads(content)["plugins"])):
        conf = cni.plugin_config(content, i)
        ipam = conf.get("ipam")
        if isinstance(ipam, dict) and ipam.get("type") == "host-local" and not ipam.get("dataDir") and n.ns:
            conf["ipam"] = {**ipam, "dataDir": n.ipam_dir}
        out.append(conf)
    return out


def add_pod(st: LabState, n: Node, j: int, plugins: int | None = None) -> dict:
    """A pod namespace with eth0 from the CNI chain, run inside the node namespace;
    `plugins`: only the first so many of the chain (as a conflist before the guard).
    A lab made with `--pods podman` has podman make it instead (podman.py)."""
    container = f"{st.name}-{n.name}-p{j}"
    if st.params.get("pods") == "podman" and plugins is None:
        pod = podman.add_pod(st, n, j, container, CNI_PATH)
        with st.lock:
            st.pods.append(pod)
        return pod
    ns = pod_ns(st.name, n.k, j)
    add_netns(st, ns)
    result = None
    for conf in plugin_configs(n)[:plugins]:
        if result is not None:
            conf["prevResult"] = result
        p = run(plugin_path(conf["type"]), netns=n.ns, input=json.dumps(conf),
                env=_env("ADD", container, ns), check=False)
        if p.returncode != 0:
            raise LabError(f"{n.name}: CNI {conf['type']} ADD for {ns}: {p.stdout.strip()} {p.stderr.strip()}")
        result = json.loads(p.stdout)
    ips = [a["address"].split("/")[0] for a in result["ips"]]
    pod = {"name": f"{n.name}/p{j}", "ns": ns, "node": n.name, "k": n.k, "j": j, "ip": ips[0], "ips": ips,
           "container": container, "result": result}
    with st.lock:
        st.pods.append(pod)
    return pod


def del_pod(st: LabState, n: Node, pod: dict) -> None:
    """Delete a pod as a runtime does: each plugin's DEL in reverse order, with the ADD's result
    as prevResult (the guard drops the pod's entries, host-local its addresses), then its
    namespace.  A podman pod is removed by podman (which does the same)."""
    if pod.get("runtime") == "podman":
        podman.del_pod(st, n, pod, CNI_PATH)
        return
    for conf in reversed(plugin_configs(n)):
        if pod.get("result") is not None:
            conf["prevResult"] = pod["result"]
        p = run(plugin_path(conf["type"]), netns=n.ns, input=json.dumps(conf),
                env=_env("DEL", pod["container"], pod["ns"]), check=False)
        if p.returncode != 0:
            raise LabError(f"{n.name}: CNI {conf['type']} DEL for {pod['ns']}: {p.stdout.strip()} {p.stderr.strip()}")
    del_netns(pod["ns"], progress=lambda _: None)
    with st.lock:
        st.forget({"kind": "netns", "name": pod["ns"]})
        st.pods[:] = [p for p in st.pods if p["ns"] != pod["ns"]]
        st.save()


def family_of(ip: str) -> str:
    return "ipv6" if ip_address(ip).version == 6 else "ipv4"


def address_of(pod: dict, family: str) -> str | None:
    """The pod's address of `family` (None if it has none); a record that
    lists only `ip` (one family) is read through it."""
    return next((ip for ip in pod.get("ips") or [pod["ip"]] if family_of(ip) == family), None)


def addresses(pod: dict) -> str:
    """All of the pod's addresses, comma-separated (for progress lines)."""
    return ",".join(pod.get("ips") or [pod["ip"]])
