"""The problem collector every config check writes to (pure).

`Checker` gathers `Problem`s (``path: value: reason``) so that a whole file is
reported at once; `topology.config` (cluster, local, top level) and
`topology.nodes` (the node list) both use it.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .errors import InputError, Problem, show

MAX_PROBLEMS = 100  # reported of one document; the rest are counted in one last line
NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
MISSING = object()


class ConfigError(InputError):
    """Invalid config: carries every problem found (`errors` renders them as lines)."""

    errno: int | None = None   # the OSError's when the file could not be opened


class Checker:
    """Collects `Problem`s; values are quoted through `show` (short, YAML spelling).

    Past `limit` problems only `count` grows: a file of 100 000 bad entries costs
    no more to report than one of 100."""

    def __init__(self, limit: int | None = None) -> None:
        self.errors: list[Problem] = []
        self.count = 0
        self.limit = limit

    def error(self, path: str, value: Any, reason: str) -> None:
        self.count += 1
        if self.limit is None or len(self.errors) < self.limit:
            self.errors.append(Problem(path, show(value), reason))

    def problems(self) -> list[Problem]:
        """The problems kept, and one last line counting the others."""
        if self.count <= len(self.errors):
            return self.errors
        return self.errors + [Problem("...", f"{self.count - len(self.errors)} more", "not shown")]

    def mapping(self, path: str, raw: Any, allowed: Iterable[str]) -> dict:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.error(path, raw, "must be a mapping")
            return {}
        allowed = set(allowed)
        reason = f"unknown key (allowed: {', '.join(sorted(allowed))})"
        for key in raw:
            if key not in allowed:
                self.error(f"{path}.{show(key)}" if path else show(key), raw[key], reason)
        return dict(raw)

    def choice(self, path: str, raw: Any, choices: Iterable[str], default: str) -> str:
        if raw is MISSING:
            return default
        if raw not in choices:
            self.error(path, raw, f"must be one of {', '.join(choices)}")
            return default
        return raw

    def integer(self, path: str, raw: Any, default: int, lo: int, hi: int) -> int:
        if raw is MISSING:
            return default
        if isinstance(raw, bool) or not isinstance(raw, int):
            self.error(path, raw, "must be an integer")
            return default
        if not lo <= raw <= hi:
            self.error(path, raw, f"must be between {lo} and {hi}")
            return default
        return raw

    def boolean(self, path: str, raw: Any, default: bool) -> bool:
        if raw is MISSING:
            return default
        if not isinstance(raw, bool):
            self.error(path, raw, "must be true or false")
            return default
        return raw

    def string(self, path: str, raw: Any, default: str | None) -> str | None:
        if raw is MISSING:
            return default
        if not isinstance(raw, str) or not raw:
            self.error(path, raw, "must be a non-empty string")
            return default
        return raw
