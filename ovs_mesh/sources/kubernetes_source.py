"""Kubernetes node source: the mesh's peers are the cluster's Node objects.

Why this exists: with ``source: kubernetes`` the agent does not read peers from
a file; it lists and watches Nodes through the official ``kubernetes`` client
and turns every Node that has a pod CIDR of each cluster family
(``spec.podCIDRs``) and an ``InternalIP`` of the underlay family into a
`topology.model.Node` (which fields, and why: `kube_nodes`).  The agent only sees the result through three calls
(``start(notify)``, ``nodes()``, ``stop()``), the same protocol as the file source.

How it works (one background thread, informer style):
  list Nodes (in pages: ``limit``/``continue``, as client-go's reflector does)
  -> remember ``metadata.resourceVersion`` -> watch from there
  (``allowWatchBookmarks``, server-side ``timeoutSeconds``).  A watch that ends
  normally (expiry) is resumed from the last resourceVersion seen (object events
  and BOOKMARKs advance it).  ``410 Gone`` (HTTP status or an ERROR event in the
  stream, or a continue token of a list in pages) means our resourceVersion was
  compacted away: relist from the first page.  Any other error
  (refused, reset, timeout, 5xx, 401...) is retried with capped, jittered
  exponential backoff, and the last good node set stays: an API outage never
  removes peers.  Every ``resync_seconds`` a fresh list replaces the cache.

Validation is `kube_nodes.validate` (`topology.config.check_nodes`, the same
rules as the file source).  Bad Nodes are skipped, never fatal, and each (node,
problem) is logged once with the Kubernetes field and value, e.g.
``node worker-3: spec.podCIDR: 10.245.0.0/24: outside cluster.cidr 10.244.0.0/16``.
A Node that claims what another holds (a pod subnet, an InternalIP) is kept
out and the holder keeps it: the local node always, else the older Node
(`kube_nodes.seniority`); `kept_out()` lists who is kept out and why, for the
metrics and `status`.
``notify()`` is called only when the validated set changes, not for heartbeat
updates.  Each Node's own checks are kept per (name, InternalIP, podCIDRs) (the
ones `kube_nodes.select` picked), so an event re-checks one Node and unchanged
Nodes keep their `Node` objects (the agent compares them by identity); a burst
of events (a cluster coming up) is validated once: the watch thread only
records each change, a worker thread re-validates once for all the changes that
came meanwhile.  One write: `annotate_wireguard_key`, the agent's own Node's public key.
"""
from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines

from topology.config import ConfigError
from topology.errors import Transient
from topology.model import Cluster, Kubernetes, Node

from .kube_messages import describe, log_change, oneline
from .kube_nodes import ADDRESS_TAKEN, SUBNET_TAKEN, NodeObject, Problem, default_underlay_family, node_object, validate

log = logging.getLogger(__name__)

STABLE_SECONDS = 10  # a watch that lasted this long resets the backoff when it breaks
LIST_PAGE = 100      # Nodes per list request: a page of kubelet-sized Nodes is ~1 MB of JSON, ~5 MB parsed


class _Gone(Transient):
    """Our resourceVersion is too old (410): relist."""


def _configuration() -> k8s_client.Configuration:
    cfg = k8s_client.Configuration()
    cfg.retries = 0  # our loop retries with backoff; urllib3's own 3 quick retries only add noise
    return cfg


def _load_api_client(kubeconfig: str | None) -> k8s_client.ApiClient:
    """In-cluster config inside a pod (unless a kubeconfig is given), else a kubeconfig."""
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        cfg = _configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=cfg)
        except k8s_config.ConfigException as e:
            raise ConfigError([f"kubernetes: in-cluster config: {e}"]) from None
        return k8s_client.ApiClient(cfg)
    path = os.path.expanduser(kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config")
    if not os.path.exists(path):
        raise ConfigError([f"kubernetes.kubeconfig: {path}: no such file"])
    try:
        return k8s_config.new_client_from_config(config_file=path, persist_config=False,
                                                 client_configuration=_configuration())
    except (k8s_config.ConfigException, yaml.YAMLError, ValueError, TypeError, OSError) as e:
        raise ConfigError([f"kubernetes.kubeconfig: {path}: {oneline(e)}"]) from None


def _rv(obj: Any) -> str | None:
    if isinstance(obj, dict):
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if isinstance(rv, str) and rv:
            return rv
    return None


class KubernetesSource:
    """Peers from the Kubernetes Node list/watch; see the module docstring."""

    def __init__(self, cluster: Cluster, options: Kubernetes | None = None, *, api_client=None,
                 watch_timeout_seconds: int = 240, backoff: tuple[float, float] = (0.5, 30.0),
                 request_timeout: float = 30.0, local_node: str | None = None):
        """`options`: the config's `kubernetes:` section, as the config reader checked it.
        `local_node`: this node's name, never displaced by another Node's claim
        (kube_nodes.seniority)."""
        options = options if options is not None else Kubernetes()
        self.cluster = cluster
        self.local_node = local_node
        self.underlay_family = options.underlay_family or default_underlay_family(cluster)
        self.resync_seconds = options.resync_seconds
        self.watch_timeout_seconds = int(watch_timeout_seconds)
        self.backoff_initial, self.backoff_max = backoff
        self.request_timeout = request_timeout
        self._own_client = api_client is None
        self._api_client = api_client if api_client is not None else _load_api_client(options.kubeconfig)
        self._api = k8s_client.CoreV1Api(self._api_client)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._notify: Callable[[], None] = lambda: None
        self._resp = None  # the open HTTP response, so stop() can unblock a read
        self._objects: dict[str, NodeObject] = {}
        self._nodes: tuple[Node, ...] | None = None
        self._reported: set[tuple[str, str]] = set()
        self._problems: dict[tuple[str, str], Problem] = {}
        self._rv: str | None = None
        self.connected = False  # last request to the API server succeeded
        self.failures = 0  # consecutive failed attempts (0 when healthy)
        self.relists = 0  # lists done, first one included
        # name -> (NodeObject, its entry, problem, the entry's own checks and Node): an event re-checks
        # one Node, and the Node objects of unchanged Nodes stay the same (the agent compares them by
        # identity); see `kube_nodes.validate`.
        self._entries: dict[str, tuple] = {}
        # A burst of events (a cluster coming up) is validated once, not once per event: the
        # watch thread records each change in _objects and sets _dirty; the recompute worker
        # validates the whole set once for all the events that came meanwhile.
        self._objects_lock = threading.Lock()
        self._recompute_lock = threading.Lock()
        self._dirty = threading.Event()
        self._worker: threading.Thread | None = None

    # -- the agent-facing protocol ---------------------------------------------------------------

    def start(self, notify: Callable[[], None]) -> None:
        if self._thread is not None:
            raise RuntimeError("KubernetesSource already started")
        self._notify = notify
        self._thread = threading.Thread(target=self._run, name="k8s-nodes", daemon=True)
        self._thread.start()
        self._worker = threading.Thread(target=self._recompute_loop, name="k8s-nodes-check", daemon=True)
        self._worker.start()

    def nodes(self) -> tuple[Node, ...] | None:
        with self._lock:
            return self._nodes

    def kept_out(self) -> tuple[tuple[str, str, str], ...]:
        """(node, reason, message) of every Node that is not a peer, in name order; reason is
        one of `kube_nodes.REASONS`."""
        with self._lock:
            problems = self._problems
        return tuple(sorted((name, p.reason, p.message) for (name, _), p in problems.items()
                            if name and p.reason is not None))

    def annotation(self, name: str) -> Any:
        """Node `name`'s WireGuard public key annotation as last listed or watched (raw, or None)."""
        o = self._objects.get(name)   # one dict read: atomic, the watch thread replaces values whole
        return o.wireguard_key if o is not None else None

    def annotate_wireguard_key(self, name: str, public_key: str) -> None:
        """A merge patch of that one annotation of Node `name` (RBAC `patch` on nodes); the watch
        then delivers it.  The answer (the whole Node) is released, not deserialized."""
        from .kube_nodes import WIREGUARD_ANNOTATION
        body = {"metadata": {"annotations": {WIREGUARD_ANNOTATION: public_key}}}
        resp = self._api.patch_node(name, body, _request_timeout=self.request_timeout, _preload_content=False)
        resp.release_conn()  # type: ignore[attr-defined]  # with _preload_content=False: the urllib3 response

    def list_once(self) -> tuple[Node, ...]:
        """One list, validated as the agent does (for `status`, `plan`, `apply`); no watch."""
        self._list()
        return self._nodes or ()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._dirty.set()   # wakes the recompute worker, which sees _stop
        self._interrupt()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("kubernetes: watch thread did not stop within %.0f s", timeout)
        if self._own_client and self._api_client is not None:
            try:
                self._api_client.close()
            except Exception:  # closing twice, or a half-open pool: nothing left to release
                pass
            self._api_client = None

    # -- list / watch loop -------------------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0  # consecutive failures, for the backoff
        listed_at = 0.0
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                if self._rv is None or time.monotonic() - listed_at >= self.resync_seconds:
                    self._list()
                    listed_at = time.monotonic()
                remaining = self.resync_seconds - (time.monotonic() - listed_at)
                self._watch(max(1, min(self.watch_timeout_seconds, int(remaining) + 1)))
                attempt = 0
            except _Gone as e:
                log.info("kubernetes: %s: relisting Nodes", e)
                self._rv = None
                attempt += 1
                if attempt > 1:  # a second 410 in a row: do not hammer the server
                    self._stop.wait(self._delay(attempt - 1))
            except Exception as e:  # every failure is retried; the peers stay
                if self._stop.is_set():
                    break
                if time.monotonic() - began > STABLE_SECONDS:
                    attempt = 0  # a watch that ran for a while before breaking: start over
                self.connected = False
                self.failures += 1
                attempt += 1
                delay = self._delay(attempt)
                log.warning("kubernetes: %s; keeping %s peers, retrying in %.2f s",
                            describe(e), len(self._nodes or ()), delay)
                self._stop.wait(delay)

    def _delay(self, attempt: int) -> float:
        """Capped exponential backoff with jitter (50-100 % of the step)."""
        cap = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
        return cap * random.uniform(0.5, 1.0)

    def _interrupt(self) -> None:
        resp = self._resp
        if resp is None:
            return
        try:
            resp.shutdown()
        except Exception:
            try:
                resp.connection.sock.shutdown(2)
            except Exception:  # already closed
                pass

    def _open(self, **kwargs):
        """One raw (unparsed) request for /api/v1/nodes; raises ApiException on non-2xx."""
        try:
            return self._api.list_node(_preload_content=False, **kwargs)
        except ApiException as e:
            if e.status == 410:
                raise _Gone(f"HTTP 410 {e.reason}") from None
            raise

    def _list(self) -> None:
        """List every Node in pages of LIST_PAGE (`limit`/`continue`),
        keeping only each Node's `NodeObject`: a page's body is dropped before the next is read, so
        memory does not grow with the size of Node objects (a kubelet's reports its images)."""
        objects: dict[str, NodeObject] = {}
        with self._objects_lock:
            known = self._objects
        token, rv = None, None
        while True:
            kwargs = {"limit": LIST_PAGE, "_request_timeout": (5, self.request_timeout)}
            if token:
                kwargs["_continue"] = token
            body = self._get(**kwargs)
            rv = _rv(body)
            if rv is None:
                raise Transient("Node list has no metadata.resourceVersion")
            for item in body.get("items") or []:
                if not isinstance(item, dict):
                    continue
                o = node_object(item)
                if o is not None:
                    # An unchanged Node keeps the object the cache holds: the page's strings are freed
                    # with the page, not kept alive (scattered) by a copy of what we already have.
                    old = known.get(o.name)
                    objects[o.name] = old if old == o else o
            token = (body.get("metadata") or {}).get("continue")
            del body
            if self._stop.is_set():
                return
            if not token:
                break
        self.connected, self.failures = True, 0
        self.relists += 1
        log.info("kubernetes: listed %d Nodes at resourceVersion %s", len(objects), rv)
        with self._objects_lock:
            self._objects = objects
        self._rv = rv
        self._recompute()

    def _get(self, **kwargs) -> dict:
        """One page of the Node list, parsed."""
        resp = self._open(**kwargs)
        self._resp = resp
        try:
            return json.loads(resp.data)
        finally:
            self._resp = None
            resp.release_conn()

    def _watch(self, timeout_seconds: int) -> None:
        resp = self._open(watch=True, resource_version=self._rv, allow_watch_bookmarks=True,
                          timeout_seconds=timeout_seconds,
                          _request_timeout=(5, timeout_seconds + self.request_timeout))
        self._resp = resp
        self.connected, self.failures = True, 0
        try:
            if self._stop.is_set():  # stop() came between the loop's check and this request
                return
            for line in iter_resp_lines(resp):
                if self._stop.is_set():
                    return
                if line.strip():
                    self._event(json.loads(line))
        finally:
            self._resp = None
            resp.release_conn()

    def _event(self, event: dict) -> None:
        kind, obj = event.get("type"), event.get("object")
        if kind == "ERROR":
            status = obj if isinstance(obj, dict) else {}
            if status.get("code") == 410:
                raise _Gone(f"watch ERROR 410 {status.get('reason')}: {status.get('message')}")
            raise ApiException(status=status.get("code") or 500,
                               reason=f"watch ERROR {status.get('reason')}: {status.get('message')}")
        rv = _rv(obj)
        if rv is not None:
            self._rv = rv
        if kind == "BOOKMARK" or kind not in ("ADDED", "MODIFIED", "DELETED"):
            return
        if not isinstance(obj, dict):
            log.warning("kubernetes: ignoring a %s event without an object", kind)
            return
        o = node_object(obj)
        if o is None:
            return
        with self._objects_lock:
            if kind == "DELETED":
                changed = self._objects.pop(o.name, None) is not None
            else:
                changed = self._objects.get(o.name) != o
                if changed:   # a heartbeat keeps the object we have (and frees the event's)
                    self._objects[o.name] = o
        if changed:  # heartbeats and label edits stop here
            self._dirty.set()

    def _recompute_loop(self) -> None:
        while True:
            self._dirty.wait()
            if self._stop.is_set():
                return
            self._dirty.clear()
            try:
                self._recompute()
            except Exception:  # never let the worker die: the next event tries again
                log.exception("kubernetes: validating the Nodes failed")

    # -- validation ----------------------------------------------------------------------------------

    def _recompute(self) -> None:
        with self._recompute_lock:
            with self._objects_lock:
                objects = dict(self._objects)
            self._recompute_from(objects)

    def _recompute_from(self, objects: dict[str, NodeObject]) -> None:
        nodes, problems, self._entries = validate(objects, self.cluster, self.underlay_family, self._entries,
                                                  self.local_node)
        for key, p in sorted(problems.items()):
            if key not in self._reported:
                log.log(p.level, "kubernetes: %s", p.message)
        claimed = {name for (name, _), p in self._problems.items() if p.reason in (SUBNET_TAKEN, ADDRESS_TAKEN)}
        for n in nodes:   # a claimant whose holder left (or gave the value up) holds it now
            if n.name in claimed:
                log.warning("kubernetes: node %s is no longer kept out: what it claimed is free now", n.name)
        self._reported = set(problems)
        with self._lock:
            old, self._nodes, self._problems = self._nodes, nodes, problems
        if nodes != old:
            log_change(old or (), nodes)
            try:
                self._notify()
            except Exception:  # the agent's callback must not kill the watch thread
                log.exception("kubernetes: notify callback failed")
