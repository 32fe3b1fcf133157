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
- **Structure before composition**: libyaml's event parser is not recursive,
  but the composer and constructor are (50 000 nested `[` overflowed the C
  stack).  So the event stream is walked first, and a document nested deeper
  than `MAX_DEPTH`, with more than `MAX_NODES` nodes, or whose aliases would
  stand for more than `MAX_ALIAS_NODES` nodes in all (a 520-byte "billion
  laughs" file expands to 9^9), is refused before anything is built.  The same
  walk guards the round-trip (ruamel) path that `allocate` uses.

Validation of the decoded document is pure and lives in `topology.config`.
"""
from __future__ import annotations

import io
import os
import socket
import stat
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError as RoundTripError

from topology.config import ConfigError, parse_config
from topology.errors import Problem, show
from topology.model import Config

MAX_BYTES = 4 << 20        # 4 MiB: ~13x a 5000-node file
MAX_DEPTH = 64             # a config is 4 levels deep
MAX_NODES = 200_000        # YAML nodes in the document (a 5000-node file has ~40 000)
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
        err = ConfigError([Problem(what, show(path), e.strerror or str(e))])
        err.errno = e.errno
        raise err from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = next((k for test, k in _KINDS if test(st.st_mode)), "not a file")
            raise ConfigError([Problem(what, show(path), f"not a regular file ({kind})")])
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
        raise ConfigError([Problem(what, show(path), e.strerror or str(e))]) from None
    finally:
        os.close(fd)


def _too_big(what: str, path: str) -> ConfigError:
    return ConfigError([Problem(what, show(path), f"larger than {MAX_BYTES} bytes (the limit)")])


def decode(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError([Problem(show(path), f"byte {e.start}", "not UTF-8")]) from None


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """libyaml-backed safe loader (fast at thousands of nodes) that rejects duplicate keys."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            # Keys are plain scalars in any sane config: compare their text, which
            # costs nothing; anything else is constructed to compare.
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(
                self.construct_object(key_node, deep=True))
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {show(key)}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_mapping)


def round_trip_yaml() -> YAML:
    """Round-trip YAML (keeps comments): only for writing a user's file back."""
    y = YAML(typ="rt")
    y.allow_duplicate_keys = False
    return y


_OPEN = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSE = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


def check_structure(text: str, path: str = "config") -> None:
    """Walk the event stream (libyaml, iterative): refuse deep, huge or alias-bomb documents.

    Each node's size counts what an alias to it would stand for; anchors are
    recorded when their node ends, so an alias to an unfinished node counts 1."""
    def refuse(event, reason: str) -> ConfigError:
        return ConfigError([Problem(show(path), f"line {event.start_mark.line + 1}", reason)])

    stack: list[list] = [[0, None]]     # [size so far, anchor] of each open collection
    anchors: dict[str, int] = {}
    nodes = aliased = 0
    for event in yaml.parse(text, Loader=_Loader):
        cls = event.__class__
        if cls is yaml.ScalarEvent:  # the common case first: this walk is on every load
            nodes += 1
            if event.anchor is not None:
                anchors[event.anchor] = 1
            stack[-1][0] += 1
        elif cls in _OPEN:
            if len(stack) > MAX_DEPTH:
                raise refuse(event, f"nested deeper than {MAX_DEPTH} levels")
            stack.append([1, event.anchor])
            nodes += 1
        elif cls in _CLOSE:
            size, anchor = stack.pop()
            if anchor is not None:
                anchors[anchor] = size
            stack[-1][0] += size
            continue
        elif cls is yaml.AliasEvent:
            size = anchors.get(event.anchor, 1)
            aliased += size
            if aliased > MAX_ALIAS_NODES:
                raise refuse(event, f"aliases stand for more than {MAX_ALIAS_NODES} nodes (the limit)")
            stack[-1][0] += size
            continue
        else:
            continue
        if nodes > MAX_NODES:
            raise refuse(event, f"more than {MAX_NODES} YAML nodes (the limit)")


def load_yaml(text: str, path: str = "config", round_trip: bool = False) -> Any:
    """Decode a YAML document after `check_structure`; ConfigError on any problem."""
    try:
        check_structure(text, path)
        if round_trip:
            return round_trip_yaml().load(io.StringIO(text))
        return yaml.load(text, Loader=_Loader)
    except (yaml.YAMLError, RoundTripError) as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError([Problem(show(path), where, f"malformed YAML: {show(problem)}")]) from None
    except RecursionError:  # not reachable past check_structure; never a traceback if it is
        raise ConfigError([Problem(show(path), "?", "nested too deeply")]) from None


def read_yaml(path: str, what: str = "--config", round_trip: bool = False) -> Any:
    """Read, decode and parse one file with every bound above."""
    return load_yaml(decode(read_bytes(path, what), path), path, round_trip)


def load_config(path: str, overrides: dict | None = None, require_local: bool = True,
                default_node: str | None = None) -> Config:
    """The validated config in `path`; `local.node` defaults to this host's name."""
    return parse_config(read_yaml(path), overrides, require_local,
                        default_node=socket.gethostname() if default_node is None else default_node)


def read_local_file(path: str) -> dict:
    """`--local FILE`: this node's local settings, bare or as `local: {...}`."""
    from topology.config import LOCAL_KEYS

    data = read_yaml(path, what="--local")
    if isinstance(data, dict) and list(data) == ["local"]:
        data = data["local"]  # also accept a file that is just `local: {...}`
        if not isinstance(data, dict):
            raise ConfigError([Problem(f"{show(path)}: local", show(data),
                                       "must be a mapping of local settings")])
    if not isinstance(data, dict):
        raise ConfigError([Problem("--local", show(path), "must be a mapping of local settings")])
    unknown = [f"{show(path)}: local.{show(k)}: unknown key (allowed: {', '.join(LOCAL_KEYS)})"
               for k in data if k not in LOCAL_KEYS]
    if unknown:
        raise ConfigError(unknown)
    return data


def allocate_file(path: str, dry_run: bool = False):
    """Allocate subnets in a config file, keeping its comments and layout.

    The file must be valid apart from missing subnets (it is validated first,
    and again after, so a bad file is never written).  Written atomically.
    Returns [(node name, subnet)] of what was assigned."""
    import sys
    from ipaddress import IPv4Network

    from topology.allocate import allocate
    from topology.files import write_atomic

    doc = read_yaml(path, round_trip=True)
    config = parse_config(doc, require_local=False)
    entries = doc.get("nodes") or []
    current = [None if e.get("subnet") is None else IPv4Network(e["subnet"]) for e in entries]
    result = allocate(config.cluster, current)
    changed = []
    for entry, old, new in zip(entries, current, result):
        if old is None:
            entry["subnet"] = str(new)
            changed.append((entry["name"], new))
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
           "check_structure", "load_yaml", "read_yaml", "load_config", "read_local_file",
           "allocate_file", "round_trip_yaml"]
