"""Mesh planning: which nodes a node keeps tunnels to.

`flow` and `port` modes are a full mesh.  `stp` mode may use a partial mesh of
`mesh_degree` peers per node: a circulant graph over the nodes sorted by name
(offsets 1..k each way, plus the opposite node when the degree is odd), which
is connected, symmetric (if A peers with B, B peers with A) and stable.
"""
from __future__ import annotations

from .model import Cluster, Node


def peers_of(cluster: Cluster, nodes: tuple[Node, ...] | list[Node], local: str) -> list[Node]:
    ordered = sorted(nodes, key=lambda n: n.name)
    names = [n.name for n in ordered]
    if local not in names:
        return []
    n = len(ordered)
    degree = cluster.mesh_degree if cluster.mode == "stp" else 0
    if degree == 0 or degree >= n - 1:
        return [x for x in ordered if x.name != local]
    i = names.index(local)
    offsets = set()
    for k in range(1, degree // 2 + 1):
        offsets.update({k, -k})
    if degree % 2:
        offsets.add(n // 2 if n % 2 == 0 else degree // 2 + 1)
        if n % 2:
            offsets.add(-(degree // 2 + 1))
    picked = {(i + o) % n for o in offsets} - {i}
    return [ordered[j] for j in sorted(picked)]
