"""`plan` with the Kubernetes source and WireGuard shows the Node annotation the agent writes: this
node's public key, counted as a change until the Node says it."""
from __future__ import annotations

import dataclasses
import json
from ipaddress import ip_address, ip_network

import pytest

from ovs_mesh.cli import main as cli
from ovs_mesh.encryption.wg_keys import ensure_private_key
from ovs_mesh.reconcile.plan import Plan, Result
from ovs_mesh.sources.kube_nodes import WIREGUARD_ANNOTATION
from ovs_mesh.sources.kube_once import annotation_change, annotation_line, list_nodes
from topology.model import Cluster, Config, Local, Node

pytestmark = pytest.mark.unit

PUBLIC = "x" * 43 + "="


def config(source="kubernetes", encryption="wireguard", key="/nonexistent/private.key") -> Config:
    nodes = tuple(Node(f"node-{i}", ip_address(f"192.168.56.{10 + i}"), ip_network(f"10.244.{i}.0/24"))
                  for i in (1, 2))
    return Config(Cluster(cidr=ip_network("10.244.0.0/16"), encryption=encryption),
                  Local(node="node-1", datapath="dummy", host=False, wireguard_key=key), nodes, source=source)


def test_nothing_to_write_without_the_kubernetes_source_or_wireguard_or_when_the_node_says_it():
    assert annotation_change(config(source="file"), None, PUBLIC) is None
    assert annotation_change(config(encryption="none"), None, PUBLIC) is None
    assert annotation_change(config(), PUBLIC, PUBLIC) is None


def test_an_unset_or_other_annotation_is_a_change_naming_the_node_the_key_and_the_value_now():
    change = annotation_change(config(), None, PUBLIC)
    assert change == {"node": "node-1", "annotation": WIREGUARD_ANNOTATION, "value": PUBLIC, "now": None}
    assert annotation_line(change) == (f"annotate Node node-1: {WIREGUARD_ANNOTATION}={PUBLIC} "
                                       "(now: not set; the agent writes it)")
    other = annotation_change(config(), "old-key=", PUBLIC)
    assert other["now"] == "old-key=" and "(now: 'old-key='" in annotation_line(other)
    # no key file yet: the agent's first pass makes it, then writes the annotation
    assert "once the agent's first pass has made its key" in annotation_line(annotation_change(config(), None, None))


def test_plan_counts_and_prints_it_and_json_lists_it(capsys):
    change = annotation_change(config(), None, PUBLIC)
    cli.print_result(Result(Plan(), []), False, "plan", config(), change)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "plan: 1 changes" and out[1] == "  " + annotation_line(change)
    cli.print_result(Result(Plan(), []), True, "plan", config(), change)
    assert json.loads(capsys.readouterr().out)["annotations"] == [change]
    cli.print_result(Result(Plan(), []), False, "plan", config(), None)
    assert capsys.readouterr().out == "plan: no changes (converged)\n"


def test_plan_reads_the_public_key_from_the_key_file_and_never_the_private_key(tmp_path, capsys):
    path = str(tmp_path / "wg" / "private.key")
    public, _ = ensure_private_key(path)
    cfg = config(key=path)
    change = cli._annotation(cfg, None)
    assert change["value"] == public
    assert cli._annotation(cfg, public) is None
    cli.print_result(Result(Plan(), []), False, "plan", cfg, change)
    out = capsys.readouterr().out
    assert public in out and open(path).read().strip() not in out


class FakeSource:
    def __init__(self, cluster, kubernetes, local_node):
        self.local = local_node

    def list_once(self):
        return (Node("node-1", ip_address("192.168.56.11"), ip_network("10.244.1.0/24")),)

    def kept_out(self):
        return ()

    def annotation(self, name):
        return "listed-key=" if name == self.local else None

    def stop(self):
        pass


def test_the_one_listing_of_the_commands_carries_the_local_nodes_annotation():
    inv = list_nodes(dataclasses.replace(config(), nodes=()), source_factory=FakeSource)
    assert inv.annotation == "listed-key=" and [n.name for n in inv.config.nodes] == ["node-1"]
    assert list_nodes(config(source="file")).annotation is None
