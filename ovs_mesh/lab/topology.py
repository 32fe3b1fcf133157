"""Generate the lab's topology file and per-node configs.

Shared by the namespace lab and the Vagrant lab (`ovs-mesh lab topology`):
a list of (name, underlay IP) becomes one validated YAML topology (cluster +
nodes with allocated subnets); a node's config is that topology plus its
`local` section.  Nothing here touches the machine except the atomic write.
"""
from __future__ import annotations

import io
from ipaddress import IPv4Network

from topology.allocate import allocate
from ovs_mesh.files import write_atomic
from topology.config import parse_config
from topology.model import Cluster

from ..config_file import read_yaml, round_trip_yaml  # noqa: F401  (read_yaml: the lab's reader too)


def make_topology(nodes: list[tuple[str, str]], tunnel: str = "vxlan", mode: str = "flow",
                  mesh_degree: int = 0, cidr: str = "10.244.0.0/16", node_prefix: int = 24,
                  mtu: int | None = None, masquerade: bool = True) -> dict:
    """(name, ip) pairs -> a topology document (plain dicts), subnets allocated.

    Raises topology.config.ConfigError (field: value: reason) on bad input.
    """
    cluster_doc = {"cidr": cidr, "node_prefix": node_prefix, "tunnel": tunnel, "mode": mode,
                   "mesh_degree": mesh_degree, "mtu": "auto" if mtu is None else mtu,
                   "masquerade": masquerade}
    doc = {"cluster": cluster_doc, "source": "file",
           "nodes": [{"name": n, "ip": str(ip)} for n, ip in nodes]}
    config = parse_config(doc, require_local=False)  # validates names, IPs, cluster
    subnets = allocate(config.cluster, [None] * len(nodes))
    for entry, subnet in zip(doc["nodes"], subnets):
        entry["subnet"] = str(subnet)
    parse_config(doc, require_local=False)
    return doc


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
    if isinstance(v, IPv4Network):
        return str(v)
    return v


def write_yaml(path: str, doc: dict) -> None:
    """Write atomically: agents watching the file never see half of it."""
    write_atomic(path, to_yaml(doc))


def cluster_of(topology: dict) -> Cluster:
    return parse_config(topology, require_local=False).cluster
