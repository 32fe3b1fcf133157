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

from .errors import OvsdbUnavailable
from .reader import interface_health, read_owned, read_restore_wait
from .rows import InterfaceHealth, Owned, RestoreWait, RowChange
from .writer import apply_changes, clear_restore_wait

LOG = logging.getLogger(__name__)
# Only the columns we read or write: vswitchd keeps rewriting others (statistics,
# status) and at 1000 ports receiving them doubles the cost of every connect.
COLUMNS = {
    "Open_vSwitch": ["bridges", "cur_cfg", "next_cfg", "other_config", "external_ids"],
    "Bridge": ["name", "ports", "external_ids", "datapath_type", "fail_mode", "rstp_enable"],
    "Port": ["name", "interfaces", "external_ids"],
    "Interface": ["name", "type", "options", "bfd", "bfd_status", "ofport", "ofport_request", "error",
                  "mtu_request", "external_ids"],
}
_counter = itertools.count()
MONITORING = 6  # ovs.db.idl.Idl.IDL_S_MONITORING


RECONNECT_BACKOFF_MS = (250, 2000)

# Seconds one transaction may take before ovsdbapp gives up on it.
TIMEOUT = 30.0

class OvsdbClient:
    """One connection to one OVSDB server; every IDL access of ovs-mesh goes through it.

    Reads are from the IDL cache (no round trip); `apply` is one transaction.
    Raises OvsdbUnavailable (Transient) when the server cannot be reached and
    OwnershipError (NotOurs) when a change would touch a row without our tag."""

    def __init__(self, remote: str, timeout: float = TIMEOUT, ssl: tuple[str, str, str] | None = None):
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
        # Reconnect within a quarter second after ovsdb-server restarts, backing off to 2 s (python-ovs:
        # 1 s to 8 s): while a restarted ovs-vswitchd waits for the pipeline (flow-restore-wait), the
        # agent needs OVSDB back to restore it and let it forward.
        reconnect = getattr(getattr(idl, "_session", None), "reconnect", None)
        if reconnect is not None:
            reconnect.set_backoff(RECONNECT_BACKOFF_MS[0], RECONNECT_BACKOFF_MS[1])
        self.conn = connection.Connection(idl=idl, timeout=timeout)
        api_cls = type(f"OvsMeshIdl{next(_counter)}", (impl_idl.OvsdbIdl,), {"_ovsdb_connection": None})
        try:
            self.api = api_cls(self.conn)
        except Exception as e:
            raise OvsdbUnavailable(f"cannot connect to OVSDB at {remote}: {e}") from None

    @property
    def idl(self):
        return self.api.idl

    def read(self, bridge: str) -> Owned:
        """What we own on `bridge` (bridge row, tagged ports, their ofports, failures)."""
        with self.conn.lock:
            return read_owned(self.idl, bridge)

    def health(self, interfaces) -> dict[str, InterfaceHealth]:
        """Each named interface's ofport, error and BFD state (one pass over the table)."""
        with self.conn.lock:
            return interface_health(self.idl, interfaces)

    def restore_wait(self) -> RestoreWait:
        """other_config:flow-restore-wait and ovs-mesh's mark on it, from the cache."""
        with self.conn.lock:
            return read_restore_wait(self.idl)

    def clear_restore_wait(self, mark: str | None) -> bool:
        """Remove flow-restore-wait and ovs-mesh's mark in one transaction, only while the mark
        is still MARK (a newer start of ovs-vswitchd sets a newer one); True when it removed them."""
        return clear_restore_wait(self.api, mark)

    def connected(self) -> bool:
        """Connected, and the IDL has its monitor data (its cache is current)."""
        idl = self.idl
        session = getattr(idl, "_session", None)
        if session is None or not session.is_connected():
            return False
        return getattr(idl, "state", MONITORING) == getattr(idl, "IDL_S_MONITORING", MONITORING)

    def session_seqno(self) -> int | None:
        """Changes whenever the connection to the server dropped and came back."""
        session = getattr(self.idl, "_session", None)
        return session.get_seqno() if session is not None else None

    def change_seqno(self) -> int:
        """Changes whenever the IDL cache changed (any monitored row)."""
        return self.idl.change_seqno

    def apply(self, bridge: str, changes: list[RowChange], keep_bridge: bool = False) -> int:
        """Apply OVSDB changes (one transaction, two when a port moves); returns transactions made.
        Idempotent: every command is an ensure or a delete-if-exists of our rows."""
        return apply_changes(self.api, bridge, changes, keep_bridge)

    def close(self) -> None:
        try:
            self.conn.stop(timeout=5)
        except Exception:  # already stopped or never started
            LOG.debug("closing OVSDB connection", exc_info=True)
