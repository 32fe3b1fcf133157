"""The values desired and observed state are made of.

Desired state (built by `desired.py`) and observed state (read by
`ovsdb_client` and `openflow.py`) use the same frozen types, so the diff
compares whole values.  Only what ovs-mesh owns is ever represented here.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

# Every OVSDB row we create carries this external_ids key; its value says the
# row's role.  Rows without it are never read as ours, edited or deleted.
OWNER_KEY = "ovs-mesh"
# A bridge we created but `teardown` had to leave to someone else's ports: it
# carries this key instead of OWNER_KEY (value: the role it had), so a later
# apply takes it back while anything else sees it as not ours.
LEFT_KEY = "ovs-mesh-left"
PEER_KEY = "ovs-mesh-peer"
# Our flows' cookies: "ovsm" in the high 32 bits.  dump/delete use the mask.
COOKIE = 0x6F76736D00000001
COOKIE_MATCH = "cookie=0x6f76736d00000000/0xffffffff00000000"

BRIDGE = "obr0"
TUNNEL_OFPORT = 10           # the flow-mode tunnel port
FIRST_PEER_OFPORT = 100      # port/stp modes: peer ports from here up

T_CLASSIFY, T_TO_PEERS, T_FROM_PEERS, T_TO_LOCAL = 0, 10, 20, 30


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


@dataclasses.dataclass(frozen=True, order=True)
class Flow:
    """One OpenFlow rule, written exactly as `ovs-ofctl dump-flows` prints it."""
    table: int
    priority: int
    match: str     # "" for match-all
    actions: str

    @property
    def key(self) -> tuple[int, int, str]:
        return (self.table, self.priority, self.match)

    def spec(self, with_actions: bool = True) -> str:
        parts = [f"cookie=0x{COOKIE:x}" if with_actions else f"cookie=0x{COOKIE:x}/-1",
                 f"table={self.table}", f"priority={self.priority}"]
        if self.match:
            parts.append(self.match)
        s = ",".join(parts)
        return f"{s},actions={self.actions}" if with_actions else s

    def __str__(self) -> str:
        m = f",{self.match}" if self.match else ""
        return f"table={self.table},priority={self.priority}{m} actions={self.actions}"


@dataclasses.dataclass(frozen=True)
class OvsState:
    """What ovs-mesh owns in one OVS: its bridge, that bridge's ports, the flows."""
    bridge: BridgeSpec | None = None
    ports: tuple[PortSpec, ...] = ()
    flows: frozenset[Flow] = frozenset()

    def port_map(self) -> dict[str, PortSpec]:
        return {p.name: p for p in self.ports}


class Conflict(str):
    """A problem that forbids applying: something we would have to change is not ours."""


@dataclasses.dataclass(frozen=True)
class Change:
    action: str        # add | delete | modify
    kind: str          # bridge | port | flow | (host kinds: link, address, route, ...)
    name: str
    old: object = None
    new: object = None

    def as_dict(self) -> dict:
        return {"action": self.action, "kind": self.kind, "name": self.name}

    def __str__(self) -> str:
        sign = {"add": "+", "delete": "-", "modify": "~"}[self.action]
        return f"{sign} {self.kind} {self.name}"
