"""The agent's small parts: log de-duplication, the inventory (which source, and
the last good topology), and the node session (the clients and their lifecycle)."""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from topology.errors import InputError
from topology.model import Config
from topology.nodes import missing_subnets

from ..config.secrets import credentials_key, with_credentials
from ..reconcile.node import NodeClients, connect_ovsdb, open_node

if TYPE_CHECKING:  # imported when first used: the Kubernetes client is slow to import
    from ..sources.kubernetes_source import KubernetesSource

LOG = logging.getLogger("ovs_mesh.agent")
# Seconds one OVSDB transaction of the agent may take: shorter than a command's
# (ovsdb_client.connection.TIMEOUT), since a failed pass is retried with backoff.
AGENT_OVSDB_TIMEOUT = 10.0
RECREATE_CLIENT_AFTER = 15.0  # seconds disconnected before we build a new OVSDB client


class NotReady(Exception):
    """The source has nothing usable yet (not an error: wait for it)."""


class SayOnce:
    """Log a message once per key until it changes or is forgotten (no log floods)."""

    def __init__(self, log: logging.Logger = LOG):
        self.log = log
        self._said: dict[str, str] = {}

    def say(self, key: str, level: int, msg: str, *args, **kw) -> bool:
        text = msg % args if args else msg
        if self._said.get(key) == text:
            return False
        self._said[key] = text
        self.log.log(level, text, **kw)
        return True

    def forget(self, key: str) -> bool:
        """True when the key had been said (so the caller can log the recovery)."""
        return self._said.pop(key, None) is not None


class Inventory:
    """The topology to reconcile: the file source's config, with the nodes from the
    Kubernetes API when `source: kubernetes`.  Keeps the last good topology while
    the local node is missing from it or the source reports bad input.  Until the
    source has answered once, the nodes saved on disk by the last run (`last_good`)
    stand in for it (`stale` is then true)."""

    def __init__(self, source, on_change, say: SayOnce, kube_factory=None, last_good=None):
        self.source, self.on_change, self.say = source, on_change, say
        self.kube_factory = kube_factory or _kubernetes_source
        self.last_good = last_good
        self.stale = False                # the config comes from the saved inventory
        self._saved: Config | None = None
        self.good: Config | None = None
        self.waiting: str | None = None   # why the local node holds the agent back, when it does
        self._kube: KubernetesSource | None = None
        self._kube_key: tuple | None = None
        self._credentials: tuple | None = None   # (credentials_key, the local section with the PSK read)

    def kept_out(self) -> tuple[tuple[str, str, str], ...]:
        """(node, reason, message) of the Nodes the Kubernetes source keeps out, now."""
        kube = self._kube
        return kube.kept_out() if kube is not None else ()

    def config(self) -> Config:
        """Raises NotReady while there is nothing usable; InputError only without a good config."""
        try:
            cfg = self._credentialed(self._current())
        except NotReady:
            saved = self._from_disk()
            if saved is None:
                raise
            return self._credentialed(saved)
        except InputError as e:
            if self.good is None:
                raise
            self.say.say("input", logging.ERROR, "bad input, keeping the last good topology (%d nodes): %s",
                         len(self.good.nodes), e)
            return self.good
        self.say.forget("input")
        me = cfg.node(cfg.local.node)
        lacks = None if me is None else missing_subnets(cfg.cluster, me)
        if me is None or lacks:
            # Only the local node's own state gets here: another Node's claim on its subnet or
            # address never displaces it (kube_nodes.seniority), so the agent waits for its own
            # Node, not for someone else's.
            why = "is not in the topology" if me is None else f"has no {lacks} yet"
            why += self._own_problem(cfg.local.node)
            self.waiting = f"local node {cfg.local.node} {why}"
            if self.good is not None and self.good.local == cfg.local:
                self.say.say("local", logging.WARNING, "local node %s %s; keeping the last good "
                             "topology (%d nodes) installed", cfg.local.node, why, len(self.good.nodes))
                return self.good
            raise NotReady(f"local node {cfg.local.node} {why}")
        if self.say.forget("local"):
            LOG.info("local node %s is back in the topology", cfg.local.node)
        if self.stale:
            LOG.info("the source answered: %d nodes replace the saved inventory", len(cfg.nodes))
        self.good, self.waiting, self.stale, self._saved = cfg, None, False, None
        return cfg

    def _credentialed(self, cfg: Config) -> Config:
        """`cfg` with the credential files of its encryption checked and the PSK read (the agent's
        sources leave that to the one who runs the node: this one); done again only when a file,
        the settings naming them or the hour changed (a certificate check runs openssl)."""
        key = credentials_key(cfg, time.time())
        if self._credentials is not None and self._credentials[0] == key:
            local = self._credentials[1]
            return cfg if local == cfg.local else dataclasses.replace(cfg, local=local)
        out = with_credentials(cfg)
        self._credentials = (key, out.local)
        return out

    def _from_disk(self) -> Config | None:
        """The saved inventory over the file's settings, before the source's first answer only."""
        if self.good is not None or self.last_good is None:
            return None
        if self._saved is None:
            base = self.source.config()
            saved = self.last_good.load(base) if base is not None else None
            if saved is None or saved.node(saved.local.node) is None:
                return None
            age = time.time() - (self.last_good.saved_at or time.time())
            LOG.warning("the source has not answered yet: installing the inventory saved %.0f s ago "
                        "(%d nodes, %s) until it does", age, len(saved.nodes), self.last_good.path)
            self._saved = saved
        self.stale = True
        return self._saved

    def _own_problem(self, name: str) -> str:
        """What the source says about the local node, when it says something."""
        for node, _, message in self.kept_out():
            if node == name:
                return f" ({message.split(': ', 1)[-1]})"
        return ""

    def _current(self) -> Config:
        file_cfg = self.source.config()
        if file_cfg is None:
            raise NotReady("no valid config yet")
        if file_cfg.source != "kubernetes":
            self.stop_kube()
            return file_cfg
        key = (file_cfg.cluster, file_cfg.local.node, file_cfg.kubernetes)
        if self._kube is None or key != self._kube_key:
            self.stop_kube()
            self._kube = self.kube_factory(file_cfg)
            self._kube.start(self.on_change)
            self._kube_key = key
        nodes = self._kube.nodes()
        if nodes is None:
            raise NotReady("waiting for the first list of Nodes from the Kubernetes API")
        return file_cfg.with_nodes(nodes)

    def publish_wireguard_key(self, name: str, public_key: str) -> bool:
        """Kubernetes source: make Node `name`'s annotation say `public_key` (this agent's own Node
        only).  True when a patch was sent; an API error is logged once and retried next pass."""
        kube = self._kube
        if kube is None or kube.annotation(name) == public_key:
            return False
        try:
            kube.annotate_wireguard_key(name, public_key)
        except Exception as e:   # the API down, or RBAC without `patch` on nodes
            self.say.say("annotate", logging.WARNING, "cannot write Node %s's WireGuard public key annotation "
                         "(the RBAC needs `patch` on nodes): %s", name, oneline_error(e))
            return False
        self.say.forget("annotate")
        LOG.info("Node %s: WireGuard public key annotation set to %s", name, public_key)
        return True

    def stop_kube(self) -> None:
        if self._kube is not None:
            self._kube.stop()
            self._kube = self._kube_key = None


def oneline_error(e: Exception) -> str:
    status = getattr(e, "status", None)
    reason = getattr(e, "reason", None)
    if status is not None:
        return f"HTTP {status} {reason or ''}".strip()
    return f"{type(e).__name__}: {e}"


def _kubernetes_source(file_cfg: Config):
    from ..sources.kubernetes_source import KubernetesSource

    return KubernetesSource(file_cfg.cluster, file_cfg.kubernetes, local_node=file_cfg.local.node)


def clients_key(config: Config) -> tuple:
    """What the node's clients are built from: everything but the peers."""
    return (config.cluster, config.local, config.source, config.kubernetes, config.node(config.local.node))


class NodeSession:
    """The node's clients across passes: one OVSDB connection, kept while the remote
    stays the same and reconnects within RECREATE_CLIENT_AFTER; the host layer and
    reconciler rebuilt when the config changes in more than its peers."""

    def __init__(self, connect=None, opener=open_node, clock=time.monotonic):
        self.connect = connect or (lambda local: connect_ovsdb(local, AGENT_OVSDB_TIMEOUT))
        self.opener, self.clock = opener, clock
        self.ovsdb = None             # read by the watcher thread
        self.node: NodeClients | None = None
        self._key: tuple | None = None      # clients_key of self.node's config
        self.disconnected_since: float | None = None

    def note_connected(self, connected: bool) -> None:
        if connected:
            self.disconnected_since = None
        elif self.disconnected_since is None:
            self.disconnected_since = self.clock()

    def open(self, config: Config) -> NodeClients:
        stale = (self.disconnected_since is not None
                 and self.clock() - self.disconnected_since > RECREATE_CLIENT_AFTER)
        if self.ovsdb is not None and (self.ovsdb.remote != config.local.ovsdb or stale):
            LOG.info("reconnecting to OVSDB at %s with a new client", config.local.ovsdb)
            self.close()
        if self.ovsdb is None:
            self.ovsdb = self.connect(config.local)
        if self.node is not None and self.node.config is config:
            return self.node
        key = clients_key(config)
        if self.node is None or key != self._key:
            self._close_node()
            self.node, self._key = self.opener(config, ovsdb=self.ovsdb), key
        else:
            # Only peers changed: the clients and the host layer stay (it is built for the cluster
            # and the local node); passes see the new inventory, the host layer too (WireGuard's
            # peers are the host's).
            self.node.config = config
            if self.node.host is not None:
                self.node.host.config = config
        return self.node

    def _close_node(self) -> None:
        if self.node is not None:
            try:
                self.node.close()   # the host layer; the OVSDB client is ours, not the node's
            except Exception:
                LOG.debug("closing the host layer", exc_info=True)
            self.node = None

    def close(self) -> None:
        self._close_node()
        if self.ovsdb is not None:
            self.ovsdb.close()
        self.ovsdb, self.disconnected_since = None, None
