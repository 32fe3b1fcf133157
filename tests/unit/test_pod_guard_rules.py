"""The per-pod guard's pure parts: a pod from a CNI result, the table's text and set entries,
the pods read back from `nft -j`, and which pods the agent wants (`host.desired.pod_guard`)."""
from __future__ import annotations

import pytest

from ovs_mesh.host.desired import pod_guard
from ovs_mesh.host.model import HostFacts, HostState, PodGuard
from ovs_mesh.pod_guard import rules
from ovs_mesh.pod_guard.rules import GuardedPod

RESULT = {  # what the bridge plugin returns for a dual-stack pod
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "kbr0", "mac": "0a:58:0a:f4:01:01"}, {"name": "veth1234abcd", "mac": "aa:aa:aa:aa:aa:aa"},
                   {"name": "eth0", "mac": "32:42:CB:4D:D6:82", "sandbox": "/run/netns/p1"}],
    "ips": [{"interface": 2, "address": "10.244.1.5/24", "gateway": "10.244.1.1"},
            {"interface": 2, "address": "fd00:10:244:1::5/64", "gateway": "fd00:10:244:1::1"}],
}
POD = GuardedPod("veth1234abcd", "32:42:cb:4d:d6:82", ("10.244.1.5", "fd00:10:244:1::5"))


def test_a_pod_from_the_bridge_plugins_result():
    assert rules.pod_from_cni_result(RESULT, "kbr0", "/run/netns/p1", "eth0") == POD


@pytest.mark.parametrize("broken, text", [
    ({"interfaces": []}, "no host veth"),
    ({"interfaces": RESULT["interfaces"][:2] + [{"name": "eth0", "sandbox": "/x"}]}, "has no MAC"),
    ({"ips": []}, "no address"),
])
def test_a_result_without_what_the_guard_needs_is_refused(broken, text):
    with pytest.raises(ValueError, match=text):
        rules.pod_from_cni_result({**RESULT, **broken}, "kbr0", "/run/netns/p1", "eth0")


def test_the_entries_of_a_pod_in_every_set():
    lines = rules.elements("add", [POD]).splitlines()
    assert lines == [
        'add element bridge ovs_mesh_guard pod_ports { "veth1234abcd" }',
        'add element bridge ovs_mesh_guard pod_macs { "veth1234abcd" . 32:42:cb:4d:d6:82 }',
        'add element bridge ovs_mesh_guard pod_ip4 { "veth1234abcd" . 10.244.1.5 }',
        'add element bridge ovs_mesh_guard pod_ip6 { "veth1234abcd" . fd00:10:244:1::5 }',
        'add element bridge ovs_mesh_guard pod_na6 { "veth1234abcd" . 0xfd000010024400010000000000000005 }']


@pytest.mark.parametrize("scoped, unknown", [(True, "drop"), (False, "accept")])
def test_the_table_names_its_parameters_and_holds_unknown_ports(scoped, unknown):
    text = rules.ruleset("kbr0", "obr0", scoped, [POD])
    comment = text.split('comment "', 1)[1].split('"', 1)[0]
    assert rules.parse_comment(comment) == ("kbr0", "obr0", scoped)
    assert f"iifname != @pod_ports {unknown}" in text
    assert ('meta ibrname != "kbr0" accept' in text) == scoped
    assert text.endswith(rules.elements("add", [POD]))


def test_pods_read_back_from_the_sets():
    sets = {"pod_ports": ["veth1234abcd", "vethgone"],
            "pod_macs": [{"concat": ["veth1234abcd", "32:42:cb:4d:d6:82"]},
                         {"concat": ["vethgone", "02:00:00:00:00:01"]}],
            "pod_ip4": [{"concat": ["veth1234abcd", "10.244.1.5"]}],
            "pod_ip6": [{"concat": ["veth1234abcd", "fd00:10:244:1::5"]}]}
    assert rules.pods_from_sets(sets) == (POD, GuardedPod("vethgone", "02:00:00:00:00:01", ()))


def test_the_agent_keeps_what_the_plugin_put_learns_the_rest_and_drops_the_gone():
    other = GuardedPod("vethlearned", "02:00:00:00:00:02", ("10.244.1.9",))
    gone = GuardedPod("vethgone", "02:00:00:00:00:01", ("10.244.1.7",))
    observed = HostState((PodGuard("kbr0", "obr0", True, (POD, gone)),),
                         HostFacts(pod_ports=("veth1234abcd", "vethlearned", "vethnobody"), learned_pods=(other,)))
    assert pod_guard(observed) == PodGuard("kbr0", "obr0", True, (POD, other))


def test_pod_guard_off_leaves_no_table_and_no_plugin():
    from ipaddress import IPv4Network

    from ovs_mesh.host import cni
    from ovs_mesh.host.desired import desired_host
    from topology.config import parse_config

    cfg = parse_config({"cluster": {"cidr": "10.244.0.0/16"}, "local": {"node": "node-1", "pod_guard": False},
                        "nodes": [{"name": "node-1", "ip": "192.168.56.11", "subnet": "10.244.1.0/24"}]})
    assert desired_host(cfg, 1450, HostState()).of(PodGuard) == []
    assert [p["type"] for p in cni.conflist(IPv4Network("10.244.1.0/24"), 1450, guard=False)["plugins"]] == ["bridge"]
    with pytest.raises(Exception, match=r"local.pod_guard: yes: must be true or false"):
        parse_config({"cluster": {"cidr": "10.244.0.0/16"}, "local": {"node": "node-1", "pod_guard": "yes"},
                      "nodes": [{"name": "node-1", "ip": "192.168.56.11", "subnet": "10.244.1.0/24"}]})


def test_pods_made_before_the_guard_are_learned_and_a_shared_address_goes_to_none(monkeypatch):
    from ipaddress import ip_network

    from ovs_mesh.pod_guard import observe

    def addrs(ifindex, mac, *ips):
        return [{"ifindex": ifindex, "address": mac,
                 "addr_info": [{"local": "fe80::1", "scope": "link"},
                               *({"local": a, "scope": "global"} for a in ips)]}]
    answers = {("netns", "list-id"): [{"nsid": 0, "name": "pod-a"}, {"nsid": 1, "name": "pod-b"}],
               ("-n", "pod-a", "addr", "show"): addrs(2, "02:00:00:00:00:0A", "10.244.1.5", "10.244.1.6", "192.0.2.1"),
               ("-n", "pod-b", "addr", "show"): addrs(2, "02:00:00:00:00:0b", "10.244.1.6")}
    monkeypatch.setattr(observe, "_ip", lambda *args: answers.get(args, []))
    ports = [{"ifname": "veth-a", "link_index": 2, "link_netnsid": 0},
             {"ifname": "veth-b", "link_index": 2, "link_netnsid": 1},
             {"ifname": "veth-c", "link_index": 2, "link_netnsid": 7}]   # not a named namespace
    assert observe.learn(ports, [ip_network("10.244.1.0/24")]) == [
        GuardedPod("veth-a", "02:00:00:00:00:0a", ("10.244.1.5",)),   # .6 held by both, 192.0.2.1 not the node's
        GuardedPod("veth-b", "02:00:00:00:00:0b", ())]
