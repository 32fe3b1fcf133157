"""The agent: reconcile forever, from the config file or the Kubernetes API.

Everything that can make OVS differ from the topology only *kicks* the agent
(a reason plus a dirty flag): the file source, the Kubernetes source, the OVS
watcher (our rows changed, vswitchd restarted, flows lost, OVSDB reconnected),
the periodic resync timer and SIGHUP.  One worker (the main thread) runs full
reconcile passes — observe, desired, diff, apply — so a burst of a hundred
events costs a few passes, and a converged node makes zero changes.

Failures are classified as in STYLE.md: bad input from a source is logged once
and the last good config stays installed; everything else is transient and
retried with capped exponential backoff (reset when OVS comes back).  The agent
never tears anything down: SIGTERM stops the loop and leaves bridges, ports and
flows in place, so a restarted agent finds them converged.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time

from topology.model import Config

from ..reconcile import Reconciler
from ..status import tunnels as status_tunnels
from .metrics import AgentMetrics, MetricsServer
from .sdnotify import SdNotify
from .watch import OvsWatcher, ovsdb_connected

LOG = logging.getLogger("ovs_mesh.agent")
OVSDB_TIMEOUT = 10.0          # seconds for one OVSDB transaction
RECREATE_CLIENT_AFTER = 15.0  # seconds disconnected before we build a new OvsdbClient


class NotReady(Exception):
    """The source has nothing usable yet (not an error: wait for it)."""


class Agent:
    def __init__(self, source, *, resync: float = 60.0, metrics_address: str | None = None,
                 notifier: SdNotify | None = None, backoff: tuple[float, float] = (0.1, 10.0),
                 settle: float = 0.02):
        self.source = source
        self.resync = resync
        self.backoff_min, self.backoff_max = backoff
        self.settle = settle
        self.notifier = notifier or SdNotify()
        self.metrics = AgentMetrics(healthy_within=max(2 * resync + 30, 60))
        self.metrics_address = metrics_address
        self.server: MetricsServer | None = None
        # Shared with the watcher thread (plain attribute reads/writes).
        self.client = None
        self.rundir: str | None = None
        self.expected_rows = None
        self.expected_flows: int | None = None
        self.reconciles = 0
        self._kube = None
        self._kube_key = None
        self._rec: Reconciler | None = None
        self._good: Config | None = None
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._reasons: list[str] = []
        self._reset = False
        self._stop = threading.Event()
        self._heartbeat = time.monotonic()
        self._said: dict[str, str] = {}
        self._disconnected_since: float | None = None
        self.ready = False

    # -- events -----------------------------------------------------------
    def kick(self, reason: str, reset_backoff: bool = False) -> None:
        with self._lock:
            if len(self._reasons) < 100:
                self._reasons.append(reason)
            self._reset = self._reset or reset_backoff
        self._dirty.set()

    def _on_source(self, *_args) -> None:
        self.kick("source changed", reset_backoff=True)

    def note_ovsdb_connected(self, connected: bool) -> None:
        if connected:
            self._disconnected_since = None
        elif self._disconnected_since is None:
            self._disconnected_since = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()

    # -- logging helpers --------------------------------------------------
    def _say_once(self, key: str, level: int, msg: str, *args) -> None:
        text = msg % args if args else msg
        if self._said.get(key) != text:
            self._said[key] = text
            LOG.log(level, text)

    def _forget(self, key: str) -> bool:
        return self._said.pop(key, None) is not None

    # -- main loop ----------------------------------------------------------
    def run(self) -> int:
        """Run until stop(); returns the exit code (0: stopped cleanly)."""
        if self.metrics_address:
            self.server = MetricsServer(self.metrics, self.metrics_address)
            self.server.start()
            LOG.info("metrics on http://%s/metrics, health on /healthz", self.server.address)
        self.source.start(self._on_source)
        cfg = self.source.config()
        if cfg is not None:
            self.rundir = cfg.local.rundir
        watcher = OvsWatcher(self)
        watcher.start()
        dog = None
        if self.notifier.watchdog_seconds:
            dog = threading.Thread(target=self._watchdog, name="watchdog", daemon=True)
            dog.start()
        self.notifier.status("starting: first reconcile")
        self.kick("start")
        try:
            self._work()
        finally:
            LOG.info("stopping; leaving bridges, ports and flows in place")
            self.notifier.stopping("stopping (the mesh stays installed)")
            watcher.stop()
            self.source.stop()
            if self._kube is not None:
                self._kube.stop()
            self._close_host()
            if self.client is not None:
                self.client.close()
            if self.server is not None:
                self.server.stop()
            self.notifier.close()
        return 0

    def _watchdog(self) -> None:
        interval = self.notifier.watchdog_seconds / 2
        while not self._stop.wait(interval):
            # Only vouch for a worker that is still going round its loop.
            if time.monotonic() - self._heartbeat < self.notifier.watchdog_seconds:
                self.notifier.watchdog()

    def _work(self) -> None:
        backoff = self.backoff_min
        retry_at: float | None = None
        next_resync = time.monotonic() + self.resync
        while not self._stop.is_set():
            self._heartbeat = now = time.monotonic()
            with self._lock:
                reset, self._reset = self._reset, False
            if reset and retry_at is not None:
                retry_at, backoff = now, self.backoff_min
            if retry_at is not None:
                if now < retry_at:
                    self._stop.wait(min(retry_at - now, 0.05))
                    continue
                why = "retry"
            elif self._dirty.is_set():
                why = None
            elif now >= next_resync:
                why = "periodic resync"
            else:
                self._dirty.wait(min(next_resync - now, 0.5))
                continue
            if self._stop.is_set():
                break
            if self.settle:
                time.sleep(self.settle)  # let a burst of events land in one pass
            self._dirty.clear()
            with self._lock:
                reasons, self._reasons = self._reasons, []
            why = why or (", ".join(dict.fromkeys(reasons)) if reasons else "event")
            ok = self.reconcile_once(why)
            if ok:
                retry_at, backoff = None, self.backoff_min
                next_resync = time.monotonic() + self.resync
            else:
                retry_at = time.monotonic() + backoff
                backoff = min(backoff * 2, self.backoff_max)

    # -- one pass ---------------------------------------------------------
    def effective_config(self) -> Config:
        file_cfg = self.source.config()
        if file_cfg is None:
            raise NotReady("no valid config yet")
        if file_cfg.source == "kubernetes":
            kube = self._ensure_kube(file_cfg)
            nodes = kube.nodes()
            if nodes is None:
                raise NotReady("waiting for the first list of Nodes from the Kubernetes API")
            cfg = file_cfg.with_nodes(nodes)
        else:
            if self._kube is not None:
                self._kube.stop()
                self._kube = self._kube_key = None
            cfg = file_cfg
        me = cfg.node(cfg.local.node)
        if me is None or me.subnet is None:
            why = "is not in the topology" if me is None else "has no subnet yet"
            if self._good is not None and self._good.local == cfg.local:
                self._say_once("local", logging.WARNING, "local node %s %s; keeping the last good "
                               "topology (%d nodes) installed", cfg.local.node, why, len(self._good.nodes))
                return self._good
            raise NotReady(f"local node {cfg.local.node} {why}")
        if self._forget("local"):
            LOG.info("local node %s is back in the topology", cfg.local.node)
        self._good = cfg
        return cfg

    def _ensure_kube(self, file_cfg: Config):
        key = (file_cfg.cluster, tuple(sorted((file_cfg.kubernetes or {}).items())))
        if self._kube is None or key != self._kube_key:
            if self._kube is not None:
                self._kube.stop()
                self._kube = None
            from topology.kubernetes_source import KubernetesSource

            opts = file_cfg.kubernetes or {}
            kube = KubernetesSource(file_cfg.cluster, opts.get("kubeconfig"),
                                    resync_seconds=opts.get("resync_seconds", 300))
            kube.start(self._on_source)
            self._kube, self._kube_key = kube, key
        return self._kube

    def _ensure_client(self, config: Config):
        from ovsdb_client import OvsdbClient

        l = config.local
        self.rundir = l.rundir
        stale = (self._disconnected_since is not None
                 and time.monotonic() - self._disconnected_since > RECREATE_CLIENT_AFTER)
        if self.client is not None and (self.client.remote != l.ovsdb or stale):
            LOG.info("reconnecting to OVSDB at %s with a new client", l.ovsdb)
            self._close_host()
            self.client.close()
            self.client, self._rec, self._disconnected_since = None, None, None
        if self.client is None:
            self.client = OvsdbClient(l.ovsdb, timeout=OVSDB_TIMEOUT, ssl=(l.ssl_key, l.ssl_cert, l.ssl_ca))
            self.expected_rows = None
        return self.client

    def _reconciler(self, config: Config, client) -> Reconciler:
        if self._rec is None or self._rec.config != config or self._rec.ovsdb is not client:
            self._close_host()
            host = None
            if config.local.host:
                from ..host import HostLayer

                host = HostLayer(config, client)
            self._rec = Reconciler(config, client, host=host)
        return self._rec

    def _close_host(self) -> None:
        host = self._rec.host if self._rec is not None else None
        if host is not None and hasattr(host, "close"):
            try:
                host.close()
            except Exception:
                LOG.debug("closing the host layer", exc_info=True)

    def reconcile_once(self, why: str) -> bool:
        """One full pass; True when it succeeded (or there is nothing to do yet)."""
        start = time.monotonic()
        try:
            config = self.effective_config()
        except NotReady as e:
            self._say_once("notready", logging.WARNING, "not reconciling: %s", e)
            self.notifier.status(f"waiting: {e}")
            return True
        except Exception as e:
            return self._failed("source", e, start)
        self._forget("notready")
        try:
            client = self._ensure_client(config)
            if not ovsdb_connected(client):
                self.note_ovsdb_connected(False)
                raise ConnectionError(f"not connected to OVSDB at {config.local.ovsdb}")
            rec = self._reconciler(config, client)
            result = rec.apply()
            # What the watcher compares with comes from the desired state, not from
            # a read after apply: a read could already miss a row or flow someone
            # deleted since, and so hide that loss.
            self.expected_flows = len(result.desired.flows)
            self.expected_rows = dataclasses.replace(result.desired, flows=frozenset())
            tunnels = [(t["name"], t["health"]) for t in status_tunnels(config, client)]
        except Exception as e:
            return self._failed("reconcile", e, start)
        seconds = time.monotonic() - start
        self.reconciles += 1
        n = len(result.changes)
        self.metrics.record(True, seconds, n, peers=len(tunnels), flows=self.expected_flows or 0,
                            tunnels=tunnels)
        if self._forget("error"):
            LOG.info("reconcile recovered")
        if n:
            LOG.info("reconcile (%s): %d changes in %.3fs: %s", why, n, seconds,
                     ", ".join(str(c) for c in result.changes[:20]) + (" ..." if n > 20 else ""))
        elif not self.ready or any(w in why for w in ("reconnected", "started", "SIGHUP")):
            LOG.info("reconcile (%s): converged, 0 changes in %.3fs", why, seconds)
        else:
            LOG.debug("reconcile (%s): converged, 0 changes in %.3fs", why, seconds)
        if result.problems:
            self._say_once("problems", logging.WARNING, "after reconcile: %s", "; ".join(result.problems))
        elif self._forget("problems"):
            LOG.info("problems after reconcile are gone")
        self._write_status(config, result)
        status = f"converged: {len(tunnels)} peers, {self.expected_flows} flows"
        if not self.ready:
            self.ready = True
            self.notifier.ready(status)
            LOG.info("ready: %s", status)
        else:
            self.notifier.status(status)
        return True

    def _failed(self, key: str, e: Exception, start: float) -> bool:
        text = f"{type(e).__name__}: {e}"
        self.metrics.record(False, time.monotonic() - start, error=text)
        if self._said.get("error") != text:
            LOG.warning("reconcile failed (will retry with backoff): %s", text, exc_info=LOG.isEnabledFor(logging.DEBUG))
            self._said["error"] = text
        self.notifier.status(f"retrying: {text}"[:200])
        return False

    @staticmethod
    def _write_status(config: Config, result) -> None:
        from ..cli import _write_status

        _write_status(config, result)
