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
edit is rejected whole.  The fast path takes the layouts generators and people
write, found by `split`:

- block YAML: a line `nodes:` at column 0, followed by block sequence entries
  (`- ...` lines at one indent, continuation lines indented deeper);
- a flow sequence as the value of the top-level `nodes` key: JSON (`json.dump`,
  compact or indented: JSON is YAML) and flow-style YAML (`yaml.safe_dump(...,
  default_flow_style=True)`), found by regular expressions (`flow_split`).

Every piece is parsed by YAML itself, never by another parser: an entry of a
flow sequence as `[<its text>,]`, exactly the comma that follows it in the file
(`]` for the last one), which must give exactly one item; the rest of the
document with a marker in place of the sequence must give the marker as
`nodes`.  An entry that parses alone to one item, between the same two flow
indicators, is read the same way in place, so the composed document is the
whole one whatever the regular expressions got wrong; when they got it wrong a
piece does not parse, or not to one item, and the full parse decides.
Anything else, and any YAML error in any piece, goes to the full parse, so
every error message (with its line number) is the full parse's; `fallback`
says why a good file was not read incrementally (the agent logs it once and
counts it).  Aliases in the rest of the document send it to the full parse too
(an anchor of an entry would otherwise be missed by a later alias).  The
bounds of `config.file` hold across the pieces: an entry is built with the two
levels above it counted (MAX_DEPTH), and the pieces' YAML nodes and aliased
nodes are summed against MAX_NODES and MAX_ALIAS_NODES (over the limit: the
full parse says so).  Size, UTF-8 and regular files are checked before
(`read_bytes`, `decode`).
"""
from __future__ import annotations

import dataclasses
import re
import socket
from typing import Any

import yaml

from topology.config import ConfigError, parse_config
from topology.model import Cluster, Config, Node, NodeDelta, diff_nodes
from topology.nodes import Entry, node_entry

from .file import MAX_ALIAS_NODES, MAX_NODES, build, config_from_bytes, decode
from .secrets import with_credentials

_BREAKS = ("\r", "\x85", "\u2028", "\u2029")   # line breaks YAML knows besides \n: full parse


class _Fallback(Exception):
    """Not a layout the fast path knows, or a piece failed to parse: the full parse decides.
    The argument says why, for the log line of a good file read whole."""


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
        assert self.checked is not None   # set with self.cluster
        return self.checked


_NODES = re.compile(r"^nodes: *\n", re.M)
_FIRST = re.compile(r"(?: *\n)*( *)-(?: |\n|$)")

# A flow sequence as the value of `nodes` (JSON or flow-style YAML), for `flow_split`.  An entry is
# anything without a comma or closing bracket at its own level: runs of plain characters, quoted
# scalars, comments and bracketed groups nested two deep (a node's `subnet: [a, b]` inside its
# mapping).  Possessive: nothing is tried twice, so a file the expressions do not fit costs one scan.
_FLOW_KEY = re.compile(r"""nodes(["']?)[ \t]*:\s*(?=\[)""")
_Q = r""""(?:[^"\\\n]++|\\.)*+"|'[^'\n]*+(?:''[^'\n]*+)*+'|\#[^\n]*+"""
_A = r"""[^][{},"'\#]++"""
_G0 = rf"(?:{_A}|{_Q}|,)*+"
_G1 = rf"(?:{_A}|{_Q}|,|\[{_G0}\]|\{{{_G0}\}})*+"
_ENTRY = rf"(?:{_A}|{_Q}|\[{_G1}\]|\{{{_G1}\}})*+"
_FLOW_ITEM = re.compile(rf"({_ENTRY})([,\]])")
MARKER = "ovs-mesh-nodes-0c5e2a7f"   # stands for the flow sequence in the rest of the document


def split(text: str) -> tuple[str, list[str]] | None:
    """(the text without the entries of `nodes:`, each entry's text dedented), or None when
    the document is not in the block shape (see the module doc).  Regular expressions,
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


def _key_starts(text: str, m: re.Match) -> bool:
    """The match of _FLOW_KEY is a whole key: `nodes`, `"nodes"` or `'nodes'` after a blank, `{` or `,`."""
    quote = m.group(1)
    at = m.start() - len(quote)
    return at >= 0 and (not quote or text[at] == quote) and (at == 0 or text[at - 1] in "{, \t\n")


def flow_split(text: str) -> tuple[str, list[str]] | None:
    """(the text with MARKER in place of the flow sequence of `nodes`, each entry as the
    YAML text that reads it alone: `[<entry>,]`, `[<entry>]` for the last), or None when no
    single `nodes: [...]` is found.  Whether the pieces are right is YAML's to say (see the
    module doc); this only finds them, at the speed of the regular expression engine."""
    if any(b in text for b in _BREAKS) or MARKER in text:
        return None
    keys = [m for m in _FLOW_KEY.finditer(text) if _key_starts(text, m)]
    if len(keys) != 1:
        return None
    start = pos = keys[0].end() + 1   # after the `[`
    parts: list[str] = []
    match = _FLOW_ITEM.match   # at each position, never a search: one scan of the text at most
    while (m := match(text, pos)) is not None:
        part, pos = m.group(1), m.end()
        if not part.strip():   # no entry: `[]`, or a YAML error for the full parse to tell
            if parts or m.group(2) != "]":
                return None
            break
        if part.strip() == "?":   # an empty explicit key: libyaml reads `[?,]` alone, not `[?, x]` in place
            return None
        parts.append(part)
        if len(parts) > MAX_NODES:   # each entry is a YAML node at least: the full parse refuses the file
            return None
        if m.group(2) == "]":
            break
    else:
        return None
    entries = [f"[{p},]" for p in parts]
    if parts:
        entries[-1] = f"[{parts[-1]}]"
    return text[:start - 1] + MARKER + text[pos:], entries


class ConfigItems:
    """`parse` = `config_from_bytes`, re-parsing only new entries (see the module doc)."""

    def __init__(self) -> None:
        self._pieces: dict[str, _Piece] = {}          # of the last document read
        self._header: tuple[str, _Piece] | None = None
        self._cluster: Cluster | None = None
        # The last good config, with its entry texts and their pieces (None: by the full parse).
        self._good: tuple[list[str] | None, dict[str, _Piece], Config] | None = None
        # from the previous good config's nodes to the last one's (None: unknown, treat all as changed)
        self.delta: NodeDelta | None = None
        self.fast = False                   # the last parse took the fast path
        self.fallback: str | None = None    # why it did not (for a good file: read whole on every edit)

    def parse(self, data: bytes, path: str, overrides: dict | None = None, require_local: bool = True,
              default_node: str | None = None) -> Config:
        text = decode(data, path)
        node = socket.gethostname() if default_node is None else default_node
        try:
            self.fast, self.fallback = True, None
            texts, config = self._fast(text, path, overrides, require_local, node)
        except _Fallback as e:
            self.fast, self.fallback = False, e.args[0]
            self._pieces = {}
            config = config_from_bytes(data, path, overrides, require_local, node)
            texts = None
        self.delta = self._delta(texts, config)
        self._good = (texts, self._pieces, config)
        return config

    # -- the fast path ------------------------------------------------------------
    def _fast(self, text, path, overrides, require_local, default_node):
        parts: tuple[str, list[str]] | None = None
        nodes_value: str | None = None
        if not text.lstrip().startswith("{"):   # a flow mapping has no block entries: not worth a look
            parts = split(text)
        if parts is None:
            parts, nodes_value = flow_split(text), MARKER
        if parts is None:
            raise _Fallback("neither block entries under a line `nodes:` nor one flow sequence `nodes: [...]`")
        header_text, texts = parts
        if self._header is not None and self._header[0] == header_text:
            header = self._header[1]
        else:
            header = self._build(header_text, path, 0)
            self._header = (header_text, header)
        doc = header.value
        if not isinstance(doc, dict) or "nodes" not in doc or doc["nodes"] != nodes_value:
            raise _Fallback("`nodes` is not a top-level key of a mapping")
        if header.aliased:
            raise _Fallback("aliases outside the entries of `nodes`")
        old, pieces = self._pieces, dict[str, _Piece]()
        good = self._good[1] if self._good is not None else {}
        for t in texts:
            p = pieces.get(t) or old.get(t) or good.get(t)
            if p is None:
                p = self._build(t, path, 1)
                if not isinstance(p.value, list) or len(p.value) != 1:
                    raise _Fallback("an entry of `nodes` is not one item when read alone")
            pieces[t] = p
        self._pieces = pieces
        # The whole document's counts: the header's `nodes: null` (or the marker) stands for the
        # sequence, each entry was built as a one-item sequence.
        listed = [pieces[t] for t in texts]
        if (header.nodes + sum(p.nodes - 1 for p in listed) > MAX_NODES
                or header.aliased + sum(p.aliased for p in listed) > MAX_ALIAS_NODES):
            raise _Fallback("over a bound of the whole document")
        doc = dict(doc)
        doc["nodes"] = [p.value[0] for p in listed]

        interned: list[Cluster] = []   # one Cluster object as long as it is equal: `is` per entry

        def entries(i: int, raw: Any, cluster: Cluster) -> Entry:
            if not interned:
                if cluster != self._cluster:
                    self._cluster = cluster
                interned.append(self._cluster)
            return listed[i].entry(interned[0])

        config = parse_config(doc, overrides, require_local, default_node=default_node, entries=entries)
        return texts, with_credentials(config) if require_local else config

    @staticmethod
    def _build(text: str, path: str, base_depth: int) -> _Piece:
        stats: dict = {}
        try:
            value = build(text, path, base_depth, stats)
        except (yaml.YAMLError, ConfigError, RecursionError):
            raise _Fallback("a piece of the document does not parse alone") from None
        return _Piece(value, stats["nodes"], stats["aliased"])

    # -- what changed ---------------------------------------------------------------
    def _delta(self, texts: list[str] | None, config: Config) -> NodeDelta | None:
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
        return diff_nodes(dict(sorted(before.items())), dict(sorted(after.items())))


def _by_name(old: tuple[Node, ...], new: tuple[Node, ...]) -> NodeDelta:
    return diff_nodes({n.name: n for n in old}, {n.name: n for n in new})
