"""One look at the Kubernetes Nodes for the one-shot commands (`status`, `plan`, `apply`).

The agent watches the Nodes; a command run by hand lists them once, with the same
validation and the same seniority rule (`kube_nodes`), so it shows the peers the
agent has, the Nodes it keeps out and why, and whether the local node holds it back.
"""
from __future__ import annotations

import dataclasses
import logging

from topology.model import Config
from topology.nodes import missing_subnets

SHOWN = 20   # kept-out lines `status` prints; --json has them all


@dataclasses.dataclass(frozen=True)
class Inventory:
    """The config with the Nodes of the API as its nodes, and what the source said."""
    config: Config
    kept_out: tuple[tuple[str, str, str], ...] = ()   # (node, reason, message), name order
    waiting: str | None = None   # why the local node would hold the agent back
    annotation: object = None    # the local Node's WireGuard public key annotation (raw; None: unset)


def list_nodes(config: Config, source_factory=None) -> Inventory:
    """`config` with the Nodes listed once from the API (source: kubernetes); unchanged otherwise."""
    if config.source != "kubernetes":
        return Inventory(config)
    from .kubernetes_source import KubernetesSource

    make = source_factory or KubernetesSource
    src = make(config.cluster, config.kubernetes, local_node=config.local.node)
    log = logging.getLogger("ovs_mesh.sources.kubernetes_source")
    level = log.level
    log.setLevel(logging.ERROR)   # the command prints what matters; the agent's log lines are not for it
    try:
        nodes = src.list_once()
        kept = src.kept_out()
        annotation = src.annotation(config.local.node)
    finally:
        log.setLevel(level)
        src.stop()
    cfg = config.with_nodes(nodes)
    me = cfg.node(config.local.node)
    lacks = None if me is None else missing_subnets(cfg.cluster, me)
    waiting = None
    if me is None or lacks:
        own = next((m.split(": ", 1)[-1] for n, _, m in kept if n == config.local.node), None)
        waiting = (f"local node {config.local.node} " + ("is not in the topology" if me is None else
                                                          f"has no {lacks} yet") + (f" ({own})" if own else ""))
    return Inventory(cfg, kept, waiting, annotation)


def annotation_change(config: Config, current: object, public: str | None) -> dict | None:
    """What the agent writes to its own Node: with `source: kubernetes` and `encryption: wireguard`,
    the annotation `WIREGUARD_ANNOTATION` = this node's public key (PUBLIC; None while the key file
    does not exist yet: the agent's first pass makes it), when CURRENT (the annotation as listed)
    says anything else.  None when there is nothing to write."""
    if config.source != "kubernetes" or config.cluster.encryption != "wireguard":
        return None
    if public is not None and current == public:
        return None
    from .kube_nodes import WIREGUARD_ANNOTATION
    return {"node": config.local.node, "annotation": WIREGUARD_ANNOTATION, "value": public,
            "now": current}


def annotation_line(change: dict) -> str:
    """`plan`'s line for annotation_change's result."""
    value = change["value"] or "this node's public key, once the agent's first pass has made its key"
    now = "not set" if change["now"] is None else repr(change["now"])
    return f"annotate Node {change['node']}: {change['annotation']}={value} (now: {now}; the agent writes it)"


def kept_out_lines(kept_out) -> list[str]:
    """`status`'s lines: the count by reason, then one line per Node and reason."""
    if not kept_out:
        return []
    names = sorted({n for n, _, _ in kept_out})
    by_reason: dict[str, int] = {}
    for reason in sorted({(n, r) for n, r, _ in kept_out}):
        by_reason[reason[1]] = by_reason.get(reason[1], 0) + 1
    counts = ", ".join(f"{r} {c}" for r, c in sorted(by_reason.items()))
    lines = [f"kept out: {len(names)} Nodes ({counts})"] + [f"  {r}: {m}" for _, r, m in kept_out[:SHOWN]]
    if len(kept_out) > SHOWN:
        lines.append(f"  ... and {len(kept_out) - SHOWN} more (status --json lists them all)")
    return lines
