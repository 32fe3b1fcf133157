"""Dual-stack and IPv6 config: the YAML shape, every rejected IPv6
input naming field and value, per-family allocation."""
import copy
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from ovs_mesh.config.file import load_yaml
from tests.helpers import allocate_cli, base_config, base_config_v6, run_cli, write_config
from topology.allocate import AllocationError, allocate
from topology.config import ConfigError, check_nodes, parse_config
from topology.model import Cluster


def errors_of(data, **kw):
    with pytest.raises(ConfigError) as e:
        parse_config(data, **kw)
    return e.value.errors


def test_dual_stack_file_of_the_contract():
    text = """
cluster:
  cidr: 10.244.0.0/16,fd00:10:244::/56
  node_prefix: 24
  node_prefix_ipv6: 64
nodes:
  - name: node-1
    ip: 192.168.56.11
    subnet: 10.244.0.0/24,fd00:10:244::/64
  - name: node-2
    ip: 192.168.56.12
    subnet: [10.244.1.0/24, "fd00:10:244:1::/64"]
  - {name: node-3, ip: 192.168.56.13}
local: {node: node-1, datapath: dummy, host: false}
"""
    c = parse_config(load_yaml(text))
    assert c.cluster.cidr == IPv4Network("10.244.0.0/16")
    assert c.cluster.cidr6 == IPv6Network("fd00:10:244::/56") and c.cluster.node_prefix6 == 64
    assert c.cluster.families == ("ipv4", "ipv6")
    n1, n2, n3 = c.nodes
    assert n1.subnet6 == IPv6Network("fd00:10:244::/64") and n1.gateway6 == IPv6Address("fd00:10:244::1")
    assert n2.subnets == (IPv4Network("10.244.1.0/24"), IPv6Network("fd00:10:244:1::/64"))
    assert n3.subnet is None and n3.subnet6 is None
    # a YAML list of two for the cluster, the IPv6 range first: the same cluster
    d = base_config_v6()
    d["cluster"]["cidr"] = ["fd00:10:244::/56", "10.244.0.0/16"]
    assert parse_config(d).cluster.cidrs == c.cluster.cidrs


def test_ipv6_only_cluster_over_ipv6_underlay():
    c = parse_config(base_config_v6(family="ipv6"))
    assert c.cluster.cidr is None and c.cluster.families == ("ipv6",)
    node = c.local_node
    assert node.ip == IPv6Address("fd00:56::11") and node.underlay_family == "ipv6"
    assert node.subnet is None and node.subnet6 == IPv6Network("fd00:10:244:1::/64")
    assert c.cluster.pod_mtu(1500, node.underlay_family) == 1430


def test_underlay_family_is_independent_of_the_pod_families():
    # IPv4-only pods over an IPv6 underlay, and IPv6-only pods over an IPv4 underlay (OVS
    # tunnels carry either inside either: tests/sandbox/test_ipv6_datapath.py)
    d = base_config()
    for i, node in enumerate(d["nodes"], 1):
        node["ip"] = f"fd00:56::{10 + i}"
    assert parse_config(d).local_node.underlay_family == "ipv6"
    assert parse_config(base_config_v6(family="ipv6", underlay="ipv4")).local_node.ip == IPv4Address("192.168.56.11")
    # ULA and global ranges for pods and underlay
    d = base_config_v6(family="ipv6")
    d["cluster"]["cidr"] = "2001:db8:42::/56"
    for i, node in enumerate(d["nodes"], 1):
        node["subnet"] = f"2001:db8:42:{i}::/64"
        node["ip"] = f"2a01:4f8::{i}"
    assert parse_config(d).local_node.subnet6 == IPv6Network("2001:db8:42:1::/64")


def test_existing_ipv4_config_unchanged():
    c = parse_config(base_config())
    assert c.cluster.cidr6 is None and c.cluster.families == ("ipv4",)
    assert all(n.subnet6 is None for n in c.nodes)


def mutate(fn, **kw):
    d = base_config_v6(**kw)
    fn(d)
    return d


def cl(**kv):
    return lambda d: d["cluster"].update(kv)


def node(i, **kv):
    return lambda d: d["nodes"][i].update(kv)


# (description, mutation of a dual-stack base_config_v6(), expected substrings: field, value, reason)
BAD6 = [
    ("v6 cidr not canonical", cl(cidr="10.244.0.0/16,fd00:0:0::/56"),
     ["cluster.cidr", "fd00:0:0::/56", "not canonical: write it as fd00::/56"]),
    ("v6 cidr upper case", cl(cidr="10.244.0.0/16,FD00:10:244::/56"),
     ["cluster.cidr", "FD00:10:244::/56", "write it as fd00:10:244::/56"]),
    ("v6 cidr host bits", cl(cidr="10.244.0.0/16,fd00:10:244::1/56"),
     ["cluster.cidr", "fd00:10:244::1/56", "host bits set (did you mean fd00:10:244::/56?)"]),
    ("v6 cidr no prefix", cl(cidr="10.244.0.0/16,fd00:10:244::"), ["cluster.cidr", "fd00:10:244::", "no /prefix"]),
    ("v6 cidr garbage", cl(cidr="10.244.0.0/16,fd00::zz/56"), ["cluster.cidr", "fd00::zz/56", "not an IPv4 CIDR or IPv6"]),
    ("v6 cidr link-local", cl(cidr="10.244.0.0/16,fe80::/56"), ["cluster.cidr", "fe80::/56", "link-local"]),
    ("v6 cidr multicast", cl(cidr="10.244.0.0/16,ff05::/56"), ["cluster.cidr", "ff05::/56", "multicast"]),
    ("v6 cidr ipv4-mapped", cl(cidr="10.244.0.0/16,::ffff:0:0/104"), ["cluster.cidr", "::ffff:0:0/104", "IPv4-mapped"]),
    ("v6 cidr loopback", cl(cidr="10.244.0.0/16,::1/128"), ["cluster.cidr", "::1/128", "loopback"]),
    ("v6 cidr covers everything", cl(cidr="10.244.0.0/16,::/0"), ["cluster.cidr", "::/0", "overlaps"]),
    ("v6 cidr zone", cl(cidr="10.244.0.0/16,fd00::%eth0/56"), ["cluster.cidr", "fd00::%eth0/56"]),
    ("two v6 cidrs", cl(cidr="fd00:10:244::/56,fd00:11::/56"), ["cluster.cidr", "fd00:11::/56", "two IPv6 CIDRs"]),
    ("three cidrs", cl(cidr=["10.244.0.0/16", "fd00:10:244::/56", "fd00:11::/56"]), ["cluster.cidr", "at most two"]),
    ("empty cidr list", cl(cidr=[]), ["cluster.cidr", "[]", "must hold a CIDR"]),
    ("v6 cidr too small for /64", cl(cidr="10.244.0.0/16,fd00:10:244::/64"),
     ["cluster.cidr", "fd00:10:244::/64", "too small for /64 node subnets"]),
    ("v6 cidr too large for /64", cl(cidr="10.244.0.0/16,fd00:10::/32"),
     ["cluster.cidr", "fd00:10::/32", "at most 16 bits"]),
    ("node_prefix_ipv6 too short", cl(node_prefix_ipv6=56), ["cluster.node_prefix_ipv6", "56", "longer than"]),
    ("node_prefix_ipv6 mask diff", cl(cidr="10.244.0.0/16,fd00:10::/40", node_prefix_ipv6=64),
     ["cluster.node_prefix_ipv6", "64", "at most 16 bits longer than cluster.cidr fd00:10::/40"]),
    ("node_prefix_ipv6 /124", cl(node_prefix_ipv6=124), ["cluster.node_prefix_ipv6", "124", "between 8 and 120"]),
    ("node_prefix_ipv6 not int", cl(node_prefix_ipv6="64"), ["cluster.node_prefix_ipv6", "64", "integer"]),
    ("mtu below ipv6 minimum", cl(mtu=1000), ["cluster.mtu", "1000", "IPv6 pods need at least 1280"]),
    ("v6 subnet not canonical", node(1, subnet=["10.244.2.0/24", "fd00:10:244:2:0::/64"]),
     ["nodes[1].subnet", "fd00:10:244:2:0::/64", "write it as fd00:10:244:2::/64"]),
    ("v6 subnet host bits", node(1, subnet="10.244.2.0/24,fd00:10:244:2::1/64"),
     ["nodes[1].subnet", "fd00:10:244:2::1/64", "host bits set"]),
    ("v6 subnet outside", node(2, subnet=["10.244.3.0/24", "fd00:99::/64"]),
     ["nodes[2].subnet", "fd00:99::/64", "outside cluster.cidr fd00:10:244::/56"]),
    ("v6 subnet wrong size", node(1, subnet=["10.244.2.0/24", "fd00:10:244:2::/80"]),
     ["nodes[1].subnet", "fd00:10:244:2::/80", "wrong size: cluster.node_prefix_ipv6 is /64"]),
    ("v6 subnet overlap", node(2, subnet=["10.244.3.0/24", "fd00:10:244:2::/64"]),
     ["nodes[2].subnet", "fd00:10:244:2::/64", "overlaps nodes[1].subnet fd00:10:244:2::/64"]),
    ("v6 subnet link-local", node(1, subnet=["10.244.2.0/24", "fe80::/64"]), ["nodes[1].subnet", "fe80::/64", "link-local"]),
    ("v6 subnet multicast", node(1, subnet=["10.244.2.0/24", "ff02::/64"]), ["nodes[1].subnet", "ff02::/64", "multicast"]),
    ("v6 subnet ipv4-mapped", node(1, subnet=["10.244.2.0/24", "::ffff:10.244.2.0/120"]),
     ["nodes[1].subnet", "::ffff:10.244.2.0/120", "IPv4-mapped"]),
    ("two v6 subnets", node(1, subnet="fd00:10:244:2::/64,fd00:10:244:3::/64"), ["nodes[1].subnet", "two IPv6 CIDRs"]),
    ("three subnets", node(1, subnet=["10.244.2.0/24", "fd00:10:244:2::/64", "10.244.3.0/24"]),
     ["nodes[1].subnet", "at most two"]),
    ("subnet not a list", node(1, subnet={"v6": "fd00:10:244:2::/64"}), ["nodes[1].subnet", "one per family"]),
    ("v6 node ip link-local", node(1, ip="fe80::12"), ["nodes[1].ip", "fe80::12", "link-local"]),
    ("v6 node ip multicast", node(1, ip="ff02::2"), ["nodes[1].ip", "ff02::2", "multicast"]),
    ("v6 node ip loopback", node(1, ip="::1"), ["nodes[1].ip", "::1", "loopback"]),
    ("v6 node ip unspecified", node(1, ip="::"), ["nodes[1].ip", "::", "unspecified"]),
    ("v6 node ip ipv4-mapped", node(1, ip="::ffff:192.168.56.12"), ["nodes[1].ip", "::ffff:192.168.56.12", "IPv4-mapped"]),
    ("v6 node ip site-local", node(1, ip="fec0::12"), ["nodes[1].ip", "fec0::12", "site-local"]),
    ("v6 node ip zone", node(1, ip="fd00:56::12%eth1"), ["nodes[1].ip", "fd00:56::12%eth1", "zone index"]),
    ("v6 node ip not canonical", node(1, ip="fd00:56:0::12"), ["nodes[1].ip", "fd00:56:0::12", "write it as fd00:56::12"]),
    ("v6 node ip in pod range", node(1, ip="fd00:10:244:7::12"),
     ["nodes[1].ip", "fd00:10:244:7::12", "inside cluster.cidr fd00:10:244::/56"]),
    ("mixed underlay families", node(2, ip="fd00:56::13"),
     ["nodes[2].ip", "fd00:56::13", "an IPv6 underlay address, but nodes[0].ip is IPv4"]),
    ("v4 subnet in ipv6-only cluster", lambda d: d["nodes"][1].update(subnet=["10.244.2.0/24", "fd00:10:244:2::/64"]),
     ["nodes[1].subnet", "10.244.2.0/24", "the cluster has no IPv4 range (cluster.cidr fd00:10:244::/56)"]),
    ("v6 subnet in ipv4-only cluster", cl(cidr="10.244.0.0/16"),
     ["nodes[0].subnet", "fd00:10:244:1::/64", "the cluster has no IPv6 range (cluster.cidr 10.244.0.0/16)"]),
    ("too many nodes for v6 range", cl(cidr="10.244.0.0/16,fd00:10:244::/63"),
     ["nodes", "3 nodes", "more than cluster.cidr fd00:10:244::/63 holds at /64 (2)"]),
]
# the base of one case is an IPv6-only cluster: ("v4 subnet in ipv6-only cluster")
V6_ONLY = {"v4 subnet in ipv6-only cluster"}


def bad6_config(desc, fn):
    return mutate(fn, family="ipv6") if desc in V6_ONLY else mutate(fn)


@pytest.mark.parametrize("desc,fn,expect", BAD6, ids=[b[0] for b in BAD6])
def test_rejected_ipv6_input_names_field_and_value(desc, fn, expect):
    errs = errors_of(bad6_config(desc, fn))
    text = "\n".join(errs)
    for part in expect:
        assert part in text, f"{desc}: {part!r} not in {errs}"


def test_kubernetes_style_check_requires_every_family():
    cluster = parse_config(base_config_v6()).cluster
    raw = [{"name": "a", "ip": "192.168.56.11", "subnet": ["10.244.1.0/24", "fd00:10:244:1::/64"]},
           {"name": "b", "ip": "192.168.56.12", "subnet": "10.244.2.0/24"},
           {"name": "c", "ip": "192.168.56.13", "subnet": ["10.244.3.0/24", "fe80::/64"]}]
    good, problems, bad = check_nodes(raw, cluster, path="node", require_subnet=True)
    assert [n.name for n in good] == ["a"] and bad == {1, 2}
    text = [str(p) for p in problems]
    assert "node[1].subnet: 10.244.2.0/24: no IPv6 subnet: the cluster has fd00:10:244::/56" in text[0]
    assert len(text) == 2 and "node[2].subnet: fe80::/64" in text[1]   # a bad one is not also "missing"


def test_allocate_per_family_stable_lowest_free():
    c = Cluster(cidr6=IPv6Network("fd00:10:244::/56"))
    v6 = allocate(c, [None, IPv6Network("fd00:10:244::/64"), None], "ipv6")
    assert v6 == [IPv6Network("fd00:10:244:1::/64"), IPv6Network("fd00:10:244::/64"),
                  IPv6Network("fd00:10:244:2::/64")]
    assert allocate(c, v6, "ipv6") == v6
    assert allocate(c, [None], "ipv4") == [IPv4Network("10.244.0.0/24")]
    only6 = Cluster(cidr=None, cidr6=IPv6Network("fd00:10:244::/63"))
    assert allocate(only6, [None]) == [IPv6Network("fd00:10:244::/64")]   # the cluster's family
    with pytest.raises(AllocationError, match="no free /64"):
        allocate(only6, [None, None, None])


CONFIG = """# dual
cluster:
  cidr: 10.244.0.0/16,fd00:10:244::/56   # both families
nodes:
  - {name: node-1, ip: 192.168.56.11, subnet: 10.244.0.0/24}
  - {name: node-2, ip: 192.168.56.12, subnet: "fd00:10:244::/64"}
  - {name: node-3, ip: 192.168.56.13, subnet: [10.244.1.0/24, "fd00:10:244:1::/64"]}
  - name: node-4
    ip: 192.168.56.14
local: {node: node-1, host: false, datapath: dummy}
"""


def test_allocate_cli_fills_each_family_and_keeps_layout(tmp_path):
    path = tmp_path / "c.yaml"
    out, text = allocate_cli(path, CONFIG, ("# dual", "# both families"))
    assert "allocated node-1: 10.244.0.0/24,fd00:10:244:2::/64" in out
    assert "allocated node-2: 10.244.2.0/24,fd00:10:244::/64" in out
    assert "allocated node-4: 10.244.3.0/24,fd00:10:244:3::/64" in out and "node-3" not in out
    c = parse_config(load_yaml(text), require_local=False)
    assert [n.subnets for n in c.nodes][2] == (IPv4Network("10.244.1.0/24"), IPv6Network("fd00:10:244:1::/64"))
    # an IPv6-only file: plain strings, as an IPv4-only file gets today
    data = base_config_v6(family="ipv6")
    for node in data["nodes"]:
        node.pop("subnet")
    write_config(str(path), data)
    assert run_cli("--config", str(path), "allocate").returncode == 0
    assert "subnet: fd00:10:244::/64" in path.read_text().replace("'", "")


def test_cli_exit_2_for_bad_ipv6_nothing_written(tmp_path):
    path = tmp_path / "c.yaml"
    data = base_config_v6()
    data["nodes"][1]["ip"] = "fe80::12"
    write_config(str(path), data)
    before = path.read_text()
    for cmd in ("validate", "allocate"):
        r = run_cli("--config", str(path), cmd)
        assert r.returncode == 2 and "nodes[1].ip: fe80::12: not usable as a tunnel endpoint" in r.stderr, r.stderr
    assert path.read_text() == before


def test_ipv6_config_is_not_mutated():
    d = base_config_v6()
    before = copy.deepcopy(d)
    parse_config(d)
    assert d == before


def test_ipv6_corpus_files_refused_quickly(tmp_path):
    """The IPv6 entries of tests/config_corpus.py (test_config_file_adversarial runs them
    through every reader): refused at once, with the reason."""
    import time

    from ovs_mesh.config.file import load_config
    from tests import config_corpus

    paths = config_corpus.build(str(tmp_path))
    expect = {"ipv6-range-2^117-subnets": "cluster.node_prefix_ipv6: 120: at most 16 bits longer than cluster.cidr 2000::/3",
              "ipv6-whole-space": "cluster.cidr: ::/0: not usable for pods: overlaps",
              "ipv6-comma-bomb": "cluster.cidr: fd00::/56,fd00::/56,",
              "ipv6-mapped-underlay": "nodes[0].ip: ::ffff:192.168.56.11: not usable as a tunnel endpoint"}
    for name, part in expect.items():
        t0 = time.process_time()
        with pytest.raises(ConfigError) as e:
            load_config(paths[name], default_node="node-1")
        assert time.process_time() - t0 < 1.0, name
        assert part in str(e.value), (name, str(e.value))
