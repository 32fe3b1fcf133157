"""The lab's record on disk: everything it creates, written before creating it.

`lab down` walks this record backwards, so a lab that crashed half-way is
still removed completely.  The record lives in the lab directory, which is
removed last.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import threading

from ovs_mesh.files import write_atomic
from topology.errors import OvsMeshError

BASE_DIR = os.environ.get("OVS_MESH_LAB_DIR", "/run/ovs-mesh-lab")
# Lab names become namespace and interface name prefixes: keep them short.
NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,5}$")


class LabError(OvsMeshError, RuntimeError):
    """A lab step failed (the CLI exits 1 and `lab up` removes what it built)."""


class LabExists(LabError):
    """The lab (or the node) already exists: nothing was built, so nothing is removed."""


@dataclasses.dataclass
class Node:
    """A lab node as the state file records it; its files live under `dir`.

    `ns` is its network namespace (None: the machine itself, `lab pods` on a
    VM); `via` and `python` are set for nodes reached through a command
    prefix (`lab remote-check`): the prefix and the interpreter there.
    """
    name: str
    k: int
    ip: str
    ns: str | None
    dir: str
    cni_conf: str
    via: list[str] = dataclasses.field(default_factory=list)
    python: str | None = None

    @property
    def rundir(self) -> str:
        """Its ovsdb-server/ovs-vswitchd directory (sockets, pid files, conf.db, logs)."""
        return os.path.join(self.dir, "ovs")

    @property
    def config(self) -> str:
        """Where a provisioning script may write a whole node config (tests/vagrant); the
        namespace lab itself uses the shared topology plus `local`."""
        return os.path.join(self.dir, "config.yaml")

    @property
    def local(self) -> str:
        return os.path.join(self.dir, "local.yaml")

    @property
    def agent_log(self) -> str:
        return os.path.join(self.dir, "agent.log")

    @property
    def agent_pidfile(self) -> str:
        return os.path.join(self.dir, "agent.pid")

    @property
    def ipam_dir(self) -> str:
        """host-local's lease directory (the default /var/lib/cni would be shared by every node)."""
        return os.path.join(self.dir, "ipam")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if not self.via:
            del d["via"]
        if self.python is None:
            del d["python"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Node:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def lab_dir(name: str) -> str:
    return os.path.join(BASE_DIR, name)


class LabState:
    """JSON record: params, resources (in creation order), nodes and pods."""

    def __init__(self, name: str, data: dict | None = None):
        self.name = name
        self.dir = lab_dir(name)
        self.path = os.path.join(self.dir, "state.json")
        self.data = data or {"name": name, "params": {}, "resources": [], "nodes": [], "pods": []}
        self.nodes: list[Node] = [Node.from_dict(n) for n in self.data.get("nodes") or []]
        self.lock = threading.RLock()  # lab steps run in threads

    @classmethod
    def load(cls, name: str) -> LabState | None:
        try:
            with open(os.path.join(lab_dir(name), "state.json"), encoding="utf-8") as f:
                return cls(name, json.load(f))
        except FileNotFoundError:
            return None

    def save(self) -> None:
        with self.lock:
            self._save()

    def _save(self) -> None:
        self.data["nodes"] = [n.to_dict() for n in self.nodes]
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

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise LabError(f"lab {self.name}: no node {name}")

    @property
    def pods(self) -> list[dict]:
        return self.data["pods"]

    @property
    def topology_path(self) -> str:
        return os.path.join(self.dir, "topology.yaml")
