"""The OVSDB row vocabulary: what ovs-mesh owns in OVSDB, as frozen values.

It lives here, at the bottom, because `ovsdb_client` reads and writes these
values and must not import `ovs_mesh` (which builds and compares them): the
layers go ovs_mesh -> ovsdb_client -> ovsdbapp, never back.  `ovs_mesh.ovs.model`
re-exports them next to the OpenFlow vocabulary (Flow) so desired and observed
state are built from one set of types.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar, Generic, TypeVar

from topology.errors import NotOurs

# Every OVSDB row we create carries this external_ids key; its value says the
# row's role.  Rows without it are never read as ours, edited or deleted.
OWNER_KEY = "ovs-mesh"
PEER_KEY = "ovs-mesh-peer"
# A bridge we created but `teardown` had to leave to someone else's ports: it
# carries this key instead of OWNER_KEY (value: the role it had), so a later
# apply takes it back while anything else sees it as not ours.
LEFT_KEY = "ovs-mesh-left"


def frozen_map(m: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in (m or {}).items()))


@dataclasses.dataclass(frozen=True)
class BridgeSpec:
    name: str
    datapath_type: str
    fail_mode: str = "secure"
    rstp_enable: bool = False
    mtu_request: int | None = None     # of the bridge's internal (LOCAL) interface
    external_ids: tuple[tuple[str, str], ...] = ((OWNER_KEY, "bridge"),)


@dataclasses.dataclass(frozen=True)
class PortSpec:
    """A port with one interface of the same name, on our bridge."""
    name: str
    type: str
    options: tuple[tuple[str, str], ...] = ()
    bfd: tuple[tuple[str, str], ...] = ()
    ofport_request: int | None = None
    external_ids: tuple[tuple[str, str], ...] = ()

    @property
    def peer(self) -> str | None:
        return dict(self.external_ids).get(PEER_KEY)

    @property
    def remote_ip(self) -> str | None:
        return dict(self.options).get("remote_ip")


@dataclasses.dataclass(frozen=True)
class Owned:
    """What ovs-mesh owns on one bridge, as read from the IDL cache.

    `refusal` is set (and nothing else) when the bridge exists without our
    tag: it must be refused, never adopted.  `problems` are interfaces OVS
    failed to create."""
    bridge: BridgeSpec | None = None
    ports: tuple[PortSpec, ...] = ()
    ofports: Mapping[str, int] = dataclasses.field(default_factory=dict)
    problems: tuple[str, ...] = ()
    refusal: NotOurs | None = None
    globals: GlobalSpec | None = None   # our keys of the Open_vSwitch row's other_config


@dataclasses.dataclass(frozen=True)
class InterfaceHealth:
    """One interface as `status` shows it; `health` is missing, error, up or the BFD state."""
    ofport: int | None
    health: str
    error: str | None
    bfd: Mapping[str, str] | None

    def as_dict(self) -> dict:
        return {"ofport": self.ofport, "health": self.health, "error": self.error, "bfd": self.bfd}


SIGNS = {"add": "+", "delete": "-", "modify": "~"}


class ChangeText:
    """How every change type prints: `+ kind name`, and `{"action", "kind", "name"}` in JSON.
    A subclass has `action` (add | delete | modify), `kind` and `name`."""
    action: str
    kind: str
    name: str

    def as_dict(self) -> dict:
        return {"action": self.action, "kind": self.kind, "name": self.name}

    def __str__(self) -> str:
        return f"{SIGNS[self.action]} {self.kind} {self.name}"


T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class TypedChange(ChangeText, Generic[T]):
    """A change of one kind of value: `old` (None when added), `new` (None when deleted)."""
    action: str
    name: str
    old: T | None = None
    new: T | None = None


@dataclasses.dataclass(frozen=True)
class BridgeChange(TypedChange[BridgeSpec]):
    kind: ClassVar[str] = "bridge"


@dataclasses.dataclass(frozen=True)
class PortChange(TypedChange[PortSpec]):
    kind: ClassVar[str] = "port"


@dataclasses.dataclass(frozen=True)
class GlobalSpec:
    """The keys of the Open_vSwitch row's other_config that ovs-mesh set (IPsec's:
    certificate files, ipsec_skb_mark).  That row is nobody's to tag, so the keys we set
    are recorded in its external_ids under GLOBAL_KEY; only recorded keys are ever read
    as ours, changed or removed."""
    other_config: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        return "Open_vSwitch other_config " + ",".join(k for k, _ in self.other_config)


GLOBAL_KEY = "ovs-mesh-other-config"


@dataclasses.dataclass(frozen=True)
class GlobalChange(TypedChange[GlobalSpec]):
    kind: ClassVar[str] = "ovs-global"


RowChange = BridgeChange | PortChange | GlobalChange


# flow-restore-wait (Open_vSwitch other_config): while true, a starting ovs-vswitchd keeps the
# datapath's flows and forwards on them, until someone has put the OpenFlow tables back and
# clears it.  RESTORE_MARK (Open_vSwitch external_ids) says that ovs-mesh's start hook set it
# (its value: the Unix time it did): only such a flag is ovs-mesh's to clear.
RESTORE_WAIT_KEY = "flow-restore-wait"
RESTORE_MARK = "ovs-mesh-flow-restore"


@dataclasses.dataclass(frozen=True)
class RestoreWait:
    """The flag as OVSDB holds it: set or not, and ovs-mesh's mark (None: not set by ovs-mesh)."""
    set: bool = False
    mark: str | None = None

    @property
    def ours(self) -> bool:
        return self.set and self.mark is not None

    @property
    def since(self) -> float | None:
        """When the start hook set it (Unix time), when the mark says so."""
        try:
            return float(self.mark) if self.mark is not None else None
        except ValueError:
            return None
