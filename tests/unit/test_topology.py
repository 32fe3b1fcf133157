"""Subnet allocation and mesh planning."""
from ipaddress import IPv4Address
from ipaddress import IPv4Network as N

import pytest

from topology.allocate import AllocationError, allocate
from topology.mesh import peers_of
from topology.model import Cluster, Node


def test_allocate_lowest_free_and_never_moves():
    c = Cluster()
    got = allocate(c, [N("10.244.0.0/24"), None, N("10.244.2.0/24"), None])
    assert got == [N("10.244.0.0/24"), N("10.244.1.0/24"), N("10.244.2.0/24"), N("10.244.3.0/24")]
    assert allocate(c, got) == got


def test_allocate_exhausted():
    c = Cluster(cidr=N("10.244.0.0/23"))
    with pytest.raises(AllocationError, match="no free /24"):
        allocate(c, [None, None, None])


def nodes(n):
    return tuple(Node(f"n{i:02d}", IPv4Address(f"192.168.0.{i + 1}"), N(f"10.244.{i}.0/24")) for i in range(n))


def test_full_mesh_in_flow_and_port_modes():
    ns = nodes(5)
    for mode in ("flow", "port"):
        assert [p.name for p in peers_of(Cluster(mode=mode), ns, "n00")] == ["n01", "n02", "n03", "n04"]


@pytest.mark.parametrize("n,degree", [(n, d) for n in range(3, 13) for d in range(2, n - 1)])
def test_partial_mesh_symmetric_connected(n, degree):
    ns = nodes(n)
    c = Cluster(mode="stp", mesh_degree=degree)
    adj = {x.name: {p.name for p in peers_of(c, ns, x.name)} for x in ns}
    for a, ps in adj.items():
        assert a not in ps
        assert degree <= len(ps) <= degree + 1
        for b in ps:
            assert a in adj[b], f"{a}->{b} not symmetric"
    seen, todo = set(), ["n00"]
    while todo:
        x = todo.pop()
        if x not in seen:
            seen.add(x)
            todo.extend(adj[x])
    assert len(seen) == n


def test_stp_degree_zero_is_full_mesh():
    assert len(peers_of(Cluster(mode="stp"), nodes(4), "n00")) == 3
