"""The agent's NodeSession: one OVSDB client kept across config edits, replaced when the
remote changes or the connection stayed down too long; the host layer follows the config
(all but its peers)."""
import dataclasses

from ovs_mesh.agent.session import RECREATE_CLIENT_AFTER, NodeSession
from ovs_mesh.reconcile.node import NodeClients
from tests.unit.fakes import FakeFlows, FakeOvsdb, config


class Host:
    def __init__(self, config=None):
        self.closed = False
        self.config = config

    def close(self):
        self.closed = True


def make():
    now = [0.0]
    made = []

    def connect(local):
        made.append(FakeOvsdb())
        made[-1].remote = local.ovsdb
        return made[-1]

    def opener(cfg, ovsdb):
        return NodeClients(cfg, ovsdb, FakeFlows(), Host(cfg), owns_ovsdb=False)

    return NodeSession(connect=connect, opener=opener, clock=lambda: now[0]), made, now


def test_config_edit_keeps_the_connection_and_renews_the_host_layer(tmp_path):
    s, made, _ = make()
    c3 = config(tmp_path, 3)
    first = s.open(c3)
    first_host = first.host
    assert s.open(c3) is first
    # A peer leaving keeps every client (a join must not rebuild the host layer) ...
    fewer = dataclasses.replace(c3, nodes=c3.nodes[:2])
    assert s.open(fewer) is first and first.config is fewer and not first_host.closed
    # ... and the host layer plans with the new peers (WireGuard's device holds them)
    assert first_host.config is fewer
    # ... a change of the cluster settings renews the host layer.
    second = s.open(dataclasses.replace(c3, cluster=dataclasses.replace(c3.cluster, mtu=1400)))
    second_host = second.host
    assert second is not first and first_host.closed and not second_host.closed
    assert second.ovsdb is made[0] and len(made) == 1 and not made[0].closed
    s.close()
    assert second_host.closed and made[0].closed and s.ovsdb is None


def test_new_remote_or_long_disconnect_gives_a_new_client(tmp_path):
    s, made, now = make()
    c = config(tmp_path, 2)
    s.open(c)
    s.open(dataclasses.replace(c, local=dataclasses.replace(c.local, ovsdb="unix:/elsewhere/db.sock")))
    assert len(made) == 2 and made[0].closed
    s.note_connected(False)
    now[0] += RECREATE_CLIENT_AFTER / 2
    s.open(dataclasses.replace(c, local=dataclasses.replace(c.local, ovsdb="unix:/elsewhere/db.sock")))
    assert len(made) == 2                     # a short outage: ovsdbapp reconnects by itself
    now[0] += RECREATE_CLIENT_AFTER
    s.open(dataclasses.replace(c, local=dataclasses.replace(c.local, ovsdb="unix:/elsewhere/db.sock")))
    assert len(made) == 3 and made[1].closed and s.disconnected_since is None
