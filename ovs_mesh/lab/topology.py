"""Generate the lab's topology file and per-node configs.

Shared by the namespace lab and the Vagrant lab (`ovs-mesh lab topology`):
a list of (name, underlay IP) becomes one validated YAML topology (cluster +
nodes with allocated subnets); a node's config is that topology plus its
`local` section.  Nothing here touches the machine except the atomic write.

Dual-stack follows the config file's YAML shape: `cidr` is one CIDR or
"v4,v6"; `node_prefix_ipv6` is written only when the cluster has IPv6; a
node's `subnet` is a plain string for one family and a list [v4, v6] for two.
"""
from __future__ import annotations

import io
from ipaddress import IPv4Network, IPv6Network
from typing import Any

from ovs_mesh.files import write_atomic
from topology.allocate import allocate
from topology.config import parse_config
from topology.model import Cluster

from ..config.file import read_yaml, round_trip_yaml  # noqa: F401  (read_yaml: the lab's reader too)

# The lab's pod ranges per family (`lab up --ip-family`).
LAB_CIDRS = {"ipv4": "10.244.0.0/16", "ipv6": "fd00:10:244::/56"}
IP_FAMILIES = {"ipv4": ("ipv4",), "ipv6": ("ipv6",), "dual": ("ipv4", "ipv6")}


def lab_cidr(ip_family: str = "ipv4") -> str:
    """`--ip-family ipv4|ipv6|dual` -> the cluster's `cidr` value ("v4", "v6" or "v4,v6")."""
    return ",".join(LAB_CIDRS[f] for f in IP_FAMILIES[ip_family])


def make_topology(nodes: list[tuple[str, str]], tunnel: str = "vxlan", mode: str = "flow",
                  mesh_degree: int = 0, cidr: str = "10.244.0.0/16", node_prefix: int = 24,
                  mtu: int | None = None, masquerade: bool = True, node_prefix6: int = 64) -> dict:
    """(name, ip) pairs -> a topology document (plain dicts), subnets allocated.

    `cidr` is one CIDR or one per family ("10.244.0.0/16,fd00:10:244::/56").
    Raises topology.config.ConfigError (field: value: reason) on bad input.
    """
    cluster_doc = {"cidr": cidr, "node_prefix": node_prefix, "tunnel": tunnel, "mode": mode,
                   "mesh_degree": mesh_degree, "mtu": "auto" if mtu is None else mtu,
                   "masquerade": masquerade}
    if ":" in cidr:
        cluster_doc["node_prefix_ipv6"] = node_prefix6
    doc: dict[str, Any] = {"cluster": cluster_doc, "source": "file",
           "nodes": [{"name": n, "ip": str(ip)} for n, ip in nodes]}
    config = parse_config(doc, require_local=False)  # validates names, IPs, cluster
    for entry, subnets in zip(doc["nodes"], allocate_all(config.cluster, [{}] * len(nodes))):
        entry["subnet"] = subnet_value(subnets)
    parse_config(doc, require_local=False)
    return doc


def subnet_value(subnets: list) -> str | list[str]:
    """The YAML value of a node's subnets: a plain string for one, a list [v4, v6] for two."""
    return str(subnets[0]) if len(subnets) == 1 else [str(s) for s in subnets]


def allocate_all(cluster: Cluster, current: list[dict]) -> list[list]:
    """Every node's subnets (one per cluster family, IPv4 first), lowest free ones where missing.

    `current[i]` holds node i's subnets by family (topology.nodes.node_subnets_of); existing ones stay.
    """
    per_family = [allocate(cluster, [subs.get(f) for subs in current], f) for f in cluster.families]
    return [list(subs) for subs in zip(*per_family)]


def node_config(topology: dict, local: dict) -> dict:
    """One node's config: the shared topology plus its `local` section (validated)."""
    doc = {k: v for k, v in topology.items() if k != "local"}
    doc["local"] = dict(local)
    parse_config(doc)
    return doc


def to_yaml(doc: dict) -> str:
    buf = io.StringIO()
    round_trip_yaml().dump(_plain(doc), buf)
    return buf.getvalue()


def _plain(v):
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (IPv4Network, IPv6Network)):
        return str(v)
    return v


def write_yaml(path: str, doc: dict) -> None:
    """Write atomically: agents watching the file never see half of it."""
    write_atomic(path, to_yaml(doc))


def cluster_of(topology: dict) -> Cluster:
    return parse_config(topology, require_local=False).cluster
