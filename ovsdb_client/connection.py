"""Connect to an OVSDB server with ovsdbapp (unix:, tcp: or ssl: remotes).

ovsdbapp keeps its connection as a class attribute, so each client gets its
own API subclass: several OVS instances (lab nodes, tests) can live in one
process without sharing a connection.
"""
from __future__ import annotations

import itertools
import logging

from ovs import stream
from ovsdbapp.backend.ovs_idl import connection, idlutils
from ovsdbapp.schema.open_vswitch import impl_idl

from .reader import read_owned
from .writer import apply_changes

LOG = logging.getLogger(__name__)
# Only the columns we read or write: vswitchd keeps rewriting others (statistics,
# status) and at 1000 ports receiving them doubles the cost of every connect.
COLUMNS = {
    "Open_vSwitch": ["bridges", "cur_cfg", "next_cfg"],
    "Bridge": ["name", "ports", "external_ids", "datapath_type", "fail_mode", "rstp_enable"],
    "Port": ["name", "interfaces", "external_ids"],
    "Interface": ["name", "type", "options", "bfd", "bfd_status", "ofport", "ofport_request", "error",
                  "mtu_request", "external_ids"],
}
_counter = itertools.count()


class OvsdbUnavailable(RuntimeError):
    """The OVSDB server could not be reached (transient: retry later)."""


class OvsdbClient:
    def __init__(self, remote: str, timeout: float = 30.0, ssl: tuple[str, str, str] | None = None):
        self.remote = remote
        if remote.startswith("ssl:"):
            key, cert, ca = ssl or ("/etc/openvswitch/ovsclient-privkey.pem",
                                    "/etc/openvswitch/ovsclient-cert.pem",
                                    "/etc/openvswitch/cacert.pem")
            stream.Stream.ssl_set_private_key_file(key)
            stream.Stream.ssl_set_certificate_file(cert)
            stream.Stream.ssl_set_ca_cert_file(ca)
        try:
            helper = idlutils.get_schema_helper(remote, "Open_vSwitch")
        except Exception as e:  # ovsdbapp raises plain Exception on connect failures
            raise OvsdbUnavailable(f"cannot reach OVSDB at {remote}: {e}") from None
        for table, columns in COLUMNS.items():
            helper.register_columns(table, columns)
        idl = connection.OvsdbIdl(remote, helper)
        self.conn = connection.Connection(idl=idl, timeout=timeout)
        api_cls = type(f"OvsMeshIdl{next(_counter)}", (impl_idl.OvsdbIdl,), {"_ovsdb_connection": None})
        try:
            self.api = api_cls(self.conn)
        except Exception as e:
            raise OvsdbUnavailable(f"cannot connect to OVSDB at {remote}: {e}") from None

    @property
    def idl(self):
        return self.api.idl

    def read(self, bridge: str):
        """(OvsState of what we own without flows, {port: ofport}, problems)."""
        with self.conn.lock:
            return read_owned(self.idl, bridge)

    def apply(self, bridge: str, changes, keep_bridge: bool = False) -> int:
        """Apply OVSDB changes (one transaction, two when a port moves); returns transactions made."""
        return apply_changes(self.api, bridge, changes, keep_bridge)

    def close(self) -> None:
        try:
            self.conn.stop(timeout=5)
        except Exception:  # already stopped or never started
            LOG.debug("closing OVSDB connection", exc_info=True)
