"""`ovs-mesh allocate`: write subnets into the user's config file, keeping its layout.

The allocation itself is pure (`topology.allocate`); this module reads and writes the file.
"""
from __future__ import annotations

import io
import sys
from ipaddress import IPv4Network

from topology.allocate import allocate
from topology.config import _yaml, load_yaml, parse_config

from .files import write_atomic


def allocate_file(path: str, dry_run: bool = False) -> list[tuple[str, IPv4Network]]:
    """Allocate subnets in a config file, keeping its comments and layout.

    The file must be valid apart from missing subnets (it is validated first,
    and again after, so a bad file is never written).  Written atomically.
    """
    with open(path, encoding="utf-8") as f:
        doc = load_yaml(f.read(), path, round_trip=True)
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
    _yaml().dump(doc, buf)
    parse_config(load_yaml(buf.getvalue(), path, round_trip=True), require_local=False)
    if dry_run:
        sys.stdout.write(buf.getvalue())
        return changed
    write_atomic(path, buf.getvalue())
    return changed
