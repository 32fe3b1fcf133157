"""The error hierarchy every layer shares (this package is the lowest layer).

What a caller does with an error depends only on its class:

- `InputError`: bad input (config, Node objects, CLI arguments). Exit code 2; the
  agent logs it once and keeps the last good state. Carries structured `Problem`s.
- `NotOurs`: something we would have to change is not tagged as ours. Refuse, never adopt.
- `Transient`: the other side (OVSDB, OpenFlow, the API server) failed for now. Retry
  with backoff.

Anything else is a bug or a runtime failure: exit code 1.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable

SHOW_MAX = 80  # a value is quoted at most this long in a message


def show(value: object) -> str:
    """A value as a message quotes it: YAML spelling for null/bools, at most SHOW_MAX characters."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (list, tuple, dict)):
        # str() of a container is unbounded (aliases share subtrees, so a small file can
        # stand for gigabytes of text): render only the first SHOW_MAX characters.
        text = _prefix(value)
        if len(text) > SHOW_MAX:
            return text[:SHOW_MAX].replace("\n", "\\n") + "..."
    else:
        text = str(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= SHOW_MAX else text[:SHOW_MAX] + f"... ({len(text)} characters)"


def _prefix(value: object) -> str:
    """str(value) for lists, tuples and dicts, cut a little past SHOW_MAX characters.

    Iterative, so neither depth nor a self-referencing value can make it recurse."""
    out: list[str] = []
    size = 0
    stack: list = [value]
    while stack and size <= SHOW_MAX:
        item = stack.pop()
        if isinstance(item, _Text):
            piece: str = item
        elif isinstance(item, dict):
            parts: list = [_Text("{")]
            for i, (k, v) in enumerate(item.items()):
                parts += [_Text(", ")] * bool(i) + [k, _Text(": "), v]
                if i > SHOW_MAX:
                    break
            stack.extend(reversed(parts + [_Text("}")]))
            continue
        elif isinstance(item, (list, tuple)):
            parts = [_Text("[" if isinstance(item, list) else "(")]
            for i, v in enumerate(item[:SHOW_MAX]):
                parts += [_Text(", ")] * bool(i) + [v]
            close = "]" if isinstance(item, list) else ",)" if len(item) == 1 else ")"
            stack.extend(reversed(parts + [_Text(close)]))
            continue
        else:
            piece = repr(item[:SHOW_MAX + 1] if isinstance(item, (str, bytes)) else item)
        out.append(piece)
        size += len(piece)
    return "".join(out)


class _Text(str):
    """Punctuation of a container being rendered (not a value to repr)."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """One rejected value: where it is, what it was, why it is wrong."""
    path: str
    value: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.value}: {self.reason}"


class OvsMeshError(Exception):
    """Base of every error ovs-mesh raises on purpose."""


class InputError(OvsMeshError, ValueError):
    """Invalid input: exit code 2, nothing changed. `problems` lists every one found."""

    def __init__(self, problems: Iterable[Problem | str]):
        self.problems: list[Problem | str] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def errors(self) -> list[str]:
        """The problems as `path: value: reason` lines."""
        return [str(p) for p in self.problems]


class NotOurs(OvsMeshError):
    """An object we would have to change does not carry our tag: refused, never adopted."""


class Transient(OvsMeshError):
    """The other side failed for now (connection, timeout): retry with backoff."""
