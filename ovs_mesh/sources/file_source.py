"""The config file as a live source: the whole `Config`, re-read when the file changes.

The agent needs to react to edits within a second, however they are made: an
editor writing in place, `mv new config.yaml` (atomic rename), or a Kubernetes
ConfigMap volume swapping its `..data` symlink.  So we watch the *directory*
(inotify via `inotify_simple`; polling every 0.2 s where inotify is missing) and
on any event compare the file's identity (device, inode, size, mtime; at once when
the file was renamed into place or closed after writing, after SETTLE_MS for
other events, which may be a save in progress) and then
its bytes: only a real change is parsed, and only where it changed
(`ovs_mesh.config.items`: each entry of `nodes:` is parsed and checked once per
text; a bad edit is still rejected whole, with the full parse's messages).
Unchanged nodes keep their `Node` objects from one config to the next, so the
agent finds what changed with identity checks (`installed.changed_names`);
`delta` names what the last change added, removed and changed.

A good file the incremental parse cannot take (a layout it does not know:
`ConfigItems.fallback` says why) is read whole on every edit: said once in
the log, and counted in `reads` (the agent's metric
`ovs_mesh_config_reads_total{parse="incremental"|"whole"}`).

Bad content is logged once, in one line (the first few ``path: value: reason``
problems) and the last good config stays in force; the same bad content is not
logged again.  Reading is bounded (`ovs_mesh.config.file`): no file can hang,
crash or bloat the agent.

Protocol shared with `KubernetesSource`: ``start(notify)``, ``nodes()``,
``stop()``; plus ``config()`` for the whole document.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from ovs_mesh.config.file import read_bytes
from ovs_mesh.config.items import ConfigItems
from topology.config import ConfigError
from topology.model import Config, Node, NodeDelta

LOG = logging.getLogger(__name__)
POLL_SECONDS = 0.2
LOG_PROBLEMS = 3  # problems quoted in the one log line a bad file gets
SETTLE_MS = 30  # gather the several events of a save in progress into one read

try:  # a small, well-kept ctypes wrapper of inotify(7)
    from inotify_simple import INotify
    from inotify_simple import flags as iflags
except ImportError:  # pragma: no cover - the dependency is in setup.cfg
    INotify = None


class FileSource:
    def __init__(self, path: str, overrides: dict | None = None, require_local: bool = True):
        self.path = os.path.abspath(path)
        self.overrides = dict(overrides or {})
        self.require_local = require_local
        self._config: Config | None = None
        self._items = ConfigItems()
        self.delta: NodeDelta | None = None   # of the last change of the good config (None: not known)
        self._identity = None
        self._digest: bytes | None = None
        self._bad_digest: bytes | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._notify: Callable[[], None] | None = None
        self._inotify: Any = None   # an INotify while watching (the library has no types)
        self.errors: list[str] = []   # of the current bad content, if any
        self.reads = {"incremental": 0, "whole": 0}   # good contents read, by how they were parsed
        self._said_whole: str | None = None   # why the file is read whole, once said

    # -- protocol ---------------------------------------------------------
    def load(self) -> Config:
        """Read the file now; raise ConfigError when it is bad (used at start)."""
        self._check(raise_errors=True)
        assert self._config is not None
        return self._config

    def start(self, notify: Callable[[], None]) -> None:
        self._notify = notify
        if self._config is None:
            self._check()
        if INotify is not None:
            try:
                self._inotify = INotify()
                mask = (iflags.CLOSE_WRITE | iflags.MOVED_TO | iflags.MOVED_FROM | iflags.CREATE
                        | iflags.DELETE | iflags.MODIFY | iflags.ATTRIB)
                self._inotify.add_watch(os.path.dirname(self.path), mask)
            except OSError as e:
                LOG.info("inotify unavailable (%s); polling %s every %.1fs", e, self.path, POLL_SECONDS)
                self._inotify = None
        self._thread = threading.Thread(target=self._run, name="file-source", daemon=True)
        self._thread.start()

    def config(self) -> Config | None:
        with self._lock:
            return self._config

    def nodes(self) -> tuple[Node, ...] | None:
        c = self.config()
        return None if c is None else c.nodes

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None

    # -- internals --------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            if self._inotify is not None:
                try:
                    # Wake up at least every second even without events: a
                    # watched directory can itself be replaced.
                    events = self._inotify.read(timeout=1000)
                    if events and not self._complete(events):
                        self._stop.wait(SETTLE_MS / 1000)   # a write in progress: gather its events
                        self._inotify.read(timeout=0)
                except (OSError, ValueError):
                    if self._stop.is_set():
                        return
                    self._stop.wait(POLL_SECONDS)
            else:
                self._stop.wait(POLL_SECONDS)
            if self._stop.is_set():
                return
            try:
                changed = self._check()
            except Exception:  # never let the watcher die
                LOG.exception("reading %s", self.path)
                continue
            if changed and self._notify is not None:
                self._notify()

    def _complete(self, events) -> bool:
        """The events end a change of our file (renamed into place, or closed after writing): read
        it now.  Anything else may be a save in progress: SETTLE_MS first."""
        name = os.path.basename(self.path)
        return any(e.name == name and e.mask & (iflags.MOVED_TO | iflags.CLOSE_WRITE) for e in events)

    def _stat(self):
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def _check(self, raise_errors: bool = False) -> bool:
        """Re-read the file if it changed; True when the good config changed."""
        identity = self._stat()
        if identity is not None and identity == self._identity:
            return False
        try:
            data = read_bytes(self.path)
        except ConfigError as e:  # missing (mid-rename), a FIFO, a device, too large, ...
            if getattr(e, "errno", None) == errno.ENOENT:
                return self._bad(None, e.errors, raise_errors)
            self._identity = identity
            return self._bad(hashlib.sha256(str(e).encode()).digest(), e.errors, raise_errors)
        self._identity = identity
        digest = hashlib.sha256(data).digest()
        if digest == self._digest:  # back to the good content we already have
            if self._bad_digest is not None:
                LOG.info("config %s is back to the config in force", self.path)
            self._bad_digest, self.errors = None, []
            return False
        try:
            config = self._items.parse(data, self.path, self.overrides, self.require_local)
        except ConfigError as e:
            return self._bad(digest, e.errors, raise_errors)
        self._count_read()
        with self._lock:
            old, self._config = self._config, config
            self.delta = self._items.delta
        self._digest, self._bad_digest, self.errors = digest, None, []
        if old is not None:
            d = self.delta
            LOG.info("config %s changed: %d nodes%s", self.path, len(config.nodes),
                     "" if d is None else f" (+{len(d.added)} -{len(d.removed)} ~{len(d.changed)})")
        return old != config

    def _count_read(self) -> None:
        why = self._items.fallback
        self.reads["whole" if why else "incremental"] += 1
        if why and why != self._said_whole:
            LOG.warning("config %s is read whole on every edit, not incrementally: %s (block YAML, "
                        "or JSON with `nodes` a top-level list, is read incrementally)", self.path, why)
        elif not why and self._said_whole:
            LOG.info("config %s is read incrementally again", self.path)
        self._said_whole = why

    def _bad(self, digest: bytes | None, errors: list[str], raise_errors: bool) -> bool:
        if raise_errors:
            raise ConfigError(errors)
        if digest is None:
            # The file is missing (mid-rename, or deleted): wait for it to come back.
            self._identity = None
            if self._bad_digest != b"missing":
                LOG.warning("config %s unreadable; keeping the last good config: %s",
                            self.path, "; ".join(errors))
                self._bad_digest = b"missing"
            return False
        if digest != self._bad_digest:
            self._bad_digest = digest
            self.errors = list(errors)
            # One line, however bad the file: the first few problems, `validate` shows all.
            shown = "; ".join(errors[:LOG_PROBLEMS])
            more = "; and more (ovs-mesh validate lists them)" if len(errors) > LOG_PROBLEMS else ""
            LOG.error("config %s is invalid; keeping the last good config: %s%s", self.path, shown, more)
        return False
