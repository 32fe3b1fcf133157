"""The small interfaces the Reconciler and the agent depend on.

The real implementations are `ovsdb_client.OvsdbClient`, `openflow.OpenFlow`
and `host.HostLayer` (built together by `node.open_node`); unit tests pass
in-memory fakes with the same methods.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from ovsdb_client.rows import InterfaceHealth, Owned, RestoreWait, RowChange
from topology.model import Config

from ..host.model import HostChange
from ..ovs.model import Flow, FlowChange


class OvsdbRows(Protocol):
    """OVSDB: our bridge and ports.  Raises OvsdbUnavailable (Transient) when the server
    is unreachable and OwnershipError (NotOurs) when a row to change is not ours."""

    remote: str

    def read(self, bridge: str) -> Owned:
        """What we own on `bridge`, from the local cache (no round trip, no change)."""

    def apply(self, bridge: str, changes: list[RowChange], keep_bridge: bool = False) -> int:
        """All changes in one transaction, or none; returns 0 or 1 transactions.
        Idempotent: applying the same changes twice leaves the same rows."""

    def health(self, interfaces: Iterable[str]) -> Mapping[str, InterfaceHealth]:
        """Ofport, error and BFD state of the named interfaces (read only)."""

    def restore_wait(self) -> RestoreWait:
        """other_config:flow-restore-wait and ovs-mesh's mark on it (read only, from the cache)."""

    def clear_restore_wait(self, mark: str | None) -> bool:
        """Remove the flag and the mark in one transaction, only while the mark is still `mark`;
        True when removed."""

    def connected(self) -> bool:
        """Connected and the cache is current."""

    def session_seqno(self) -> int | None:
        """Moves when the connection dropped and came back (a full resync is due)."""

    def change_seqno(self) -> int:
        """Moves when any cached row changed."""

    def close(self) -> None:
        """Disconnect; safe to call twice."""


class Flows(Protocol):
    """Our flows on one bridge.  Raises OpenFlowError (Transient)."""

    def dump(self) -> frozenset[Flow]:
        """Flows with our cookie (read only)."""

    def count(self) -> int | None:
        """How many flows carry our cookie; None when vswitchd cannot tell."""

    def foreign_flow_count(self) -> int:
        """Flows without our cookie (someone else's: the bridge is then kept on teardown)."""

    def apply(self, changes: list[FlowChange]) -> int:
        """All changes in one bundle, or none; returns the number of flow changes.
        Idempotent: adds and modifies are strict, deletes of missing flows are no-ops."""


class Host(Protocol):
    """Host networking (links, routes, sysctls, CNI file, ...).  `plan` only reads.  `config`:
    what it plans for (a peers-only change of the inventory replaces it in place)."""

    config: Config

    def underlay_mtu(self) -> int:
        """MTU of the interface that carries the node IP."""

    def plan(self, pod_mtu: int, teardown: bool) -> list[HostChange]:
        """What `apply` would change (only objects tagged as ours are ever deleted)."""

    def apply(self, changes: list[HostChange], teardown: bool) -> None:
        """Execute exactly these changes; each is an idempotent ensure or delete.
        Raises NotOurs for an untagged object in the way."""

    def close(self) -> None:
        """Release netlink sockets; safe to call twice."""
