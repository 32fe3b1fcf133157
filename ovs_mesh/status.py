"""`ovs-mesh status`: peers, tunnel health, flow counts, last reconcile."""
from __future__ import annotations

import json
import time

from topology.mesh import peers_of

from .desired import peer_port_name, tunnel_port_name
from .state import BRIDGE


def _health(iface) -> dict:
    if iface is None:
        return {"ofport": None, "health": "missing", "error": None, "bfd": None}
    ofport = iface.ofport[0] if iface.ofport else -1
    bfd = dict(iface.bfd_status)
    health = "error" if (iface.error or ofport == -1) else "up"
    if bfd:
        health = bfd.get("state", "unknown")
    return {"ofport": ofport, "health": health, "error": (iface.error or [None])[0], "bfd": bfd or None}


def tunnels(config, client) -> list[dict]:
    """Each peer with its tunnel port and that port's health (BFD state in port mode).

    One pass over the Interface table, whatever the number of peers: the agent
    calls this after every reconcile."""
    c = config.cluster
    with client.conn.lock:
        ifaces = {i.name: i for i in client.idl.tables["Interface"].rows.values()}
        out = []
        for p in peers_of(c, config.nodes, config.local.node):
            port = tunnel_port_name(c.tunnel) if c.mode == "flow" else peer_port_name(c.tunnel, p.name)
            out.append({"name": p.name, "ip": str(p.ip), "subnet": str(p.subnet), "port": port,
                        **_health(ifaces.get(port))})
    return out


def collect(config, rec, status_path: str) -> dict:
    c = config.cluster
    observed = rec.observe()
    plan = rec.plan(observed=observed)
    flows = observed.ovs.flows
    peers = tunnels(config, rec.ovsdb)
    last = None
    try:
        with open(status_path) as f:
            last = json.load(f)
    except (OSError, ValueError):
        pass
    return {"node": config.local.node, "bridge": BRIDGE, "tunnel": c.tunnel, "mode": c.mode,
            "peers": peers, "flows": len(flows), "pending_changes": len(plan.changes),
            "converged": not plan.changes and not plan.problems, "problems": plan.problems,
            "last_reconcile": last and {"age_seconds": round(time.time() - last["time"], 1),
                                        "changes": last.get("change_count", len(last["changes"])),
                                        "problems": last["problems"]}}


def render(d: dict) -> str:
    lines = [f"node {d['node']}: {d['tunnel']} tunnels, {d['mode']} mode, {len(d['peers'])} peers, "
             f"{d['flows']} flows, {'converged' if d['converged'] else str(d['pending_changes']) + ' changes pending'}"]
    lr = d["last_reconcile"]
    lines.append(f"last reconcile: {lr['age_seconds']}s ago, {lr['changes']} changes" if lr else "last reconcile: never")
    lines.append(f"{'PEER':<20} {'IP':<16} {'SUBNET':<18} {'PORT':<16} {'OFPORT':>6} HEALTH")
    for p in d["peers"]:
        lines.append(f"{p['name']:<20} {p['ip']:<16} {p['subnet']:<18} {p['port']:<16} "
                     f"{str(p['ofport']):>6} {p['health']}")
    lines += [f"problem: {p}" for p in d["problems"]]
    return "\n".join(lines)
