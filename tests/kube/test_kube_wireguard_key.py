"""The WireGuard public key of a Node comes from its annotation, only when the cluster uses
WireGuard (a stray annotation never keeps a Node out of a cluster that does not); a malformed one
is reported on the Node's entry like any bad field."""
import dataclasses

from ovs_mesh.encryption.wireguard import new_private_key, public_key
from ovs_mesh.sources.kube_nodes import WIREGUARD_ANNOTATION, node_object, select
from tests.kube.fake_apiserver import make_node
from topology.model import Cluster
from topology.nodes import node_entry

KEY = public_key(new_private_key(b"\x07" * 32))


def annotated(value) -> dict:
    node = make_node("node-2", "192.168.56.12", "10.244.2.0/24")
    node["metadata"]["annotations"] = {WIREGUARD_ANNOTATION: value}
    return node


def test_the_annotation_is_the_nodes_key_with_wireguard():
    wg = dataclasses.replace(Cluster(), encryption="wireguard")
    entry, problem = select(node_object(annotated(KEY)), wg, "ipv4")
    assert problem is None and entry["wireguard_public_key"] == KEY
    assert node_entry(entry, wg).node.wireguard_key == KEY


def test_ignored_without_wireguard():
    entry, problem = select(node_object(annotated("garbage")), Cluster(), "ipv4")
    assert problem is None and "wireguard_public_key" not in entry
    assert node_entry(entry, Cluster()).node.wireguard_key is None


def test_a_malformed_key_is_the_nodes_problem():
    wg = dataclasses.replace(Cluster(), encryption="wireguard")
    entry, _ = select(node_object(annotated("garbage")), wg, "ipv4")
    e = node_entry(entry, wg)
    assert e.node is None
    assert ("problem", ".wireguard_public_key", "garbage",
            "must be a WireGuard public key (base64 of 32 bytes, as `wg pubkey` prints it)") in e.steps


def test_the_agent_writes_its_own_nodes_annotation_once(apiserver, start_source):
    """Through the real client: one merge patch of the one annotation, then nothing while the watch
    shows it; an RBAC that forbids `patch` is logged once and retried, never fatal."""
    from ovs_mesh.agent.session import Inventory, SayOnce
    from tests.helpers import wait_for

    apiserver.add(make_node("node-1", "192.168.56.11", "10.244.1.0/24"))
    wg = dataclasses.replace(Cluster(), encryption="wireguard")
    src, _ = start_source(wg, local_node="node-1")
    wait_for(lambda: src.nodes() is not None, what="the first list")
    inv = Inventory(None, lambda *a: None, SayOnce())
    inv._kube = src
    assert inv.publish_wireguard_key("node-1", KEY)
    assert apiserver.patches == [("node-1", apiserver.patches[0][1], {"metadata": {"annotations":
                                                                                   {WIREGUARD_ANNOTATION: KEY}}})]
    assert "merge-patch" in apiserver.patches[0][1]
    wait_for(lambda: src.annotation("node-1") == KEY, what="the watch to deliver the annotation")
    assert not inv.publish_wireguard_key("node-1", KEY) and len(apiserver.patches) == 1
    assert [n.wireguard_key for n in src.nodes()] == [KEY]

    apiserver.may_patch = False
    other = public_key(new_private_key(b"\x08" * 32))
    assert not inv.publish_wireguard_key("node-1", other)
    assert src.annotation("node-1") == KEY
