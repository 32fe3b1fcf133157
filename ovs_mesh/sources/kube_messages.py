"""What the Kubernetes source says besides Node problems: peer changes and API errors in
one line (kept apart from the list/watch machinery in kubernetes_source.py; the Node
problems in Kubernetes' own fields are `kube_nodes.explain`)."""
from __future__ import annotations

import logging

from kubernetes.client.rest import ApiException
from urllib3.exceptions import MaxRetryError

from topology.model import Node

from .kube_nodes import describe as describe_node

log = logging.getLogger("ovs_mesh.sources.kubernetes_source")


def log_change(old: tuple[Node, ...], new: tuple[Node, ...]) -> None:
    before, after = {n.name: n for n in old}, {n.name: n for n in new}
    for n in new:
        if n.name not in before:
            log.info("kubernetes: peer added: %s", describe_node(n))
        elif before[n.name] != n:
            log.info("kubernetes: peer changed: %s", describe_node(n))
    for n in old:
        if n.name not in after:
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
