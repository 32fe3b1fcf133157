"""What one reconcile pass changes and what it reports.

`Plan` gathers every change of a pass by executor: OVSDB rows (one transaction),
flows (one bundle), host networking (the host layer).  It lives above both the OVS
vocabulary (`ovs.model`) and the host's (`host.model`) so that neither needs the other.
`Result` is a pass's plan with what applying it did.
"""
from __future__ import annotations

import dataclasses

from topology.errors import NotOurs

from ..host.model import HostChange
from ..ovs.desired import Parts
from ..ovs.diff import diff_flows, diff_rows
from ..ovs.model import FlowChange, OvsState, RowChange


@dataclasses.dataclass(frozen=True)
class Plan:
    """Every change one reconcile pass makes, by executor: OVSDB rows (one
    transaction), flows (one bundle), host networking (the host layer)."""
    ovsdb: tuple[RowChange, ...] = ()
    flows: tuple[FlowChange, ...] = ()
    host: tuple[HostChange, ...] = ()

    @property
    def changes(self) -> list:
        """All changes in an order that is always safe to apply and that `plan` prints:
        bridge and port adds/modifies, flows, port and bridge deletes, then host."""
        adds = [c for c in self.ovsdb if c.action != "delete"]
        dels = [c for c in self.ovsdb if c.action == "delete"]
        return [*adds, *self.flows, *dels, *self.host]

    def __len__(self) -> int:
        return len(self.ovsdb) + len(self.flows) + len(self.host)


def diff(desired: OvsState, observed: OvsState) -> Plan:
    """The OVS part of a plan: the row and flow changes from observed to desired."""
    return Plan(ovsdb=tuple(diff_rows(desired, observed)), flows=tuple(diff_flows(desired.flows, observed.flows)))


@dataclasses.dataclass
class Observed:
    ovs: OvsState
    ofports: dict[str, int]
    problems: list[str]
    refusal: NotOurs | None = None   # our bridge exists untagged: refuse to apply


@dataclasses.dataclass
class Result:
    plan: Plan
    problems: list[str]
    ovsdb_transactions: int = 0
    flow_changes: int = 0
    seconds: float = 0.0
    desired: OvsState | None = None   # what the node holds once converged
    parts: Parts | None = None   # the same, by part (the agent's record)
    observed: Observed | None = None  # what the pass read before changing anything

    @property
    def changes(self) -> list:
        return self.plan.changes

    def as_dict(self) -> dict:
        return {"changes": [c.as_dict() for c in self.changes], "problems": self.problems,
                "ovsdb_transactions": self.ovsdb_transactions, "flow_changes": self.flow_changes,
                "seconds": round(self.seconds, 4)}
