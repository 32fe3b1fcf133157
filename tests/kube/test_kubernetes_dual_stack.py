"""KubernetesSource with dual-stack and IPv6-only clusters, through the real
client and the fake API server: spec.podCIDRs of both families, InternalIPs of both,
the underlay family, Nodes that lack a family, bad IPv6 values.
"""
from __future__ import annotations

import logging
import re
from ipaddress import ip_address, ip_network

import pytest

from tests.helpers import wait_for
from tests.kube.fake_apiserver import make_node
from topology.config import ConfigError
from topology.model import Cluster, Node

LOGGER = "ovs_mesh.sources.kubernetes_source"
CIDR6 = ip_network("fd00:10:244::/56")
DUAL = Cluster(cidr6=CIDR6)
V6ONLY = Cluster(cidr=None, cidr6=CIDR6)


def v4(i: int) -> str:
    return f"10.244.{i}.0/24"


def v6(i: int) -> str:
    return f"fd00:10:244:{i:x}::/64"


def ips(i: int) -> tuple[str, str]:
    return f"192.168.1.{i}", f"fd00:56::{i:x}"


def node_obj(name: str, cidrs: list[str], addresses: list[str]) -> dict:
    """A Node as kubelet and kube-controller-manager leave it: podCIDR = podCIDRs[0]."""
    return make_node(name, None, cidrs[0] if cidrs else None, pod_cidrs=list(cidrs) or None,
                     addresses=[{"type": "InternalIP", "address": a} for a in addresses]
                     + [{"type": "Hostname", "address": name}])


def dual(i: int) -> dict:
    return node_obj(f"node-{i}", [v4(i), v6(i)], list(ips(i)))


def peer(name: str, ip: str, *subnets: str) -> Node:
    nets = [ip_network(s) for s in subnets]
    return Node(name, ip_address(ip), next((n for n in nets if n.version == 4), None),
                next((n for n in nets if n.version == 6), None))


def expect(src, want, what="peer set", timeout=5.0):
    want = tuple(sorted(want))
    wait_for(lambda: src.nodes() == want, timeout, f"{what} == {[x.name for x in want]}")
    assert src.nodes() == want


def lines(caplog, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records)


def test_dual_stack_nodes_get_both_subnets_and_the_ipv4_underlay(apiserver, start_source):
    apiserver.add(dual(1))
    # InternalIPs and podCIDRs listed IPv6 first: the IPv4 InternalIP is still the underlay
    apiserver.add(node_obj("node-2", [v6(2), v4(2)], [ips(2)[1], ips(2)[0]]))
    src, _ = start_source(DUAL)
    want = [peer("node-1", ips(1)[0], v4(1), v6(1)), peer("node-2", ips(2)[0], v4(2), v6(2))]
    expect(src, want, "initial list")
    apiserver.add(dual(3))
    want.append(peer("node-3", ips(3)[0], v4(3), v6(3)))
    expect(src, want, "after ADDED")
    assert [(n.name, n.underlay_family, str(n.subnet6)) for n in src.nodes()] == [
        (f"node-{i}", "ipv4", v6(i)) for i in (1, 2, 3)]


def test_ipv6_only_cluster_uses_the_ipv6_internal_ip(apiserver, start_source):
    apiserver.add(node_obj("node-1", [v6(1)], [ips(1)[1]]))
    apiserver.add(node_obj("node-2", [v6(2)], list(ips(2))))   # InternalIPs of both: IPv6 wins
    src, _ = start_source(V6ONLY)
    assert src.underlay_family == "ipv6"
    expect(src, [peer("node-1", ips(1)[1], v6(1)), peer("node-2", ips(2)[1], v6(2))])
    assert {n.subnet for n in src.nodes()} == {None}


def test_node_missing_the_ipv6_pod_cidr_is_skipped_once_then_joins_when_dual(apiserver, start_source,
                                                                              caplog):
    caplog.set_level(logging.INFO, LOGGER)
    apiserver.add(dual(1))
    apiserver.add(node_obj("worker-3", [v4(3)], [ips(3)[0]]))   # single-stack Node in a dual cluster
    src, notes = start_source(DUAL)
    expect(src, [peer("node-1", ips(1)[0], v4(1), v6(1))])
    text = "node worker-3: spec.podCIDRs: [10.244.3.0/24]: no IPv6 pod CIDR, the cluster has fd00:10:244::/56"
    wait_for(lambda: lines(caplog, text), what="the skip line")
    for _ in range(5):                 # heartbeats of the skipped Node: no new line
        apiserver.heartbeat("worker-3")
    apiserver.add(dual(2))             # a marker: once it is seen, so were the heartbeats
    expect(src, [peer("node-1", ips(1)[0], v4(1), v6(1)), peer("node-2", ips(2)[0], v4(2), v6(2))])
    assert lines(caplog, text) == 1, caplog.text
    # the Node turns dual-stack: an IPv6 podCIDR and an IPv6 InternalIP added
    apiserver.set_pod_cidrs("worker-3", [v4(3), v6(3)])
    apiserver.modify("worker-3", lambda o: o["status"]["addresses"].insert(
        1, {"type": "InternalIP", "address": ips(3)[1]}))
    expect(src, [peer("node-1", ips(1)[0], v4(1), v6(1)), peer("node-2", ips(2)[0], v4(2), v6(2)),
                 peer("worker-3", ips(3)[0], v4(3), v6(3))], "after the Node became dual-stack")
    assert lines(caplog, text) == 1


def test_ipv4_only_cluster_ignores_the_ipv6_half_of_dual_stack_nodes(apiserver, start_source):
    apiserver.add(dual(1))
    src, _ = start_source(Cluster())
    expect(src, [peer("node-1", ips(1)[0], v4(1))])


BAD6 = {
    # name: (podCIDRs, InternalIPs, expected log text naming field and value)
    "b-outside": ([v4(11), "fd00:10:245::/64"], [ips(11)[0]],
                  "node b-outside: spec.podCIDRs: fd00:10:245::/64: outside cluster.cidr fd00:10:244::/56"),
    "b-size": ([v4(12), "fd00:10:244:c::/80"], [ips(12)[0]],
               "node b-size: spec.podCIDRs: fd00:10:244:c::/80: wrong size"),
    "b-hostbits": ([v4(13), "fd00:10:244:d::1/64"], [ips(13)[0]],
                   "node b-hostbits: spec.podCIDRs: fd00:10:244:d::1/64: not canonical"),
    "b-spelling": ([v4(14), "fd00:10:244:000e::/64"], [ips(14)[0]],
                   "node b-spelling: spec.podCIDRs: fd00:10:244:000e::/64: not canonical"),
    "b-garbage": ([v4(15), "fd00:10:244:zz::/64"], [ips(15)[0]],
                  "node b-garbage: spec.podCIDRs: fd00:10:244:zz::/64: not an IPv4 CIDR or IPv6 CIDR"),
    "b-two-v4": ([v4(16), v4(17)], [ips(16)[0]],
                 "node b-two-v4: spec.podCIDRs: [10.244.16.0/24, 10.244.17.0/24]: no IPv6 pod CIDR"),
    "b-v6-ip": ([v4(18), v6(18)], ["fd00:56::12"],
                "node b-v6-ip: status.addresses[InternalIP]: fd00:56::12: not an IPv4 address: "
                "the underlay is IPv4"),
    # the same IPv6 podCIDR as node-1: the later name is skipped
    "z-overlap": ([v4(19), v6(1)], [ips(19)[0]],
                  "node z-overlap: spec.podCIDRs: fd00:10:244:1::/64: overlaps node node-1's spec.podCIDRs"),
}


def test_bad_ipv6_values_are_skipped_with_field_and_value(apiserver, start_source, caplog):
    caplog.set_level(logging.INFO, LOGGER)
    apiserver.add(dual(1))
    src, _ = start_source(DUAL)
    expect(src, [peer("node-1", ips(1)[0], v4(1), v6(1))])
    for name, (cidrs, addrs, _) in BAD6.items():
        apiserver.add(node_obj(name, cidrs, addrs))
    for name in BAD6:
        apiserver.heartbeat(name)
    apiserver.add(dual(2))
    expect(src, [peer("node-1", ips(1)[0], v4(1), v6(1)), peer("node-2", ips(2)[0], v4(2), v6(2))])
    for name, (_, _, text) in BAD6.items():
        assert lines(caplog, text) == 1, f"{name}: expected one line containing {text!r}\n{caplog.text}"
        assert lines(caplog, f"node {name}: ") == 1, f"{name}: one line in all\n{caplog.text}"


BAD6_UNDERLAY = {
    "u-link-local": ("fe80::1", "node u-link-local: status.addresses[InternalIP]: fe80::1: not usable"),
    "u-multicast": ("ff02::1", "node u-multicast: status.addresses[InternalIP]: ff02::1: not usable"),
    "u-v4-only": ("192.168.1.30", "node u-v4-only: status.addresses[InternalIP]: 192.168.1.30: "
                                  "not an IPv6 address: the underlay is IPv6"),
    "u-in-pods": ("fd00:10:244:ff::1", "node u-in-pods: status.addresses[InternalIP]: fd00:10:244:ff::1: "
                                       "inside cluster.cidr fd00:10:244::/56"),
}


def test_ipv6_underlay_values_are_checked(apiserver, start_source, caplog):
    caplog.set_level(logging.INFO, LOGGER)
    apiserver.add(node_obj("node-1", [v6(1)], [ips(1)[1]]))
    for i, (name, (addr, _)) in enumerate(BAD6_UNDERLAY.items(), start=20):
        apiserver.add(node_obj(name, [v6(i)], [addr]))
    src, _ = start_source(V6ONLY)
    expect(src, [peer("node-1", ips(1)[1], v6(1))])
    for name, (_, text) in BAD6_UNDERLAY.items():
        wait_for(lambda: lines(caplog, text) == 1, what=f"{name}: one line containing {text!r}")


def test_underlay_family_option_picks_the_ipv6_internal_ip(apiserver, start_source, caplog):
    caplog.set_level(logging.INFO, LOGGER)
    apiserver.add(dual(1))
    apiserver.add(node_obj("v4-only-ip", [v4(5), v6(5)], [ips(5)[0]]))
    src, _ = start_source(DUAL, underlay_family="ipv6")
    expect(src, [peer("node-1", ips(1)[1], v4(1), v6(1))])
    wait_for(lambda: lines(caplog, "node v4-only-ip: status.addresses[InternalIP]: 192.168.1.5: not an IPv6 "
                                   "address: the underlay is IPv6"), what="the skip line")


def test_bad_underlay_family_is_a_config_error():
    from topology.config import parse_config

    doc = {"cluster": {"cidr": "10.244.0.0/16,fd00:10:244::/56"}, "source": "kubernetes",
           "kubernetes": {"underlay_family": "ipv5"}, "local": {"node": "node-1"}}
    with pytest.raises(ConfigError, match=re.escape("kubernetes.underlay_family: ipv5: must be one of ipv4, ipv6")):
        parse_config(doc)


def test_underlay_family_in_the_config_file_reaches_the_source(kubeconfig):
    from ovs_mesh.agent.session import _kubernetes_source
    from topology.config import parse_config

    doc = {"cluster": {"cidr": "10.244.0.0/16,fd00:10:244::/56"}, "source": "kubernetes",
           "kubernetes": {"kubeconfig": kubeconfig, "underlay_family": "ipv6"}, "local": {"node": "node-1"}}
    src = _kubernetes_source(parse_config(doc))
    try:
        assert src.underlay_family == "ipv6" and src.cluster.families == ("ipv4", "ipv6")
    finally:
        src.stop()
    doc["kubernetes"]["underlay_family"] = "IPv6"
    with pytest.raises(ConfigError, match=re.escape("kubernetes.underlay_family: IPv6: must be one of ipv4, ipv6")):
        parse_config(doc)
    del doc["kubernetes"]["underlay_family"]
    src = _kubernetes_source(parse_config(doc))
    try:
        assert src.underlay_family == "ipv4"   # a dual-stack cluster defaults to the IPv4 underlay
    finally:
        src.stop()
