"""KubernetesSource against a fake API server, through the real client and a kubeconfig.

After every step the exact validated peer set is checked (polling with a
deadline: the source works on its own thread).
"""
from __future__ import annotations

import logging
import re
import threading
from ipaddress import IPv4Address, IPv4Network

import pytest
from kubernetes import client as k8s_client

from ovs_mesh.sources.kubernetes_source import KubernetesSource
from tests.helpers import wait_for
from tests.kube.fake_apiserver import make_node, timestamp
from topology.config import ConfigError, parse_config
from topology.model import Cluster, Kubernetes, Node

LOGGER = "ovs_mesh.sources.kubernetes_source"


def peers(*entries: tuple[str, str, str]) -> tuple[Node, ...]:
    return tuple(sorted(Node(n, IPv4Address(ip), IPv4Network(c)) for n, ip, c in entries))


def n(i: int) -> tuple[str, str, str]:
    """The i-th good node: (name, InternalIP, podCIDR)."""
    return (f"node-{i:03d}", f"192.168.{i // 250}.{i % 250 + 1}", f"10.244.{i}.0/24")


def node(i: int) -> dict:
    return make_node(*n(i))


def expect(src, want, what="peer set", timeout=5.0):
    wait_for(lambda: src.nodes() == want, timeout, f"{what} == {[x.name for x in want]}")
    assert src.nodes() == want


def test_initial_list_then_add_modify_delete(apiserver, start_source):
    apiserver.add(node(1))
    apiserver.add(node(2))
    src, notes = start_source()
    expect(src, peers(n(1), n(2)), "initial list")
    assert apiserver.count(watch=False) == 1
    wait_for(apiserver.watching, what="a watch to be open")
    watch = [r for r in apiserver.requests if r["watch"]][0]
    assert watch["bookmarks"] and watch["rv"] == "102" and watch["timeout"]

    apiserver.add(node(3))
    expect(src, peers(n(1), n(2), n(3)), "after ADDED")

    apiserver.set_ip("node-002", "192.168.7.7")
    expect(src, peers(n(1), ("node-002", "192.168.7.7", "10.244.2.0/24"), n(3)), "after IP change")

    apiserver.delete("node-001")
    expect(src, peers(("node-002", "192.168.7.7", "10.244.2.0/24"), n(3)), "after DELETED")
    assert apiserver.count(watch=False) == 1, "plain events must not cause a relist"


def test_pod_cidr_set_later(apiserver, start_source, caplog):
    caplog.set_level(logging.INFO, LOGGER)
    apiserver.add(node(1))
    apiserver.add(make_node("late", "192.168.50.1"))  # kubelet registered, no podCIDR yet
    src, _ = start_source()
    expect(src, peers(n(1)))
    assert "node late: spec.podCIDR: not set yet" in caplog.text
    apiserver.set_pod_cidr("late", "10.244.50.0/24")
    expect(src, peers(n(1), ("late", "192.168.50.1", "10.244.50.0/24")), "after podCIDR set")


def test_heartbeats_do_not_notify(apiserver, start_source):
    apiserver.add(node(1))
    src, notes = start_source()
    expect(src, peers(n(1)))
    base = notes.count
    assert base == 1
    for _ in range(20):
        apiserver.heartbeat("node-001")
    apiserver.add(node(2))  # a marker event after the heartbeats: once it is seen, so were they
    expect(src, peers(n(1), n(2)))
    assert notes.count == base + 1


def test_watch_expiry_resumes_from_last_resource_version(apiserver, start_source):
    apiserver.add(node(1))
    src, _ = start_source(watch_timeout_seconds=1)  # the server closes each watch after 1 s
    expect(src, peers(n(1)))
    wait_for(lambda: apiserver.count(watch=True) >= 3, what="watches re-opened after expiry")
    apiserver.add(node(2))
    expect(src, peers(n(1), n(2)), "event after expiries")
    assert apiserver.count(watch=False) == 1, "expiry must resume the watch, not relist"
    assert all(r["timeout"] == "1" for r in apiserver.requests if r["watch"])


def test_bookmark_advances_resource_version(apiserver, start_source):
    apiserver.add(node(1))
    src, _ = start_source()
    expect(src, peers(n(1)))
    wait_for(apiserver.watching, what="a watch")
    apiserver.heartbeat("node-001")  # rv moves on; a bookmark then reports it
    apiserver.heartbeat("node-001")
    apiserver.bookmark()
    rv = str(apiserver.rv)
    apiserver.expire_watches()
    wait_for(lambda: any(r["watch"] and r["rv"] == rv for r in apiserver.requests),
             what=f"a watch resumed from the bookmark's resourceVersion {rv}")
    apiserver.delete("node-001")
    expect(src, (), "after delete")


@pytest.mark.parametrize("gone_as_http", [False, True], ids=["error-event", "http-410"])
def test_410_gone_relists_and_state_is_exact(apiserver, start_source, gone_as_http):
    apiserver.gone_as_http = gone_as_http
    for i in (1, 2, 3):
        apiserver.add(node(i))
    src, _ = start_source()
    expect(src, peers(n(1), n(2), n(3)))
    wait_for(apiserver.watching, what="a watch")
    # Changes the watch never delivers (compacted away), then 410.
    apiserver.delete("node-002", record=False)
    apiserver.add(node(4), record=False)
    apiserver.modify("node-003", lambda o: o["status"]["addresses"][0].update(address="192.168.9.9"),
                     record=False)
    if gone_as_http:
        apiserver.compact()
        apiserver.drop_connections()  # the next watch request then gets HTTP 410
    else:
        apiserver.compact()  # the open watch gets an ERROR event with a 410 Status
    expect(src, peers(n(1), ("node-003", "192.168.9.9", "10.244.3.0/24"), n(4)), "after relist")
    assert apiserver.count(watch=False) == 2
    apiserver.add(node(5))
    expect(src, peers(n(1), ("node-003", "192.168.9.9", "10.244.3.0/24"), n(4), n(5)),
           "events after the relist")


def test_connection_drop_resumes(apiserver, start_source):
    apiserver.add(node(1))
    src, _ = start_source()
    expect(src, peers(n(1)))
    wait_for(apiserver.watching, what="a watch")
    watches = apiserver.count(watch=True)
    apiserver.drop_connections()
    apiserver.add(node(2))
    expect(src, peers(n(1), n(2)), "after the drop")
    assert apiserver.count(watch=True) > watches
    assert apiserver.count(watch=False) == 1, "a drop resumes from the resourceVersion"


def test_api_outage_keeps_peers_then_changes_resume(apiserver, start_source, caplog):
    caplog.set_level(logging.WARNING, LOGGER)
    for i in (1, 2):
        apiserver.add(node(i))
    src, notes = start_source()
    expect(src, peers(n(1), n(2)))
    before = notes.count
    apiserver.down()
    wait_for(lambda: src.failures >= 3, what="several failed reconnects")
    assert src.nodes() == peers(n(1), n(2)), "an outage must not remove peers"
    assert not src.connected
    assert notes.count == before
    delays = [float(m) for m in re.findall(r"keeping 2 peers, retrying in ([0-9.]+) s", caplog.text)]
    assert len(delays) >= 3 and all(0 < d <= 0.3 for d in delays), delays  # capped backoff
    apiserver.delete("node-001")  # changes while the client cannot see them
    apiserver.add(node(3))
    apiserver.up()
    expect(src, peers(n(2), n(3)), "after the API is back")
    wait_for(lambda: src.connected, what="connected again")
    apiserver.add(node(4))
    expect(src, peers(n(2), n(3), n(4)), "events after the outage")


BAD = {
    # name: (node object, expected log text naming field and value)
    "bad-malformed": (make_node("bad-malformed", "192.168.1.10", "10.244.300.0/24"),
                      "node bad-malformed: spec.podCIDR: 10.244.300.0/24: not an IPv4 CIDR"),
    "bad-hostbits": (make_node("bad-hostbits", "192.168.1.11", "10.244.11.1/24"),
                     "node bad-hostbits: spec.podCIDR: 10.244.11.1/24: not canonical"),
    "bad-outside": (make_node("bad-outside", "192.168.1.12", "10.245.0.0/24"),
                    "node bad-outside: spec.podCIDR: 10.245.0.0/24: outside cluster.cidr 10.244.0.0/16"),
    "bad-size": (make_node("bad-size", "192.168.1.13", "10.244.13.0/25"),
                 "node bad-size: spec.podCIDR: 10.244.13.0/25: wrong size"),
    "bad-v6only": (make_node("bad-v6only", "fd00::14", "10.244.14.0/24"),
                   "node bad-v6only: status.addresses[InternalIP]: fd00::14: not an IPv4 address"),
    "bad-inrange": (make_node("bad-inrange", "10.244.200.15", "10.244.15.0/24"),
                    "node bad-inrange: status.addresses[InternalIP]: 10.244.200.15: inside cluster.cidr"),
    "bad-noip": (make_node("bad-noip", None, "10.244.16.0/24",
                           addresses=[{"type": "ExternalIP", "address": "203.0.113.16"}]),
                 "node bad-noip: status.addresses: no InternalIP address"),
    "nocidr": (make_node("nocidr", "192.168.1.17"), "node nocidr: spec.podCIDR: not set yet"),
    # same podCIDR as node-001, which is older: the claimant is kept out
    "zz-overlap": (make_node("zz-overlap", "192.168.1.18", "10.244.1.0/24"),
                   "node zz-overlap: spec.podCIDR: 10.244.1.0/24: overlaps node node-001's spec.podCIDR"),
    "zz-dupip": (make_node("zz-dupip", "192.168.0.3", "10.244.19.0/24"),
                 "node zz-dupip: status.addresses[InternalIP]: 192.168.0.3: duplicate of node node-002's"),
}


def test_bad_nodes_are_skipped_and_logged_once(apiserver, start_source, caplog):
    caplog.set_level(logging.INFO, LOGGER)
    apiserver.add(node(1))
    apiserver.add(BAD["bad-malformed"][0])  # present at the list
    src, _ = start_source()
    expect(src, peers(n(1)))
    for name, (obj, _) in BAD.items():  # the rest arrive as watch events
        if name != "bad-malformed":
            apiserver.add(obj)
    apiserver.add(node(2))
    # dual-stack Node listing IPv6 first: its IPv4 podCIDR and InternalIP are used
    apiserver.add(make_node("dual", None, "fd00:10:244:20::/64",
                            pod_cidrs=["fd00:10:244:20::/64", "10.244.20.0/24"],
                            addresses=[{"type": "InternalIP", "address": "fd00::20"},
                                       {"type": "InternalIP", "address": "192.168.1.20"}]))
    good = [n(1), n(2), ("dual", "192.168.1.20", "10.244.20.0/24")]
    expect(src, peers(*good), "good nodes only")
    for name in BAD:  # no-op updates on the bad ones must not repeat the lines
        apiserver.heartbeat(name)
    apiserver.add(node(3))
    good.append(n(3))
    expect(src, peers(*good))
    for name, (_, text) in BAD.items():
        lines = [r for r in caplog.records if text in r.getMessage()]
        assert len(lines) == 1, f"{name}: expected one line containing {text!r}, got {len(lines)}"
    # a bad node fixed later becomes a peer
    apiserver.set_pod_cidr("bad-outside", "10.244.12.0/24")
    expect(src, peers(*good, ("bad-outside", "192.168.1.12", "10.244.12.0/24")))
    apiserver.delete("zz-overlap")  # deleting bad ones changes nothing
    apiserver.delete("nocidr")
    apiserver.add(node(4))
    expect(src, peers(*good, n(4), ("bad-outside", "192.168.1.12", "10.244.12.0/24")))


def test_overlap_keeps_the_older_node_whatever_the_name(apiserver, start_source, caplog):
    caplog.set_level(logging.WARNING, LOGGER)
    apiserver.add(make_node("b-node", "192.168.2.2", "10.244.5.0/24", created=timestamp(3600)))
    src, notes = start_source()
    expect(src, peers(("b-node", "192.168.2.2", "10.244.5.0/24")))
    apiserver.add(make_node("a-node", "192.168.2.1", "10.244.5.0/24"))   # newer, earlier name
    apiserver.add(node(1))   # a marker: once it is a peer, a-node was judged
    expect(src, peers(("b-node", "192.168.2.2", "10.244.5.0/24"), n(1)), "b-node keeps its subnet")
    assert ("node a-node: spec.podCIDR: 10.244.5.0/24: overlaps node b-node's spec.podCIDR 10.244.5.0/24: "
            "kept out: node b-node holds it (created earlier)") in caplog.text
    assert [(name, reason) for name, reason, _ in src.kept_out()] == [("a-node", "subnet-taken")]
    apiserver.delete("b-node")
    expect(src, peers(("a-node", "192.168.2.1", "10.244.5.0/24"), n(1)), "a-node takes over once b-node left")
    assert "node a-node is no longer kept out" in caplog.text
    assert src.kept_out() == ()


def test_same_creation_second_the_name_decides(apiserver, start_source, caplog):
    caplog.set_level(logging.WARNING, LOGGER)
    same = timestamp(60)
    apiserver.add(make_node("b-node", "192.168.2.2", "10.244.5.0/24", created=same))
    apiserver.add(make_node("a-node", "192.168.2.1", "10.244.5.0/24", created=same))
    src, _ = start_source()
    expect(src, peers(("a-node", "192.168.2.1", "10.244.5.0/24")))
    assert "node a-node holds it (the same creationTimestamp, name first)" in caplog.text


def test_burst_of_100_adds(apiserver, start_source):
    apiserver.add(node(0))
    src, notes = start_source()
    expect(src, peers(n(0)))
    apiserver.add_many([node(i) for i in range(1, 101)])
    expect(src, peers(*(n(i) for i in range(101))), "101 peers", timeout=8)
    assert notes.count <= 101


def test_stop_is_prompt_and_idempotent(apiserver, start_source):
    apiserver.add(node(1))
    others = set(threading.enumerate())
    src, _ = start_source(watch_timeout_seconds=240)
    expect(src, peers(n(1)))
    wait_for(apiserver.watching, what="a watch")
    stopper = threading.Thread(target=src.stop)
    stopper.start()
    stopper.join(3)
    assert not stopper.is_alive(), "stop() must interrupt a blocked watch"
    assert [t.name for t in threading.enumerate() if t not in others and t.name.startswith("k8s-nodes")] == []
    src.stop()
    wait_for(lambda: apiserver.watching() == 0, what="the watch stream closed")


def test_unauthorized_is_retried_and_nodes_stay_none(apiserver, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, LOGGER)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    path = apiserver.kubeconfig(str(tmp_path / "kc"))
    text = open(path).read().replace("ovs-mesh-test-token", "wrong")
    open(path, "w").write(text)
    src = KubernetesSource(Cluster(), Kubernetes(kubeconfig=path), backoff=(0.05, 0.2))
    try:
        src.start(lambda: None)
        wait_for(lambda: src.failures >= 2, what="failed attempts")
        assert src.nodes() is None
        assert "API error 401" in caplog.text
    finally:
        src.stop()


def test_missing_kubeconfig_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match=r"kubernetes.kubeconfig: .*/nope: no such file"):
        KubernetesSource(Cluster(), Kubernetes(kubeconfig=str(tmp_path / "nope")))
    bad = tmp_path / "bad"
    bad.write_text("clusters: [\n")
    with pytest.raises(ConfigError, match=r"kubernetes.kubeconfig: .*/bad"):
        KubernetesSource(Cluster(), Kubernetes(kubeconfig=str(bad)))


def test_periodic_resync_relists(apiserver, start_source):
    apiserver.add(node(1))
    src, notes = start_source(resync_seconds=1)
    expect(src, peers(n(1)))
    apiserver.delete("node-001", record=False)  # a change the watch never saw
    apiserver.add(node(2), record=False)
    expect(src, peers(n(2)), "after the periodic relist")
    assert src.relists >= 2
    wait_for(lambda: apiserver.count(watch=False) >= 3, what="another resync")
    assert src.nodes() == peers(n(2))
    assert notes.count == 2, "a resync that finds nothing new must not notify"


def test_in_cluster_config_is_used_in_a_pod(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    import kubernetes.config.incluster_config as ic
    monkeypatch.setattr(ic, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
    monkeypatch.setattr(ic, "SERVICE_CERT_FILENAME", str(tmp_path / "ca.crt"))
    with pytest.raises(ConfigError, match=r"kubernetes: in-cluster config: .*token"):
        KubernetesSource(Cluster())
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_text("not really a cert")
    made = []   # the configuration the source hands to the Kubernetes client library

    class ApiClient(k8s_client.ApiClient):
        def __init__(self, configuration=None, *a, **kw):
            made.append(configuration)
            super().__init__(configuration, *a, **kw)
    monkeypatch.setattr(k8s_client, "ApiClient", ApiClient)
    src = KubernetesSource(Cluster())
    try:
        [cfg] = made
        assert cfg.host == "https://127.0.0.1:6443"
        assert cfg.api_key.get("BearerToken", cfg.api_key.get("authorization")).lower() == "bearer sa-token"
    finally:
        src.stop()


def test_explicit_kubeconfig_wins_inside_a_pod(apiserver, kubeconfig, monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    apiserver.add(node(1))
    src = KubernetesSource(Cluster(), Kubernetes(kubeconfig=kubeconfig), backoff=(0.05, 0.3))
    try:
        src.start(lambda: None)
        expect(src, peers(n(1)))
    finally:
        src.stop()


@pytest.mark.parametrize("section, text", [
    ({"resync_seconds": "often"}, "kubernetes.resync_seconds: often: must be a number"),
    ({"resync_seconds": 0}, "kubernetes.resync_seconds: 0: must be a number"),
    ({"kubeconfig": 42}, "kubernetes.kubeconfig: 42: must be a non-empty string"),
])
def test_bad_options_are_config_errors(section, text):
    """The config reader refuses a bad `kubernetes:` section; the source takes it as checked."""
    doc = {"source": "kubernetes", "kubernetes": section, "local": {"node": "node-1"}}
    with pytest.raises(ConfigError, match=re.escape(text)):
        parse_config(doc)


def test_the_list_comes_in_pages_of_one_snapshot(apiserver, start_source, monkeypatch):
    monkeypatch.setattr("ovs_mesh.sources.kubernetes_source.LIST_PAGE", 2)
    for i in range(1, 6):
        apiserver.add(node(i))
    src, _ = start_source()
    expect(src, peers(*(n(i) for i in range(1, 6))), "the list of 3 pages")
    wait_for(apiserver.watching, what="a watch")
    lists = [r for r in apiserver.requests if not r["watch"]]
    assert [(r["limit"], r["continue"] is not None) for r in lists] == [("2", False), ("2", True), ("2", True)]
    assert [r for r in apiserver.requests if r["watch"]][0]["rv"] == "105"   # the list's, not a later one
    apiserver.add(node(6))
    expect(src, peers(*(n(i) for i in range(1, 7))), "an event after the pages")


def test_an_expired_continue_token_lists_again_from_the_first_page(apiserver, start_source, monkeypatch):
    monkeypatch.setattr("ovs_mesh.sources.kubernetes_source.LIST_PAGE", 2)
    for i in range(1, 6):
        apiserver.add(node(i))
    served = []

    def compact_once():   # between the first and the second page, the server compacts
        served.append(1)
        if len(served) == 1:
            apiserver.delete("node-005", record=False)
            apiserver.compact()

    apiserver.after_page = compact_once
    src, _ = start_source()
    expect(src, peers(*(n(i) for i in range(1, 5))), "the second list")
    lists = [r for r in apiserver.requests if not r["watch"]]
    assert [r["continue"] is not None for r in lists] == [False, True, False, True]   # the 2nd got 410
    assert src.relists == 1, "a list cut short does not count"


def test_kubelet_sized_nodes_keep_only_what_the_mesh_reads(apiserver, start_source):
    from tests.kube.fake_apiserver import kubelet_node

    for i in range(1, 4):
        apiserver.add(kubelet_node(*n(i)))
    src, _ = start_source()
    expect(src, peers(*(n(i) for i in range(1, 4))))
    apiserver.heartbeat("node-002")   # a kubelet's status update: nothing the mesh reads
    apiserver.set_ip("node-003", "192.168.9.9")
    expect(src, peers(n(1), n(2), ("node-003", "192.168.9.9", "10.244.3.0/24")), "after the IP change")
    assert all(type(o).__name__ == "NodeObject" for o in src._objects.values())


def test_the_test_api_server_lists_every_node_without_a_limit(apiserver):
    import json
    import urllib.request

    from tests.kube.fake_apiserver import TOKEN

    for i in range(1, 4):
        apiserver.add(node(i))
    req = urllib.request.Request(apiserver.url + "/api/v1/nodes", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = json.load(resp)
    assert [o["metadata"]["name"] for o in body["items"]] == ["node-001", "node-002", "node-003"]
    assert "continue" not in body["metadata"]
