"""Lab nodes: their names and addresses, and how one is made.

A node is a network namespace `<lab>-n<k>` with an underlay NIC (`ul0`,
192.168.213.<10+k>/24, or fd00:56::<10+k>/64 with an IPv6 underlay) on a
Linux bridge in the underlay namespace `<lab>-ul`, and its own ovsdb-server +
ovs-vswitchd (userspace datapath) in `<lab dir>/node-<k>/ovs`.  Its pods are
namespaces `<lab>-n<k>p<j>`.

The namespace is made like a fresh machine: forwarding off for both families
(ovs-mesh's host layer turns it on), the underlay address on its NIC (what the
machine's OS provides).  IPv6 underlay addresses skip duplicate address
detection: they are unique by construction inside the lab's own bridge.
"""
from __future__ import annotations

import os

from ovs_mesh.lab.daemons import OvsDaemons

from .record import LabState, Node
from .resources import add_netns, run

UNDERLAY_NET = "192.168.213"     # node k has .(10+k)/24; lives only inside lab namespaces
UNDERLAY_NET6 = "fd00:56::"      # node k has fd00:56::<10+k>/64 (IPv6 underlay); lab namespaces only
UNDERLAY_PREFIX = {"ipv4": 24, "ipv6": 64}
UNDERLAY_IF = "ul0"              # the node's underlay NIC (inside its namespace)
UNDERLAY_BRIDGE = "br-phy"       # OVS bridge that carries the node IP (userspace datapath)


def ul_ns(lab: str) -> str:
    return f"{lab}-ul"


def node_ns(lab: str, k: int) -> str:
    return f"{lab}-n{k}"


def pod_ns(lab: str, k: int, j: int) -> str:
    return f"{lab}-n{k}p{j}"


def underlay_ip(family: str, k: int) -> str:
    """Node k's underlay address in the lab's underlay of `family`."""
    return f"{UNDERLAY_NET6}{10 + k}" if family == "ipv6" else f"{UNDERLAY_NET}.{10 + k}"


def underlay_family(st: LabState) -> str:
    return st.params.get("underlay", "ipv4")


def new_node(st: LabState, k: int) -> Node:
    """The record of node k (nothing is created)."""
    name = f"node-{k}"
    d = os.path.join(st.dir, name)
    return Node(name=name, k=k, ip=underlay_ip(underlay_family(st), k), ns=node_ns(st.name, k), dir=d,
                cni_conf=os.path.join(d, "cni", "10-ovs-mesh.conflist"))


def underlay_cidr(st: LabState, n: Node) -> str:
    """The node's underlay address with its prefix (as `ip addr` shows it)."""
    return f"{n.ip}/{UNDERLAY_PREFIX[underlay_family(st)]}"


def local_section(node: Node) -> dict:
    """The node's `local` config: its OVS, the userspace datapath, its CNI file."""
    return {"node": node.name, "ovsdb": f"unix:{node.rundir}/db.sock", "datapath": "netdev",
            "host": True, "underlay_bridge": UNDERLAY_BRIDGE, "underlay_interface": UNDERLAY_IF,
            "cni_conf": node.cni_conf}


def make_underlay(st: LabState) -> str:
    """The underlay namespace with bridge br0; returns its name."""
    ul = ul_ns(st.name)
    add_netns(st, ul)
    run("ip", "-n", ul, "link", "add", "br0", "type", "bridge")
    run("ip", "-n", ul, "link", "set", "br0", "up")
    return ul


def make_node(st: LabState, n: Node) -> None:
    """Namespace, underlay veth with the node IP, private OVS daemons (each recorded first)."""
    ul = ul_ns(st.name)
    add_netns(st, n.ns)
    # A new namespace may copy the host's forwarding; a fresh machine has 0 (ovs-mesh turns it on).
    run("sysctl", "-qw", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0", netns=n.ns)
    peer = f"n{n.k}"
    st.record("veth", netns=ul, name=peer, peer_netns=n.ns, peer_name=UNDERLAY_IF)
    run("ip", "-n", ul, "link", "add", peer, "type", "veth", "peer", "name", UNDERLAY_IF, "netns", n.ns)
    run("ip", "-n", ul, "link", "set", peer, "master", "br0", "up")
    # Userspace OVS reads the veth with AF_PACKET: with checksum offload on, TCP
    # checksums would be left unfilled.
    run("ethtool", "-K", peer, "tx", "off", netns=ul)
    run("ethtool", "-K", UNDERLAY_IF, "tx", "off", netns=n.ns)
    nodad = ["nodad"] if underlay_family(st) == "ipv6" else []
    run("ip", "-n", n.ns, "addr", "add", underlay_cidr(st, n), "dev", UNDERLAY_IF, *nodad)
    run("ip", "-n", n.ns, "link", "set", UNDERLAY_IF, "up")
    os.makedirs(os.path.dirname(n.cni_conf), exist_ok=True)
    st.record("ovs", rundir=n.rundir, netns=n.ns)
    OvsDaemons(n.rundir, netns=n.ns).start()


def owns(st: LabState, n: Node, r: dict) -> bool:
    """True if resource record `r` belongs to node `n` (its namespace, pods, OVS or agent)."""
    spaces = {n.ns, *[p["ns"] for p in st.pods if p["node"] == n.name]}
    return (r.get("node") == n.name or r.get("rundir") == n.rundir
            or bool(spaces & {r.get("netns"), r.get("peer_netns")})
            or (r["kind"] == "netns" and r["name"] in spaces))
