"""Where the node inventory comes from: the config file (inotify) or the Kubernetes API
(list/watch).  Each source parses with the pure model in `topology/` and only does I/O."""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from topology.model import Config


class Source(Protocol):
    """What the agent needs of the config source (`file_source.FileSource`)."""

    def start(self, notify: Callable[[], None]) -> None:
        """Watch in the background; call `notify()` after every change (from any thread)."""

    def config(self) -> Config | None:
        """The last valid config (None before the first).  A source that has only bad
        input may raise InputError; it never returns a config that failed validation."""

    def stop(self) -> None:
        """Stop watching; safe to call twice."""
