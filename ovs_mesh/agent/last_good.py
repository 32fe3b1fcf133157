"""The last good inventory on disk (`<state dir>/inventory.json`), so that a restarted agent can
put the pipeline back before its source answers.

Why: after ovs-vswitchd or the agent restarts, the Kubernetes API may take seconds to answer (or
be reachable only through the very network being restored).  The nodes of the last topology
the agent installed are written here after its passes; at start, while the source has not
answered yet, the agent installs those.  The source's first answer replaces them at once (the
next pass), and the file with it.

Only the nodes are kept: every other setting comes from the config file, which the agent
always has.  The saved nodes are used only with the same cluster ranges and local node name they
were saved with.  The state directory is systemd's StateDirectory= (/var/lib/ovs-mesh); its
other entries (the encryption's keys under wireguard/) are not this module's.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import time

from topology.model import Config, Node

from ..files import write_atomic

LOG = logging.getLogger(__name__)
FILE = "inventory.json"
VERSION = 1
MIN_INTERVAL = 10.0   # seconds between two writes of an inventory that keeps changing


def _key(config: Config) -> dict:
    c = config.cluster
    return {"node": config.local.node, "cidrs": [str(x) for x in c.cidrs],
            "node_prefix": c.node_prefix, "node_prefix6": c.node_prefix6}


def _node(d: dict) -> Node:
    return Node(str(d["name"]), ipaddress.ip_address(d["ip"]),
                ipaddress.IPv4Network(d["subnet"]) if d.get("subnet") else None,
                ipaddress.IPv6Network(d["subnet6"]) if d.get("subnet6") else None)


class LastGood:
    """Reads and writes one state directory's inventory.json (`directory` None: neither)."""

    def __init__(self, directory: str | None, clock=time.monotonic):
        self.directory, self.clock = directory, clock
        self._written: tuple | None = None     # the nodes last written (or read)
        self._at = -MIN_INTERVAL
        self.saved_at: float | None = None     # Unix time of the inventory `load` returned

    @property
    def path(self) -> str | None:
        return os.path.join(self.directory, FILE) if self.directory else None

    def load(self, base: Config) -> Config | None:
        """`base` (the config file's settings) with the saved nodes, when they were saved for the
        same cluster ranges and local node; None otherwise (missing, unreadable, other cluster)."""
        path = self.path
        if path is None:
            return None
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            if data.get("version") != VERSION or data.get("key") != _key(base):
                LOG.info("%s was saved for another cluster or node: not used", path)
                return None
            nodes = tuple(_node(d) for d in data["nodes"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            LOG.warning("cannot use the saved inventory %s: %s", path, e)
            return None
        self._written = nodes
        self.saved_at = data.get("time")
        return base.with_nodes(nodes)

    def save(self, config: Config, force: bool = False) -> bool:
        """Write `config`'s nodes unless they are what the file holds; a changing inventory at
        most every MIN_INTERVAL seconds unless `force` (a full pass).  True when written."""
        path = self.path
        if path is None or config.nodes == self._written:
            return False
        if not force and self.clock() - self._at < MIN_INTERVAL:
            return False
        data = {"version": VERSION, "time": time.time(), "key": _key(config),
                "nodes": [{"name": n.name, "ip": str(n.ip), "subnet": n.subnet and str(n.subnet),
                           "subnet6": n.subnet6 and str(n.subnet6)} for n in config.nodes]}
        try:
            os.makedirs(self.directory or ".", exist_ok=True)
            write_atomic(path, json.dumps(data, separators=(",", ":")), 0o600)
        except OSError as e:
            LOG.warning("cannot save the inventory to %s: %s", path, e)
            return False
        self._written, self._at = config.nodes, self.clock()
        return True
