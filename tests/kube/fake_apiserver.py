"""A small in-process Kubernetes API server for /api/v1/nodes, for tests.

Why this exists: no real API server can run on the test machines, yet the
Kubernetes source must be tested through the real ``kubernetes`` client and a
kubeconfig.  This server speaks the parts of the list/watch protocol the client
uses, over real HTTP/1.1 on 127.0.0.1 (random port):

* ``GET /api/v1/nodes``: a NodeList with ``metadata.resourceVersion``; with
  ``limit=N`` one page of at most N Nodes (by name) and ``metadata.continue``
  while more remain; ``continue=TOKEN`` the next page of the same snapshot
  (same resourceVersion), as the real server serves them from etcd.  After
  `compact` a continue token is too old: HTTP 410 ``Expired``, list again.
* ``GET /api/v1/nodes?watch=true&resourceVersion=N``: a chunked stream of JSON
  lines (ADDED / MODIFIED / DELETED) for every change after N, BOOKMARKs when
  ``allowWatchBookmarks=true`` and the test asks for one, closed cleanly when
  ``timeoutSeconds`` expires.  A compacted (too old) N gets an ERROR event with a
  ``Status`` of code 410 (or, with ``gone_as_http=True``, an HTTP 410).
* Bearer token required (401 otherwise), like a real server.

A Node added without ``metadata.creationTimestamp`` gets the time of the add,
in whole seconds, as a real server sets it; `make_node(created=...)` gives one
(an older Node, or a garbage value as a broken client could not send).

The test drives it: add / modify / delete / heartbeat Nodes, `bookmark`,
`expire_watches`, `compact` (410), `drop_connections`, `down` / `up`.  Every
request is recorded in `requests` so tests can check what the client asked.
"""
from __future__ import annotations

import copy
import json
import select
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

TOKEN = "ovs-mesh-test-token"


def make_node(name: str, ip: str | None = None, pod_cidr: str | None = None, *,
              addresses: list[dict] | None = None, pod_cidrs: list[str] | None = None,
              created=None) -> dict:
    """A Node object shaped like a kubelet-registered one; `created`: its creationTimestamp
    (default: set by the server when added)."""
    if addresses is None:
        addresses = ([{"type": "InternalIP", "address": ip}] if ip else []) + [
            {"type": "Hostname", "address": name}]
    spec: dict = {}
    if pod_cidr is not None:
        spec["podCIDR"] = pod_cidr
        spec["podCIDRs"] = pod_cidrs or [pod_cidr]
    meta = {"name": name, "uid": str(uuid.uuid4()),
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}}
    if created is not None:
        meta["creationTimestamp"] = created
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": meta,
        "spec": spec,
        "status": {
            "addresses": addresses,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "lastHeartbeatTime": _now(), "lastTransitionTime": _now()}],
            "nodeInfo": {"kubeletVersion": "v1.30.0", "operatingSystem": "linux",
                         "architecture": "amd64"},
        },
    }


def kubelet_node(name: str, ip: str, pod_cidr: str, images: int = 40) -> dict:
    """A Node as a kubelet reports it (about 9 KB of JSON): `make_node` plus what the mesh never reads:
    kubeadm's labels and annotations, capacity, allocatable, five conditions, daemonEndpoints,
    nodeInfo, and `images` container images in status.images (kubelet reports up to 50)."""
    node = make_node(name, ip, pod_cidr)
    meta, status = node["metadata"], node["status"]
    meta["labels"].update({"beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                           "kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": "m5.xlarge",
                           "topology.kubernetes.io/region": "eu-west-1",
                           "topology.kubernetes.io/zone": "eu-west-1a"})
    meta["annotations"] = {"kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock",
                           "node.alpha.kubernetes.io/ttl": "0",
                           "volumes.kubernetes.io/controller-managed-attach-detach": "true"}
    meta["creationTimestamp"] = _now()
    resources = {"cpu": "4", "ephemeral-storage": "101430960Ki", "hugepages-1Gi": "0", "hugepages-2Mi": "0",
                 "memory": "16265116Ki", "pods": "110"}
    status["capacity"], status["allocatable"] = resources, {**resources, "cpu": "3920m", "memory": "15598364Ki"}
    beat = _now()
    status["conditions"] = [
        {"type": t, "status": "False", "reason": r, "message": m, "lastHeartbeatTime": beat, "lastTransitionTime": beat}
        for t, r, m in (("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                        ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                        ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                        ("NetworkUnavailable", "RouteCreated", "RouteController created a route"))
    ] + [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": beat,
          "lastTransitionTime": beat, "message": "kubelet is posting ready status. AppArmor enabled"}]
    status["conditions"].insert(0, status["conditions"].pop())   # Ready first: what `heartbeat` touches
    status["daemonEndpoints"] = {"kubeletEndpoint": {"Port": 10250}}
    status["images"] = [{"names": [f"quay.io/app-{k}@sha256:{(k * 7919 + 17):064x}",
                                   f"quay.io/app-{k}:v1.{k}"],
                         "sizeBytes": 12_000_000 + k * 1_234_567} for k in range(images)]
    status["nodeInfo"] = {"architecture": "amd64", "bootID": str(uuid.uuid4()),
                          "containerRuntimeVersion": "containerd://1.7.13", "kernelVersion": "6.1.0-18-cloud-amd64",
                          "kubeProxyVersion": "v1.30.0", "kubeletVersion": "v1.30.0", "machineID": uuid.uuid4().hex,
                          "operatingSystem": "linux", "osImage": "Debian GNU/Linux 12 (bookworm)",
                          "systemUUID": str(uuid.uuid4())}
    return node


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def timestamp(seconds_ago: float) -> str:
    """A creationTimestamp `seconds_ago` seconds in the past, as the API server writes it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - seconds_ago))


class _Watcher:
    def __init__(self, rv: int, bookmarks: bool):
        self.cursor = rv
        self.bookmarks = bookmarks
        self.expire = False
        self.bookmark_due = False


class FakeApiServer:
    def __init__(self, gone_as_http: bool = False):
        self.gone_as_http = gone_as_http
        self.cond = threading.Condition()
        self.nodes: dict[str, dict] = {}
        self.rv = 100
        self.history: list[tuple[int, str, dict]] = []  # (rv, type, object) after `compacted`
        self.compacted = 100  # watches from an rv below this get 410
        self.watchers: set[_Watcher] = set()
        self.requests: list[dict] = []
        self.snapshots: dict[str, tuple[int, list[str]]] = {}   # continue token's list -> (rv, its Node names)
        self.after_page = None   # called (outside the lock) after each page of a list in pages is served
        self.conns: set[socket.socket] = set()
        self.patches: list[tuple[str, str, dict]] = []   # (Node name, Content-Type, body) of each PATCH
        self.may_patch = True    # False: PATCH is refused as an RBAC without `patch` on nodes would
        self.port = 0
        self.httpd: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self.up()

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        """Listen (again, on the same port after `down`)."""
        server = self

        class Handler(_Handler):
            fake = server

        httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        httpd.daemon_threads = True
        self.port = httpd.server_address[1]
        self.httpd = httpd
        self.thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="fake-apiserver", daemon=True)
        self.thread.start()

    def down(self) -> None:
        """Stop listening and cut every connection (connection refused from now on)."""
        if self.httpd is None:
            return
        self.httpd.shutdown()
        self.httpd.server_close()
        self.httpd = None
        self.thread.join(5)
        self.drop_connections()

    def close(self) -> None:
        self.down()

    def kubeconfig(self, path: str) -> str:
        """Write a kubeconfig pointing at this server; returns the path."""
        cfg = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "agent", "user": {"token": TOKEN}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "agent"}}],
        }
        with open(path, "w", encoding="utf-8") as f:
            json.dump(cfg, f)  # JSON is YAML
        return path

    # -- driving the state -----------------------------------------------------------------------

    def _emit(self, kind: str, obj: dict, record: bool = True) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        if record:
            self.history.append((self.rv, kind, copy.deepcopy(obj)))
        self.cond.notify_all()

    def add(self, node: dict, record: bool = True) -> None:
        with self.cond:
            name = node["metadata"]["name"]
            assert name not in self.nodes, name
            self.nodes[name] = copy.deepcopy(node)
            self.nodes[name]["metadata"].setdefault("creationTimestamp", _now())
            self._emit("ADDED", self.nodes[name], record)

    def add_many(self, nodes: list[dict]) -> None:
        with self.cond:
            for node in nodes:
                name = node["metadata"]["name"]
                self.nodes[name] = copy.deepcopy(node)
                self.nodes[name]["metadata"].setdefault("creationTimestamp", _now())
                self._emit("ADDED", self.nodes[name])

    def modify(self, name: str, fn, record: bool = True) -> None:
        """Apply fn(node dict) and send MODIFIED."""
        with self.cond:
            fn(self.nodes[name])
            self._emit("MODIFIED", self.nodes[name], record)

    def set_ip(self, name: str, ip: str) -> None:
        def fn(n):
            for a in n["status"]["addresses"]:
                if a["type"] == "InternalIP":
                    a["address"] = ip
        self.modify(name, fn)

    def set_pod_cidr(self, name: str, cidr: str) -> None:
        def fn(n):
            n["spec"]["podCIDR"] = cidr
            n["spec"]["podCIDRs"] = [cidr]
        self.modify(name, fn)

    def set_pod_cidrs(self, name: str, cidrs: list[str]) -> None:
        """What kube-controller-manager writes on a dual-stack Node: podCIDR is podCIDRs[0]."""
        def fn(n):
            n["spec"]["podCIDR"] = cidrs[0]
            n["spec"]["podCIDRs"] = list(cidrs)
        self.modify(name, fn)

    def heartbeat(self, name: str) -> None:
        """What kubelet does every few seconds: a MODIFIED with nothing we care about."""
        def fn(n):
            if isinstance(n.get("status"), dict) and n["status"].get("conditions"):   # not on a garbage status
                n["status"]["conditions"][0]["lastHeartbeatTime"] = _now()
            n["metadata"].setdefault("annotations", {})["beat"] = str(time.monotonic())
        self.modify(name, fn)

    def delete(self, name: str, record: bool = True) -> None:
        with self.cond:
            node = self.nodes.pop(name)
            self._emit("DELETED", node, record)

    def bookmark(self) -> None:
        """Send a BOOKMARK (current resourceVersion) on every watch that allowed them."""
        with self.cond:
            for w in self.watchers:
                w.bookmark_due = w.bookmarks
            self.cond.notify_all()

    def expire_watches(self) -> None:
        """End every open watch cleanly, as when timeoutSeconds runs out."""
        with self.cond:
            for w in self.watchers:
                w.expire = True
            self.cond.notify_all()

    def compact(self) -> None:
        """Forget the history (etcd compaction): every open and future watch from an older
        resourceVersion gets 410 Gone; only a new list helps."""
        with self.cond:
            self.rv += 1
            self.compacted = self.rv
            self.history.clear()
            self.snapshots.clear()   # continue tokens expire with the history
            self.cond.notify_all()

    def drop_connections(self) -> None:
        """Cut every TCP connection mid-stream (no clean chunked end)."""
        with self.cond:
            conns = list(self.conns)
            self.conns.clear()
            self.cond.notify_all()
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def count(self, **match) -> int:
        with self.cond:
            return sum(all(r.get(k) == v for k, v in match.items()) for r in self.requests)

    def watching(self) -> int:
        with self.cond:
            return len(self.watchers)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streams, like the real server
    fake: FakeApiServer

    def log_message(self, fmt, *args):  # keep pytest output clean
        pass

    def setup(self):
        super().setup()
        with self.fake.cond:
            self.fake.conns.add(self.connection)

    def finish(self):
        with self.fake.cond:
            self.fake.conns.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def _json(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    @staticmethod
    def _status(code: int, reason: str, message: str) -> dict:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}

    def do_GET(self):  # http.server's naming
        url = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        fake = self.fake
        watch = q.get("watch") in ("true", "1")
        with fake.cond:
            fake.requests.append({"watch": watch, "rv": q.get("resourceVersion"),
                                  "bookmarks": q.get("allowWatchBookmarks") == "true",
                                  "timeout": q.get("timeoutSeconds"), "limit": q.get("limit"),
                                  "continue": q.get("continue")})
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._json(401, self._status(401, "Unauthorized", "Unauthorized"))
        if url.path != "/api/v1/nodes":
            return self._json(404, self._status(404, "NotFound", f"{url.path} not found"))
        if not watch:
            return self._list(q)
        return self._watch(q)

    def do_PATCH(self):  # http.server's naming
        """A merge patch of one Node's metadata.annotations (what the agent sends), as MODIFIED."""
        fake = self.fake
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        name = urlsplit(self.path).path.rsplit("/", 1)[-1]
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._json(401, self._status(401, "Unauthorized", "Unauthorized"))
        if not fake.may_patch:
            return self._json(403, self._status(403, "Forbidden", f'nodes "{name}" is forbidden: cannot patch'))
        with fake.cond:
            fake.patches.append((name, self.headers.get("Content-Type", ""), body))
            node = fake.nodes.get(name)
            if node is None:
                return self._json(404, self._status(404, "NotFound", f'nodes "{name}" not found'))
            notes = (body.get("metadata") or {}).get("annotations") or {}
            node["metadata"].setdefault("annotations", {}).update(notes)
            fake._emit("MODIFIED", node)
            out = copy.deepcopy(node)
        return self._json(200, out)

    def _list(self, q: dict) -> None:
        fake = self.fake
        raw = q.get("limit", "")
        limit = int(raw) if raw.isdigit() and int(raw) > 0 else None   # none (or 0): every Node
        with fake.cond:
            token = q.get("continue")
            if token:
                key, _, offset = token.rpartition(":")
                if key not in fake.snapshots or not offset.isdigit():
                    return self._json(410, self._status(410, "Expired", "The provided continue parameter is "
                                                        "too old to display a consistent list result."))
                rv, names = fake.snapshots[key]
                start = int(offset)
            else:
                rv, names, start = fake.rv, sorted(fake.nodes), 0
                key = uuid.uuid4().hex
            end = len(names) if limit is None else min(len(names), start + limit)
            # The snapshot holds names; a Node changed since is served as it is now (a real server serves
            # it as of the snapshot: the watch from `rv` then replays the change, which is the same end state).
            items = [copy.deepcopy(fake.nodes[n]) for n in names[start:end] if n in fake.nodes]
            meta = {"resourceVersion": str(rv)}
            if end < len(names):
                fake.snapshots[key] = (rv, names)
                meta.update({"continue": f"{key}:{end}", "remainingItemCount": len(names) - end})
            else:
                fake.snapshots.pop(key, None)
        self._json(200, {"kind": "NodeList", "apiVersion": "v1", "metadata": meta, "items": items})
        if limit is not None and fake.after_page is not None:
            fake.after_page()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event(self, kind: str, obj: dict) -> None:
        self._chunk(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

    def _gone(self, rv: int) -> dict:
        return self._status(410, "Expired", f"too old resource version: {rv} ({self.fake.compacted})")

    def _client_gone(self) -> bool:
        """The client closed its end (a real server notices through its request context)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _watch(self, q: dict) -> None:
        fake = self.fake
        try:
            rv = int(q.get("resourceVersion") or 0)
        except ValueError:
            return self._json(400, self._status(400, "BadRequest", "bad resourceVersion"))
        timeout = float(q.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        if rv < fake.compacted and fake.gone_as_http:
            return self._json(410, self._gone(rv))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        w = _Watcher(rv, q.get("allowWatchBookmarks") == "true")
        with fake.cond:
            fake.watchers.add(w)
        try:
            while True:
                with fake.cond:
                    if w.cursor < fake.compacted:
                        out, end = [("ERROR", self._gone(w.cursor))], True
                    else:
                        out = [(k, o) for r, k, o in fake.history if r > w.cursor]
                        if out:
                            w.cursor = int(out[-1][1]["metadata"]["resourceVersion"])
                        if w.bookmark_due and not out:
                            w.bookmark_due = False
                            w.cursor = fake.rv
                            out = [("BOOKMARK", {"kind": "Node", "apiVersion": "v1",
                                                 "metadata": {"resourceVersion": str(fake.rv)}})]
                        end = (w.expire or time.monotonic() >= deadline
                               or self.connection not in fake.conns or self._client_gone())
                    if not out and not end:
                        fake.cond.wait(min(0.1, max(0.0, deadline - time.monotonic())))
                        continue
                for kind, obj in out:
                    self._event(kind, obj)
                if end:
                    break
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True
        finally:
            with fake.cond:
                fake.watchers.discard(w)
