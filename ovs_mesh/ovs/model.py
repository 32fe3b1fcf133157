"""The values desired and observed state are made of.

Desired state (built by `desired.py`) and observed state (read by
`ovsdb_client` and `openflow.py`) use the same frozen types, so the diff
compares whole values.  Only what ovs-mesh owns is ever represented here.
The plan that gathers these changes with the host's is `reconcile.plan.Plan`.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

from ovsdb_client.rows import (  # noqa: F401  (the OVSDB half of the vocabulary, re-exported)
    OWNER_KEY,
    PEER_KEY,
    BridgeChange,
    BridgeSpec,
    ChangeText,
    GlobalChange,
    GlobalSpec,
    PortChange,
    PortSpec,
    RowChange,
    TypedChange,
    frozen_map,
)

# Our flows' cookies: "ovsm" in the high 32 bits.  dump/delete use the mask.
COOKIE_PREFIX = 0x6F76736D
COOKIE = COOKIE_PREFIX << 32 | 1
COOKIE_MATCH = f"cookie=0x{COOKIE_PREFIX:x}00000000/0xffffffff00000000"

BRIDGE = "obr0"
TUNNEL_OFPORT = 10           # the flow-mode tunnel port
FIRST_PEER_OFPORT = 100      # port/stp modes: peer ports from here up

T_CLASSIFY, T_TO_PEERS, T_FROM_PEERS, T_TO_LOCAL = 0, 10, 20, 30


def ours(cookie: str) -> bool:
    """A cookie as ovs-ofctl prints it ("0x6f76736d00000001") carries our prefix."""
    return cookie.startswith(f"0x{COOKIE_PREFIX:x}")


class Flow(NamedTuple):
    """One OpenFlow rule, written exactly as `ovs-ofctl dump-flows` prints it.

    A named tuple, not a dataclass: tens of thousands of flows are hashed and
    compared on every full pass, and a tuple does both in C."""
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
    globals: GlobalSpec | None = None   # our keys of the Open_vSwitch row's other_config (IPsec)

    def port_map(self) -> dict[str, PortSpec]:
        return {p.name: p for p in self.ports}


@dataclasses.dataclass(frozen=True)
class FlowChange(TypedChange[Flow]):
    kind: ClassVar[str] = "flow"
