"""The host layer's state file, `<ovs rundir>/ovs-mesh.host.json`: the values
settings had before we changed them (restored by teardown), and the netdev
underlay we moved the node IP onto (so teardown finds it after the config
changed).  The one place that encodes and decodes it; an unreadable file
counts as empty."""
from __future__ import annotations

import dataclasses
import json
import os

from ..files import write_atomic
from .model import Offload, Setting, Sysctl, Underlay

STATE_FILE = "ovs-mesh.host.json"
_SETTINGS = {"sysctl": Sysctl, "offload": Offload}   # "kind:key" in the file's "restore"


@dataclasses.dataclass(frozen=True)
class Saved:
    restore: tuple[Setting, ...] = ()
    underlay: Underlay | None = None
    started: tuple[str, ...] = ()   # systemd units ovs-mesh started (and so may stop)

    def with_restore(self, restore) -> Saved:
        return dataclasses.replace(self, restore=tuple(restore))


def path(rundir: str) -> str:
    return os.path.join(rundir, STATE_FILE)


def load(rundir: str) -> Saved:
    try:
        with open(path(rundir)) as f:
            data = json.load(f)
    except (FileNotFoundError, ValueError):
        return Saved()
    restore = []
    for key, value in (data.get("restore") or {}).items():
        kind, _, name = key.partition(":")
        if kind in _SETTINGS:
            restore.append(_SETTINGS[kind](name, value))
    u = data.get("underlay")
    started = tuple(x for x in data.get("started") or () if isinstance(x, str))
    return Saved(tuple(restore), Underlay(u["bridge"], u["interface"]) if u else None, started)


def save(rundir: str, saved: Saved) -> None:
    """Write the file, or remove it when there is nothing left to restore."""
    if not saved.restore and saved.underlay is None and not saved.started:
        try:
            os.unlink(path(rundir))
        except FileNotFoundError:
            pass
        return
    data: dict = {"restore": {f"{s.kind}:{s.key}": s.value for s in saved.restore}}
    if saved.started:
        data["started"] = sorted(saved.started)
    if saved.underlay is not None:
        data["underlay"] = {"bridge": saved.underlay.bridge, "interface": saved.underlay.interface}
    write_atomic(path(rundir), json.dumps(data, indent=1, sort_keys=True))
