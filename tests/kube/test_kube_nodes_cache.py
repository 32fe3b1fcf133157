"""`kube_nodes.validate` with the cache of the call before says exactly what it says without.

For random sequences of Node changes (joins, leaves, IP and podCIDR changes, duplicates,
overlaps, other families, a second InternalIP, heartbeats that keep the object), each call
with the previous call's cache gives the same peers and problems as a call without one, and
a Node whose entry did not change keeps its `Node` object (the agent compares by identity).
"""
from __future__ import annotations

import dataclasses
from ipaddress import ip_network

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ovs_mesh.sources.kube_nodes import NodeObject, validate
from topology.model import Cluster

CLUSTERS = [Cluster(cidr=ip_network("10.244.0.0/16"), node_prefix=24),
            Cluster(cidr=ip_network("10.244.0.0/16"), node_prefix=24, cidr6=ip_network("fd00:10:244::/56"))]
IPS = st.sampled_from(["192.168.56.1", "192.168.56.2", "192.168.56.3", "fd00:56::1", "nope", "10.244.9.9"])
CIDRS = st.sampled_from(["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/25", "10.245.0.0/24", "fd00:10:244:1::/64",
                         "fd00:10:244:2::/64", "bad"])
NAMES = st.sampled_from([f"node-{i}" for i in range(1, 7)])
CHANGE = st.one_of(
    st.tuples(st.just("set"), NAMES, st.lists(IPS, max_size=2), st.lists(CIDRS, max_size=2)),
    st.tuples(st.just("delete"), NAMES, st.none(), st.none()),
    st.tuples(st.just("beat"), NAMES, st.none(), st.none()),   # a new object, same fields
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dual=st.booleans(), changes=st.lists(CHANGE, max_size=12))
def test_validate_with_the_cache_is_validate_without(dual, changes):
    cluster = CLUSTERS[dual]
    objects: dict[str, NodeObject] = {}
    cache, before = None, {}
    for kind, name, ips, cidrs in changes:
        if kind == "delete":
            objects.pop(name, None)
        elif kind == "beat":
            if name in objects:
                objects[name] = dataclasses.replace(objects[name])
        else:
            objects[name] = NodeObject(name, tuple(ips), tuple(cidrs), cidrs[0] if cidrs else None)
        nodes, problems, cache = validate(dict(objects), cluster, "ipv4", cache)
        fresh_nodes, fresh_problems, _ = validate(dict(objects), cluster, "ipv4")
        assert (nodes, problems) == (fresh_nodes, fresh_problems)
        now = {n.name: n for n in nodes}
        for n, node in now.items():
            if n in before and before[n] == node:
                assert before[n] is node, n   # an unchanged peer keeps its Node object
        before = now
