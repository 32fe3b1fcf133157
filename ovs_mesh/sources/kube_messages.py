"""What the Kubernetes source says besides Node problems: peer changes and API errors in
one line (kept apart from the list/watch machinery in kubernetes_source.py; the Node
problems in Kubernetes' own fields are `kube_nodes.explain`)."""
from __future__ import annotations

import logging

from kubernetes.client.rest import ApiException
from urllib3.exceptions import MaxRetryError

from topology.model import Node, diff_nodes

from .kube_nodes import describe as describe_node

log = logging.getLogger("ovs_mesh.sources.kubernetes_source")


def log_change(old: tuple[Node, ...], new: tuple[Node, ...]) -> None:
    """One line per peer added, changed (in `new`'s order) and removed."""
    d = diff_nodes({n.name: n for n in old}, {n.name: n for n in new})
    added, changed = {n.name for n in d.added}, {n.name for _, n in d.changed}
    for n in new:
        if n.name in added:
            log.info("kubernetes: peer added: %s", describe_node(n))
        elif n.name in changed:
            log.info("kubernetes: peer changed: %s", describe_node(n))
    for n in d.removed:
        log.info("kubernetes: peer removed: %s", n.name)


def describe(e: Exception) -> str:
    if isinstance(e, ApiException):
        return f"API error {e.status} {e.reason}"
    if isinstance(e, MaxRetryError) and e.reason is not None:
        e = e.reason
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def oneline(e: Exception) -> str:
    return " ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__
