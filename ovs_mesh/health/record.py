"""The health file as `ovs-mesh status` reads it (`<ovs rundir>/ovs-mesh.health.json`,
written by the agent's prober) and each peer's view of it (pure once read)."""
from __future__ import annotations

import json
import os

from .prober import HEALTH_FILE
from .state import worst

STALE = 3   # the file is stale after this many intervals (or 30 s) without a write: the agent is not running


def read_health(rundir: str) -> dict | None:
    try:
        with open(os.path.join(rundir, HEALTH_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fresh(record: dict | None, now: float) -> bool:
    return record is not None and now - record.get("time", 0) <= max(30.0, STALE * record.get("interval", 10))


def peer_view(record: dict | None, name: str, now: float) -> dict:
    """One peer's verdict for `status`: `state` (the worst of its families), `rtt_ms`
    (the first family's), the seconds since it last answered a probe and since it last
    sent us a packet (None: never seen), and each family's state."""
    got = (record or {}).get("peers", {}).get(name, {}) if fresh(record, now) else {}
    families = {f: v for f, v in got.items() if f in ("ipv4", "ipv6")}
    rtts = [v["rtt"] for v in families.values() if v.get("rtt") is not None]
    answers = [v["last_answer"] for v in families.values() if v.get("last_answer") is not None]
    sent = got.get("last_sent")
    return {"state": worst(v["state"] for v in families.values()),
            "families": {f: v["state"] for f, v in families.items()},
            "rtt_ms": round(rtts[0] * 1000, 2) if rtts else None,
            "since_answer_seconds": round(now - max(answers), 1) if answers else None,
            "since_sent_seconds": round(now - sent, 1) if sent is not None else None}
