"""Who keeps a contested pod subnet or InternalIP (`kube_nodes.validate`, pure): the local node,
then the older Node, then the name; whatever order the Nodes are given in."""
from __future__ import annotations

import itertools
import logging

from ovs_mesh.sources.kube_nodes import node_object, validate
from topology.model import Cluster

OLD, NEW = "2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z"


def obj(name, ip, cidr, created=NEW, **extra):
    o = {"metadata": {"name": name, "creationTimestamp": created}, "spec": {"podCIDR": cidr},
         "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}
    o.update(extra)
    return node_object(o)


def peers(objects, local=None):
    nodes, problems, _ = validate({o.name: o for o in objects}, Cluster(), "ipv4", local=local)
    return sorted(n.name for n in nodes), problems


def test_the_older_node_keeps_its_subnet_whatever_the_order_and_names():
    holder = obj("zz-holder", "192.168.0.1", "10.244.1.0/24", created=OLD)
    claimant = obj("aa-claimant", "192.168.0.2", "10.244.1.0/24")
    for order in itertools.permutations([holder, claimant]):
        names, problems = peers(order)
        assert names == ["zz-holder"]
        [(key, p)] = problems.items()
        assert key[0] == "aa-claimant" and p.reason == "subnet-taken" and p.level == logging.WARNING
        assert p.message.endswith("kept out: node zz-holder holds it (created earlier)")


def test_the_local_node_is_never_displaced_even_by_an_older_claimant():
    me = obj("node-1", "192.168.0.1", "10.244.1.0/24", created=NEW)
    older = obj("evil", "192.168.0.9", "10.244.1.0/24", created=OLD)
    address = obj("evil-ip", "192.168.0.1", "10.244.9.0/24", created=OLD)
    names, problems = peers([older, me, address], local="node-1")
    assert names == ["node-1"]
    assert {(k[0], p.reason) for k, p in problems.items()} == {("evil", "subnet-taken"), ("evil-ip", "address-taken")}
    assert all(p.message.endswith("(the local node)") for p in problems.values())
    # the same Nodes judged by another agent: the older claimants hold node-1's subnet and address
    names, _ = peers([older, me, address], local="node-2")
    assert names == ["evil", "evil-ip"]


def test_a_node_without_a_valid_creation_time_comes_last():
    holder = obj("b", "192.168.0.1", "10.244.1.0/24", created="yesterday")
    claimant = obj("a", "192.168.0.2", "10.244.1.0/24", created=[1, 2])
    dated = obj("c", "192.168.0.3", "10.244.1.0/24", created=NEW)
    assert peers([holder, claimant, dated])[0] == ["c"]
    assert peers([holder, claimant])[0] == ["a"]   # neither dated: the name decides


def test_garbage_typed_fields_are_read_as_absent():
    assert node_object({"metadata": ["x"]}) is None
    o = node_object({"metadata": {"name": "g"}, "spec": "garbage", "status": 7})
    assert o.pod_cidrs == () and o.internal_ips == ()
    names, problems = peers([o])
    assert names == [] and [p.reason for p in problems.values()] == ["incomplete"]


def test_a_node_with_5000_addresses_gets_a_short_line():
    o = node_object({"metadata": {"name": "many"}, "spec": {"podCIDR": "10.244.1.0/24"},
                     "status": {"addresses": [{"type": "InternalIP", "address": f"fd00::{i:x}"}
                                              for i in range(5000)]}})
    _, problems = peers([o])
    [p] = problems.values()
    assert "(4995 more)" in p.message and len(p.message) < 400
