"""The status file (`<ovs rundir>/ovs-mesh.status.json`): what `apply` and the agent
write after every reconcile, and what `status` (and the lab) read back."""
from __future__ import annotations

import json
import logging
import os
import time

LOG = logging.getLogger(__name__)
STATUS_FILE = "ovs-mesh.status.json"


def status_path(rundir: str) -> str:
    return os.path.join(rundir, STATUS_FILE)


def write_status(rundir: str, result, kind: str = "full") -> None:
    """What `status` shows of the last reconcile: when, which kind of pass (full or
    the agent's incremental one), how many changes, problems."""
    data = {"time": time.time(), "kind": kind, "change_count": len(result.changes),
            "changes": [c.as_dict() for c in result.changes[:50]],  # the first few, for a glance
            "problems": result.problems, "seconds": round(result.seconds, 4)}
    try:
        with open(status_path(rundir), "w") as f:
            f.write(json.dumps(data))
    except OSError:
        LOG.debug("cannot write status file", exc_info=True)


def read_status(rundir: str) -> dict | None:
    try:
        with open(status_path(rundir)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def remove_status(rundir: str) -> None:
    try:
        os.unlink(status_path(rundir))
    except FileNotFoundError:
        pass
