"""Open a node: its config from the command line, and its three clients.

`open_node(config)` is the one place that builds the OVSDB client (with the
configured SSL files), the OpenFlow client and the host layer; the CLI, the
agent and the lab all go through it, and `NodeClients.close()` releases them.
"""
from __future__ import annotations

import dataclasses

from ovsdb_client import OvsdbClient
from ovsdb_client.connection import TIMEOUT
from topology.model import Config, Local

from ..ovs.model import BRIDGE
from ..ovs.openflow import OpenFlow
from .clients import Flows, Host, OvsdbRows
from .reconciler import BuildParts, Reconciler


def connect_ovsdb(local: Local, timeout: float = TIMEOUT) -> OvsdbClient:
    """The OVSDB client of this node: its remote, with its SSL files for ssl: remotes."""
    return OvsdbClient(local.ovsdb, timeout=timeout, ssl=(local.ssl_key, local.ssl_cert, local.ssl_ca))


@dataclasses.dataclass
class NodeClients:
    """A node's config and the clients that act on it (see clients.py for their contracts)."""
    config: Config
    ovsdb: OvsdbRows
    flows: Flows
    host: Host | None = None   # host.HostLayer when local.host
    owns_ovsdb: bool = True

    def reconciler(self, build_parts: BuildParts | None = None) -> Reconciler:
        """A Reconciler over these clients; `build_parts` replaces `desired.build_parts`."""
        return Reconciler(self.config, self.ovsdb, self.flows, self.host, build_parts)

    def close(self) -> None:
        """Release the host layer, and the OVSDB connection if this node opened it."""
        if self.host is not None:
            self.host.close()
            self.host = None
        if self.owns_ovsdb:
            self.ovsdb.close()


def open_node(config: Config, ovsdb: OvsdbClient | None = None, timeout: float = TIMEOUT) -> NodeClients:
    """Connect to this node's OVS (or reuse `ovsdb`, which the caller keeps) and build its clients.
    Raises OvsdbUnavailable when OVSDB cannot be reached."""
    owns = ovsdb is None
    if ovsdb is None:
        ovsdb = connect_ovsdb(config.local, timeout)
    host = None
    try:
        if config.local.host:
            from ..host import HostLayer

            host = HostLayer(config, ovsdb)
    except BaseException:
        if owns:
            ovsdb.close()
        raise
    return NodeClients(config, ovsdb, OpenFlow(config.local.rundir, BRIDGE), host, owns)
