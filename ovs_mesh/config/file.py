"""The only code that opens a config (or `--local`) file: reading that cannot be a weapon.

A topology file is shared by every node and edited by people and generators, so
whatever it holds must not take an agent down.  Reading is therefore bounded at
every step, and every refusal is an `InputError` (exit 2, ``path: value: reason``):

- **Only regular files.**  The file is opened non-blocking and checked with
  fstat before a byte is read: a FIFO, `/dev/zero`, a directory or a socket is
  refused at once (a symlink loop fails in open).
- **Size**: at most `MAX_BYTES` (4 MiB; a 5000-node file is about 310 KB).  At
  most `MAX_BYTES + 1` bytes are read, whatever the file claims to be.
- **UTF-8 only**: other encodings (Latin-1) are refused with the offset of the
  first bad byte.
- **Built without recursion**: libyaml's event parser keeps its own stack, but
  PyYAML's composer and constructor recurse (50 000 nested `[` overflowed the C
  stack, 1 000-20 000 levels raised RecursionError).  So `build` makes the
  document from the event stream in one loop with an explicit stack, and
  refuses, as soon as it is crossed, nesting deeper than `MAX_DEPTH`, more than
  `MAX_NODES` nodes, or aliases that stand for more than `MAX_ALIAS_NODES` nodes
  in all (a 520-byte "billion laughs" file stands for 9^9).  Scalars resolve
  exactly as with PyYAML's SafeLoader.  The round-trip (ruamel) path that
  `allocate` uses runs `build` first.

Validation of the decoded document is pure and lives in `topology.config`.
"""
from __future__ import annotations

import io
import os
import socket
import stat
from typing import Any

import yaml

from topology.config import ConfigError, local_key_problems, parse_config
from topology.errors import Problem, show
from topology.model import Config

from .secrets import with_credentials

MAX_BYTES = 4 << 20        # 4 MiB: ~13x a 5000-node file
MAX_DEPTH = 64             # a config is 4 levels deep
MAX_NODES = 100_000        # YAML nodes in the document (a 5000-node file has ~40 000)
MAX_ALIAS_NODES = 10_000   # nodes that all aliases together may stand for

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


def read_bytes(path: str, what: str = "--config") -> bytes:
    """The bytes of a regular file of at most MAX_BYTES; ConfigError otherwise.

    A missing file raises ConfigError with ``errno`` ENOENT set on it (the agent
    waits for a file that is being renamed into place)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        err = ConfigError([Problem(what, path, e.strerror or str(e))])
        err.errno = e.errno
        raise err from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = next((k for test, k in _KINDS if test(st.st_mode)), "not a file")
            raise ConfigError([Problem(what, path, f"not a regular file ({kind})")])
        if st.st_size > MAX_BYTES:
            raise _too_big(what, path)
        chunks, size = [], 0
        while size <= MAX_BYTES:
            chunk = os.read(fd, min(1 << 20, MAX_BYTES + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_BYTES:  # grew while we read, or a file that lies about its size
            raise _too_big(what, path)
        return b"".join(chunks)
    except OSError as e:
        raise ConfigError([Problem(what, path, e.strerror or str(e))]) from None
    finally:
        os.close(fd)


def _too_big(what: str, path: str) -> ConfigError:
    return ConfigError([Problem(what, path, f"larger than {MAX_BYTES} bytes (the limit)")])


def decode(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError([Problem(path, f"byte {e.start}", "not UTF-8")]) from None


def round_trip_yaml():
    """Round-trip YAML (keeps comments): only for writing a user's file back.  ruamel is
    imported here, not at start: reading a config never needs it."""
    from ruamel.yaml import YAML

    y = YAML(typ="rt")
    y.allow_duplicate_keys = False
    return y


# Scalars are resolved and constructed exactly as PyYAML's SafeLoader does (same
# implicit resolvers: ints, floats, bools, nulls, timestamps; same constructors).
_SAFE = yaml.SafeLoader("")
_IMPLICIT = _SAFE.yaml_implicit_resolvers
_STR, _SEQ, _MAP = "tag:yaml.org,2002:str", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"
_MERGE = "tag:yaml.org,2002:merge"
_Refused = yaml.constructor.ConstructorError


def _scalar(event) -> tuple[Any, bool]:
    """(value, is a merge key `<<`) of a scalar event."""
    value, tag = event.value, event.tag
    if tag is None or tag == "!":
        tag = _STR
        if event.implicit[0]:
            for candidate, regexp in _IMPLICIT.get(value[:1], ()):
                if regexp.match(value):
                    tag = candidate
                    break
    if tag == _STR:
        return value, False
    if tag == _MERGE:
        return None, True
    construct = _SAFE.yaml_constructors.get(tag)
    if construct is None or tag in (_SEQ, _MAP):
        raise _Refused(None, None, f"unsupported tag {show(tag)}", event.start_mark)
    try:
        return construct(_SAFE, yaml.ScalarNode(tag, value, event.start_mark, event.end_mark)), False
    except yaml.YAMLError:
        raise
    except Exception as e:  # PyYAML's own: 2001-13-45, a 5000-digit int, `!!int ''` (IndexError)
        raise _Refused(None, None, f"{show(value)}: {show(e)}", event.start_mark) from None


class _Mapping:
    """A mapping being built: keys and values alternate; `<<` merges like SafeLoader."""
    __slots__ = ("data", "key", "has_key", "texts", "merges", "mark")

    def __init__(self, mark):
        self.data: dict = {}
        self.key = None
        self.has_key = False
        self.texts: set = set()
        self.merges: list = []
        self.mark = mark

    def done(self) -> dict:
        if not self.merges:
            return self.data
        merged: dict = {}
        for m in reversed(self.merges):  # the first mapping listed wins, explicit keys win over all
            merged.update(m)
        merged.update(self.data)
        return merged


def build(text: str, path: str = "config", base_depth: int = 0, stats: dict | None = None) -> Any:
    """The document in `text`, built from libyaml's event stream in one iterative pass.

    PyYAML's composer and constructor recurse (50 000 nested `[` overflowed the C
    stack); this walk keeps its own stack, so the bounds are checked before any
    node is built: depth (MAX_DEPTH), nodes (MAX_NODES), and what aliases stand
    for in all (MAX_ALIAS_NODES; an alias is the same object, never a copy).
    Duplicate keys and anything but one document are refused.  For a piece of
    a document (`config.items`): `base_depth` levels already stand above it, and
    `stats` receives its "nodes" and "aliased" counts."""
    def refuse(event, reason: str) -> ConfigError:
        return ConfigError([Problem(path, f"line {event.start_mark.line + 1}", reason)])

    stack: list = []         # open collections: a list, or a _Mapping
    sizes: list[int] = []    # nodes in each open collection (what an alias to it stands for)
    anchors: dict[str, tuple[Any, int]] = {}
    open_anchors: list = []
    root: list = []
    plain: dict[str, tuple[Any, bool]] = {}  # plain scalar text -> its (immutable) value
    nodes = aliased = documents = 0

    def add(event, value, size: int, is_merge: bool = False) -> None:
        if not stack:
            root.append(value)
            return
        sizes[-1] += size
        top = stack[-1]
        if top.__class__ is list:
            top.append(value)
        elif not top.has_key:
            if isinstance(value, (list, dict)):
                raise refuse(event, "malformed YAML: a mapping key must be a scalar")
            text = event.value if isinstance(event, yaml.ScalarEvent) else repr(value)
            if not is_merge and (text in top.texts or value in top.data):
                raise refuse(event, f"malformed YAML: duplicate key {show(text)}")
            top.texts.add(text)
            top.key, top.has_key = (_MERGE if is_merge else value), True
        else:
            if top.key is _MERGE:
                items = value if isinstance(value, list) else [value]
                if not all(isinstance(m, dict) for m in items):
                    raise refuse(event, "malformed YAML: << merges only mappings")
                top.merges.extend(items)
            else:
                top.data[top.key] = value
            top.has_key = False

    event: Any   # told apart by class identity below (faster than isinstance), which mypy does not narrow
    for event in yaml.parse(text, Loader=yaml.CSafeLoader if hasattr(yaml, "CSafeLoader")
                            else yaml.SafeLoader):
        cls = event.__class__
        if cls is yaml.ScalarEvent:  # the common case first
            nodes += 1
            if event.tag is None and event.implicit[0]:  # plain: resolve each text once
                resolved = plain.get(event.value)
                if resolved is None:
                    resolved = plain[event.value] = _scalar(event)
                value, is_merge = resolved
            else:
                value, is_merge = _scalar(event)
            if event.anchor is not None:
                anchors[event.anchor] = (value, 1)
            add(event, value, 1, is_merge)
        elif cls is yaml.MappingStartEvent or cls is yaml.SequenceStartEvent:
            nodes += 1
            if len(stack) + base_depth >= MAX_DEPTH:
                raise refuse(event, f"nested deeper than {MAX_DEPTH} levels")
            if event.tag not in (None, "!", _SEQ if cls is yaml.SequenceStartEvent else _MAP):
                raise refuse(event, f"malformed YAML: unsupported tag {show(event.tag)}")
            stack.append([] if cls is yaml.SequenceStartEvent else _Mapping(event.start_mark))
            sizes.append(1)
            open_anchors.append(event.anchor)
        elif cls is yaml.MappingEndEvent or cls is yaml.SequenceEndEvent:
            top, size, anchor = stack.pop(), sizes.pop(), open_anchors.pop()
            value = top if top.__class__ is list else top.done()
            if anchor is not None:
                anchors[anchor] = (value, size)
            add(event, value, size)
            continue
        elif cls is yaml.AliasEvent:
            if event.anchor not in anchors:
                raise refuse(event, f"malformed YAML: undefined alias {show(event.anchor)}")
            value, size = anchors[event.anchor]
            aliased += size
            if aliased > MAX_ALIAS_NODES:
                raise refuse(event, f"aliases stand for more than {MAX_ALIAS_NODES} nodes (the limit)")
            add(event, value, size)
            continue
        elif cls is yaml.DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise refuse(event, "malformed YAML: more than one document")
            continue
        else:
            continue
        if nodes > MAX_NODES:
            raise refuse(event, f"more than {MAX_NODES} YAML nodes (the limit)")
    if stats is not None:
        stats.update(nodes=nodes, aliased=aliased)
    return root[0] if root else None


def load_yaml(text: str, path: str = "config", round_trip: bool = False) -> Any:
    """Decode one YAML document with the bounds of `build`; ConfigError on any problem.

    The round-trip path (ruamel, for `allocate`) runs `build` first, so ruamel's
    recursive composer only ever sees a document within the bounds."""
    errors: tuple[type[Exception], ...] = (yaml.YAMLError,)
    if round_trip:
        from ruamel.yaml.error import YAMLError as RoundTripError
        errors += (RoundTripError,)
    try:
        data = build(text, path)
        if round_trip:
            return round_trip_yaml().load(io.StringIO(text))
        return data
    except errors as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        problem = problem if len(problem) <= 200 else problem[:200] + "..."  # libyaml's are short
        raise ConfigError([Problem(path, where, f"malformed YAML: {problem}")]) from None
    except RecursionError:  # not reachable within MAX_DEPTH; never a traceback if it is
        raise ConfigError([Problem(path, "?", "nested too deeply")]) from None


def read_yaml(path: str, what: str = "--config", round_trip: bool = False) -> Any:
    """Read, decode and parse one file with every bound above."""
    return load_yaml(decode(read_bytes(path, what), path), path, round_trip)


def config_from_bytes(data: bytes, path: str, overrides: dict | None = None, require_local: bool = True,
                      default_node: str | None = None) -> Config:
    """The validated config in `data` (the bytes of `path`); `local.node` defaults to this host's name.
    With `require_local` the credential files of cluster.encryption are checked too."""
    config = parse_config(load_yaml(decode(data, path), path), overrides, require_local,
                          default_node=socket.gethostname() if default_node is None else default_node)
    return with_credentials(config) if require_local else config


def load_config(path: str, overrides: dict | None = None, require_local: bool = True,
                default_node: str | None = None) -> Config:
    """The validated config in `path`; `local.node` defaults to this host's name."""
    return config_from_bytes(read_bytes(path), path, overrides, require_local, default_node)


def read_local_file(path: str) -> dict:
    """`--local FILE`: this node's local settings, bare or as `local: {...}`."""
    data = read_yaml(path, what="--local")
    if isinstance(data, dict) and list(data) == ["local"]:
        data = data["local"]  # also accept a file that is just `local: {...}`
        if not isinstance(data, dict):
            raise ConfigError([Problem(f"{path}: local", show(data),
                                       "must be a mapping of local settings")])
    if not isinstance(data, dict):
        raise ConfigError([Problem("--local", path, "must be a mapping of local settings")])
    unknown = local_key_problems(data, path)
    if unknown:
        raise ConfigError(unknown)
    return data


def allocate_file(path: str, dry_run: bool = False):
    """Allocate subnets in a config file, keeping its comments and layout.

    Each family of the cluster is allocated on its own (a node keeps what it
    has and gets what it lacks).  A dual-stack subnet is written as a list
    [IPv4, IPv6]; a single-family one as a plain string.  The file
    must be valid apart from missing subnets (it is validated first, and again
    after, so a bad file is never written).  Written atomically.  Returns
    [(node name, its subnets as one comma-separated string)] of what changed."""
    import sys

    from topology.allocate import allocate
    from topology.nodes import node_subnets_of

    from ..files import write_atomic

    text = decode(read_bytes(path), path)
    # The fast path validates first: ruamel (pure Python) only sees a valid, bounded file.
    parse_config(load_yaml(text, path), require_local=False)
    doc = load_yaml(text, path, round_trip=True)
    config = parse_config(doc, require_local=False)
    entries = doc.get("nodes") or []
    families = config.cluster.families
    have = [node_subnets_of(e.get("subnet")) for e in entries]
    result = {f: allocate(config.cluster, [h.get(f) for h in have], f) for f in families}
    changed = []
    for i, (entry, old) in enumerate(zip(entries, have)):
        new = [result[f][i] for f in families]
        if all(old.get(f) == n for f, n in zip(families, new)):
            continue
        entry["subnet"] = str(new[0]) if len(new) == 1 else [str(n) for n in new]
        changed.append((entry["name"], ",".join(str(n) for n in new)))
    if not changed:
        return []
    buf = io.StringIO()
    round_trip_yaml().dump(doc, buf)
    parse_config(load_yaml(buf.getvalue(), path, round_trip=True), require_local=False)
    if dry_run:
        sys.stdout.write(buf.getvalue())
        return changed
    write_atomic(path, buf.getvalue())
    return changed


__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "MAX_ALIAS_NODES", "read_bytes", "decode",
           "build", "load_yaml", "read_yaml", "config_from_bytes", "load_config", "read_local_file",
           "allocate_file", "round_trip_yaml", "overrides", "load"]


# --- the config named on the command line ------------------------------------
def overrides(args) -> dict:
    """Local settings from --local FILE, then --node/--ovsdb on top."""
    out: dict = {}
    path = getattr(args, "local_file", None)
    if path:
        out.update(read_local_file(path))
    out.update({k: v for k, v in (("node", args.node), ("ovsdb", args.ovsdb)) if v is not None})
    return out


def load(args, require_local: bool = True) -> Config:
    """The config named by --config, with --local/--node/--ovsdb applied."""
    return load_config(args.config, overrides(args), require_local=require_local)
