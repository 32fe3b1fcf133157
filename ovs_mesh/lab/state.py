"""The lab's record on disk: everything it creates, written before creating it.

`lab down` walks this record backwards, so a lab that crashed half-way is
still removed completely.  The record lives in the lab directory, which is
removed last.
"""
from __future__ import annotations

import json
import os
import re
import threading

from ovs_mesh.files import write_atomic

BASE_DIR = os.environ.get("OVS_MESH_LAB_DIR", "/run/ovs-mesh-lab")
# Lab names become namespace and interface name prefixes: keep them short.
NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,5}$")


class LabError(RuntimeError):
    """A lab step failed (the CLI exits 1 and `lab up` removes what it built)."""


def lab_dir(name: str) -> str:
    return os.path.join(BASE_DIR, name)


class LabState:
    """JSON record: params, resources (in creation order), nodes and pods."""

    def __init__(self, name: str, data: dict | None = None):
        self.name = name
        self.dir = lab_dir(name)
        self.path = os.path.join(self.dir, "state.json")
        self.data = data or {"name": name, "params": {}, "resources": [], "nodes": [], "pods": []}
        self.lock = threading.RLock()  # lab steps run in threads

    @classmethod
    def load(cls, name: str) -> "LabState | None":
        try:
            with open(os.path.join(lab_dir(name), "state.json"), encoding="utf-8") as f:
                return cls(name, json.load(f))
        except FileNotFoundError:
            return None

    def save(self) -> None:
        with self.lock:
            self._save()

    def _save(self) -> None:
        write_atomic(self.path, json.dumps(self.data, indent=1))

    def record(self, kind: str, **fields) -> dict:
        """Add a resource and persist it; call this BEFORE creating the thing."""
        item = {"kind": kind, **fields}
        with self.lock:
            self._add(item)
        return item

    def _add(self, item: dict) -> None:
        if item not in self.data["resources"]:
            self.data["resources"].append(item)
            self.save()

    def forget(self, item: dict) -> None:
        if item in self.data["resources"]:
            self.data["resources"].remove(item)
            self.save()

    def resources(self, kind: str | None = None) -> list[dict]:
        return [r for r in self.data["resources"] if kind is None or r["kind"] == kind]

    @property
    def params(self) -> dict:
        return self.data["params"]

    @property
    def nodes(self) -> list[dict]:
        return self.data["nodes"]

    @property
    def pods(self) -> list[dict]:
        return self.data["pods"]

    @property
    def topology_path(self) -> str:
        return os.path.join(self.dir, "topology.yaml")
