"""What the Kubernetes source says: Node problems in Kubernetes' own fields, peer changes,
API errors in one line (kept apart from the list/watch machinery in kubernetes_source.py)."""
from __future__ import annotations

import logging
import re

from kubernetes.client.rest import ApiException
from urllib3.exceptions import MaxRetryError

from topology.model import Node

log = logging.getLogger("ovs_mesh.sources.kubernetes_source")

# check_nodes field -> where it came from on the Node object
FIELDS = {"name": "metadata.name", "ip": "status.addresses[InternalIP]", "subnet": "spec.podCIDR"}
PATH = re.compile(r"node\[(\d+)\]\.(\w+)")


def explain(err, raw: list[dict]) -> str:
    """``node[3].subnet: V: overlaps node[1].subnet N`` -> Kubernetes names and fields."""
    def name(i: str) -> str:
        return raw[int(i)]["name"] if int(i) < len(raw) else f"#{i}"

    def inner(m: re.Match) -> str:
        return f"node {name(m.group(1))}'s {FIELDS.get(m.group(2), m.group(2))}"

    m = PATH.fullmatch(err.path)
    if not m:
        return str(err)
    rest = f"{err.value}: {PATH.sub(inner, err.reason)}"
    return f"node {name(m.group(1))}: {FIELDS.get(m.group(2), m.group(2))}: {rest}"


def log_change(old: tuple[Node, ...], new: tuple[Node, ...]) -> None:
    before, after = {n.name: n for n in old}, {n.name: n for n in new}
    for n in new:
        if n.name not in before:
            log.info("kubernetes: peer added: %s %s %s", n.name, n.ip, n.subnet)
        elif before[n.name] != n:
            log.info("kubernetes: peer changed: %s %s %s", n.name, n.ip, n.subnet)
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
