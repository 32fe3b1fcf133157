"""A topology file re-read on every edit, parsed again only where it changed.

Why: an agent re-reads its topology file on every edit; parsing and
validating a 5000-node file whole costs ~0.7 s, while an edit (a join, a
leave, an IP change) touches one entry.  `ConfigItems.parse` gives exactly
what `config.file.config_from_bytes` gives (the same Config, or a ConfigError
with the same problems), but keeps, per entry text of the `nodes:` sequence,
the built entry and its own checks (`topology.nodes.node_entry`); only new
entry texts and the rest of the document (the header) are parsed, and the
checks across entries run over the cached results (a few dict lookups each).

The file stays the whole truth: every call sees the whole text, and a bad
edit is rejected whole.  The fast path applies only to the simple shape
generators and people write: a line `nodes:` at column 0, followed by block
sequence entries (`- ...` lines at one indent, continuation lines indented
deeper).  Anything else, and any YAML error in any piece, goes to the full
parse, so every error message (with its line number) is the full parse's.  The
bounds of `config.file` hold across the pieces: an entry is built with the
two levels above it counted (MAX_DEPTH), and the pieces' YAML nodes and
aliased nodes are summed against MAX_NODES and MAX_ALIAS_NODES (over the limit:
the full parse says so).  Size, UTF-8 and regular files are checked before
(`read_bytes`, `decode`).
"""
from __future__ import annotations

import dataclasses
import re
import socket
from typing import Any

import yaml

from topology.config import ConfigError, parse_config
from topology.model import Cluster, Config, Node
from topology.nodes import Entry, node_entry

from .file import MAX_ALIAS_NODES, MAX_NODES, build, config_from_bytes, decode

_BREAKS = ("\r", "\x85", "\u2028", "\u2029")   # line breaks YAML knows besides \n: full parse


class _Fallback(Exception):
    """Not the simple shape, or a piece failed to parse: the full parse decides."""


@dataclasses.dataclass
class _Piece:
    value: Any
    nodes: int
    aliased: int
    cluster: Cluster | None = None   # the entry's own checks, made for this (interned) cluster
    checked: Entry | None = None

    def entry(self, cluster: Cluster) -> Entry:
        if self.cluster is not cluster:   # parse_config never requires subnets here
            self.checked, self.cluster = node_entry(self.value[0], cluster), cluster   # a 1-item list
        return self.checked


@dataclasses.dataclass(frozen=True)
class Delta:
    """What changed between two good configs' nodes, by name (None from `ConfigItems.delta`:
    unknown, treat everything as changed)."""
    added: tuple[Node, ...] = ()
    removed: tuple[Node, ...] = ()
    changed: tuple[tuple[Node, Node], ...] = ()   # (old, new)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    @property
    def names(self) -> set[str]:
        return {n.name for n in self.added + self.removed} | {new.name for _, new in self.changed}


_NODES = re.compile(r"^nodes: *\n", re.M)
_FIRST = re.compile(r"(?: *\n)*( *)-(?: |\n|$)")


def split(text: str) -> tuple[str, list[str]] | None:
    """(the text without the entries of `nodes:`, each entry's text dedented), or None when
    the document is not in the simple shape (see the module doc).  Regular expressions,
    not a loop over 15 000 lines."""
    if any(b in text for b in _BREAKS):
        return None
    m = _NODES.search(text)
    first = m and _FIRST.match(text, m.end())
    if not first:
        return None
    n, start = len(first.group(1)), first.start(1)
    # The block ends at the first line that is not blank, not an entry at this indent and
    # not indented deeper (a continuation).
    end = re.compile(rf"^(?! {{{n}}}-(?: |$)| {{{n + 1}}}| *$)", re.M).search(text, start)
    stop = end.start() if end else len(text)
    items = re.split(rf"(?m)^(?= {{{n}}}-(?: |$))", text[start:stop])[1:]
    if n:
        items = [re.sub(rf"(?m)^ {{0,{n}}}", "", item) for item in items]
    return text[:start] + text[stop:], items


class ConfigItems:
    """`parse` = `config_from_bytes`, re-parsing only new entries (see the module doc)."""

    def __init__(self) -> None:
        self._pieces: dict[str, _Piece] = {}          # of the last document read
        self._header: tuple[str, _Piece] | None = None
        self._cluster: Cluster | None = None
        # The last good config, with its entry texts and their pieces (None: by the full parse).
        self._good: tuple[list[str] | None, dict[str, _Piece], Config] | None = None
        self.delta: Delta | None = None     # from the previous good config to the last one (None: unknown)
        self.fast = False                   # the last parse took the fast path

    def parse(self, data: bytes, path: str, overrides: dict | None = None, require_local: bool = True,
              default_node: str | None = None) -> Config:
        text = decode(data, path)
        node = socket.gethostname() if default_node is None else default_node
        try:
            self.fast = True
            texts, config = self._fast(text, path, overrides, require_local, node)
        except _Fallback:
            self.fast = False
            self._pieces = {}
            config = config_from_bytes(data, path, overrides, require_local, node)
            texts = None
        self.delta = self._delta(texts, config)
        self._good = (texts, self._pieces, config)
        return config

    # -- the fast path ------------------------------------------------------------
    def _fast(self, text, path, overrides, require_local, default_node):
        parts = split(text)
        if parts is None:
            raise _Fallback()
        header_text, texts = parts
        if self._header is not None and self._header[0] == header_text:
            header = self._header[1]
        else:
            header = self._build(header_text, path, 0)
            self._header = (header_text, header)
        doc = header.value
        if not isinstance(doc, dict) or "nodes" not in doc or doc["nodes"] is not None:
            raise _Fallback()
        old, pieces = self._pieces, {}
        good = self._good[1] if self._good is not None else {}
        for t in texts:
            p = pieces.get(t) or old.get(t) or good.get(t)
            if p is None:
                p = self._build(t, path, 1)
                if not isinstance(p.value, list) or len(p.value) != 1:
                    raise _Fallback()
            pieces[t] = p
        self._pieces = pieces
        # The whole document's counts: the header's `nodes: null` stands for the sequence,
        # each entry was built as a one-item sequence.
        listed = [pieces[t] for t in texts]
        if (header.nodes + sum(p.nodes - 1 for p in listed) > MAX_NODES
                or header.aliased + sum(p.aliased for p in listed) > MAX_ALIAS_NODES):
            raise _Fallback()
        doc = dict(doc)
        doc["nodes"] = [p.value[0] for p in listed]

        interned: list[Cluster] = []   # one Cluster object as long as it is equal: `is` per entry

        def entries(i: int, raw: Any, cluster: Cluster) -> Entry:
            if not interned:
                if cluster != self._cluster:
                    self._cluster = cluster
                interned.append(self._cluster)
            return listed[i].entry(interned[0])

        return texts, parse_config(doc, overrides, require_local, default_node=default_node, entries=entries)

    @staticmethod
    def _build(text: str, path: str, base_depth: int) -> _Piece:
        stats: dict = {}
        try:
            value = build(text, path, base_depth, stats)
        except (yaml.YAMLError, ConfigError, RecursionError):
            raise _Fallback() from None
        return _Piece(value, stats["nodes"], stats["aliased"])

    # -- what changed ---------------------------------------------------------------
    def _delta(self, texts: list[str] | None, config: Config) -> Delta | None:
        """Nodes added, removed, changed since the last good config, found from the entry
        texts that changed (O(changed)); None when that is not known."""
        if self._good is None:
            return None
        old_texts, old_pieces, old = self._good
        if (old.cluster, old.local, old.source, old.kubernetes, old.health) != (
                config.cluster, config.local, config.source, config.kubernetes, config.health):
            return None   # the cluster, local or health settings changed: everything may have
        if texts is None or old_texts is None:
            return _by_name(old.nodes, config.nodes)
        gone = set(old_texts).difference(texts)
        new = set(texts).difference(old_texts)
        if len(gone) + len(new) > 64:
            return _by_name(old.nodes, config.nodes)
        # In a good config every entry is a Node (or an empty `- ` entry, which is skipped).
        cluster = config.cluster
        cluster = self._cluster if cluster == self._cluster else cluster
        before = {e.node.name: e.node for t in gone if (e := old_pieces[t].entry(cluster)).node is not None}
        after = {e.node.name: e.node for t in new if (e := self._pieces[t].entry(cluster)).node is not None}
        return Delta(added=tuple(n for k, n in sorted(after.items()) if k not in before),
                     removed=tuple(n for k, n in sorted(before.items()) if k not in after),
                     changed=tuple((before[k], n) for k, n in sorted(after.items())
                                   if k in before and before[k] != n))


def _by_name(old: tuple[Node, ...], new: tuple[Node, ...]) -> Delta:
    a, b = {n.name: n for n in old}, {n.name: n for n in new}
    return Delta(added=tuple(n for k, n in b.items() if k not in a),
                 removed=tuple(n for k, n in a.items() if k not in b),
                 changed=tuple((a[k], n) for k, n in b.items() if k in a and a[k] != n))
