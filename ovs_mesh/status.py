"""`ovs-mesh status`: peers, tunnel health, flow counts, last reconcile; and the
status file (`<ovs rundir>/ovs-mesh.status.json`) that apply and the agent write
after every reconcile and that `status` (and the lab) read back."""
from __future__ import annotations

import json
import logging
import os
import time

from topology.mesh import peers_of

from .desired import peer_port_name, tunnel_port_name
from .state import BRIDGE

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


def tunnels(config, client) -> list[dict]:
    """Each peer with its tunnel port and that port's health (BFD state in port mode).

    One pass over the Interface table, whatever the number of peers: the agent
    calls this after every reconcile."""
    c = config.cluster
    peers = [(p, tunnel_port_name(c.tunnel) if c.mode == "flow" else peer_port_name(c.tunnel, p.name))
             for p in peers_of(c, config.nodes, config.local.node)]
    health = client.health({port for _, port in peers})
    return [{"name": p.name, "ip": str(p.ip), "subnet": str(p.subnet), "port": port,
             **health[port].as_dict()} for p, port in peers]


def collect(config, rec) -> dict:
    c = config.cluster
    observed = rec.observe()
    plan = rec.plan(observed=observed)
    flows = observed.ovs.flows
    peers = tunnels(config, rec.ovsdb)
    last = read_status(config.local.rundir)
    return {"node": config.local.node, "bridge": BRIDGE, "tunnel": c.tunnel, "mode": c.mode,
            "peers": peers, "flows": len(flows), "pending_changes": len(plan.changes),
            "converged": not plan.changes and not plan.problems, "problems": plan.problems,
            "last_reconcile": last and {"age_seconds": round(time.time() - last["time"], 1),
                                        "kind": last.get("kind", "full"),
                                        "changes": last.get("change_count", len(last["changes"])),
                                        "problems": last["problems"]}}


def render(d: dict) -> str:
    lines = [f"node {d['node']}: {d['tunnel']} tunnels, {d['mode']} mode, {len(d['peers'])} peers, "
             f"{d['flows']} flows, {'converged' if d['converged'] else str(d['pending_changes']) + ' changes pending'}"]
    lr = d["last_reconcile"]
    lines.append(f"last reconcile: {lr['age_seconds']}s ago ({lr['kind']} pass), {lr['changes']} changes"
                 if lr else "last reconcile: never")
    lines.append(f"{'PEER':<20} {'IP':<16} {'SUBNET':<18} {'PORT':<16} {'OFPORT':>6} HEALTH")
    for p in d["peers"]:
        lines.append(f"{p['name']:<20} {p['ip']:<16} {p['subnet']:<18} {p['port']:<16} "
                     f"{str(p['ofport']):>6} {p['health']}")
    lines += [f"problem: {p}" for p in d["problems"]]
    return "\n".join(lines)
