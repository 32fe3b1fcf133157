"""`ovs-mesh status`: peers (with their pod subnets of each family), the
underlay family, tunnel health, flow counts, and the last reconcile as the
status file (`reconcile.status_file`) records it."""
from __future__ import annotations

import time

from topology.mesh import peers_of

from ..agent.restore import BOUND
from ..health.record import fresh, peer_view, read_health
from ..health.state import summary
from ..ovs.desired import peer_port_name, tunnel_port_name
from ..ovs.model import BRIDGE
from ..reconcile.status_file import read_status


def tunnels(config, client) -> list[dict]:
    """Each peer with its tunnel port and that port's health (BFD state in port mode).

    One pass over the Interface table, whatever the number of peers.  The `status`
    command's view; the agent keeps the same per-peer health for its metrics from
    its record (`Agent._update_tunnels`), only for the peers a pass changed."""
    c = config.cluster
    peers = [(p, tunnel_port_name(c.tunnel) if c.mode == "flow" else peer_port_name(c.tunnel, p.name))
             for p in peers_of(c, config.nodes, config.local.node)]
    health = client.health({port for _, port in peers})
    return [{"name": p.name, "ip": str(p.ip), **subnets_of(p), "port": port,
             **health[port].as_dict()} for p, port in peers]


def encryption_of(config, peer_ips: list[str]) -> dict[str, dict]:
    """Each peer address -> whether its tunnel traffic is encrypted, and the SA state and age
    (IPsec: the kernel's policies and ESP SAs, see encryption.ipsec_state; WireGuard: the device's
    peers and their latest handshakes, see encryption.wg_device)."""
    if config.cluster.encryption == "ipsec":
        from ..encryption import ipsec_state

        states = ipsec_state.read(str(config.local_node.ip), peer_ips)
        return {ip: states[ip].as_dict() for ip in peer_ips}
    if config.cluster.encryption == "wireguard":
        from ..encryption import wg_device, wireguard

        keys = {str(n.ip): n.wireguard_key for n in config.nodes if str(n.ip) in peer_ips}
        wg = wg_device.read_peers(wireguard.DEVICE, keys)
        return {ip: wg[ip].as_dict() for ip in peer_ips}
    return {ip: {"mode": config.cluster.encryption, "encrypted": False, "state": None, "sa_age_seconds": None}
            for ip in peer_ips}


def _crypt(e: dict) -> str:
    if e["mode"] == "none":
        return "none"
    age = "" if e["sa_age_seconds"] is None else f" {e['sa_age_seconds']:.0f}s"
    return f"{e['mode']}:{e['state']}{age}"


def subnets_of(node) -> dict:
    """A node's pod subnets: `subnet` (IPv4) and `subnet6` (IPv6), None where it has
    none, and `subnets`, every one of them, IPv4 first."""
    return {"subnet": _text(node.subnet), "subnet6": _text(node.subnet6),
            "subnets": [str(s) for s in node.subnets]}


def _text(value) -> str | None:
    return None if value is None else str(value)


def collect(config, rec) -> dict:
    c = config.cluster
    observed = rec.observe()
    plan = rec.plan(observed=observed)
    flows = observed.ovs.flows
    peers = tunnels(config, rec.ovsdb)
    last = read_status(config.local.rundir)
    local = config.local_node
    now, record = time.time(), read_health(config.local.rundir)
    crypt = encryption_of(config, [p["ip"] for p in peers])
    for p in peers:
        p["probe"] = peer_view(record, p["name"], now)
        p["encryption"] = crypt[p["ip"]]
    return {"node": config.local.node, "bridge": BRIDGE, "tunnel": c.tunnel, "mode": c.mode,
            "encryption": c.encryption,
            "families": list(c.families), "cluster_cidrs": [str(x) for x in c.cidrs],
            "underlay_family": local.underlay_family, "ip": str(local.ip), **subnets_of(local),
            "peers": peers, "flows": len(flows),
            "health": {"probing": fresh(record, now) and config.health.enabled,
                       "summary": summary({p["name"]: p["probe"]["state"] for p in peers})},
            "flow_restore_wait": restore_wait(rec.ovsdb.restore_wait(), now),
            "pending_changes": len(plan.changes),
            "converged": not plan.changes and not plan.problems, "problems": plan.problems,
            "last_reconcile": last and {"age_seconds": round(time.time() - last["time"], 1),
                                        "kind": last.get("kind", "full"),
                                        "changes": last.get("change_count", len(last["changes"])),
                                        "problems": last["problems"]}}


def restore_wait(flag, now: float) -> dict | None:
    """flow-restore-wait as `status` shows it: None when not set."""
    if not flag.set:
        return None
    since = flag.since
    return {"by": "ovs-mesh" if flag.ours else "other",
            "seconds": None if since is None else round(max(0.0, now - since), 1)}


def render(d: dict) -> str:
    crypt = "" if d.get("encryption", "none") == "none" else f", encrypted by {d['encryption']}"
    lines = [f"node {d['node']}: {d['tunnel']} tunnels{crypt}, {d['mode']} mode, {len(d['peers'])} peers, "
             f"{d['flows']} flows, {'converged' if d['converged'] else str(d['pending_changes']) + ' changes pending'}"]
    w = d.get("flow_restore_wait")
    if w is not None:
        lines.append("waiting for a restore: flow-restore-wait is set"
                     + (f" (by ovs-mesh's start hook {w['seconds']}s ago; the agent clears it once the "
                        f"pipeline is in, the guard after {BOUND:.0f} s at the latest)" if w["by"] == "ovs-mesh"
                        else " (not by ovs-mesh: whoever set it, e.g. ovs-ctl restart, clears it)")
                     + ": ovs-vswitchd forwards only on the datapath's cached flows until then")
    lines.append(f"pods {' + '.join(d['families'])}: {', '.join(d['subnets']) or 'no subnet'}; "
                 f"underlay {d['underlay_family']}: {d['ip']}")
    lr = d["last_reconcile"]
    lines.append(f"last reconcile: {lr['age_seconds']}s ago ({lr['kind']} pass), {lr['changes']} changes"
                 if lr else "last reconcile: never")
    h = d["health"]
    lines.append(f"peers: {h['summary']}" if h["probing"] else "peers: not probed (no agent running, or "
                 "health.enabled is false)")
    encrypted = d.get("encryption", "none") != "none"   # the ENCRYPTION column only then
    rows = [(p["name"], p["ip"], ",".join(p["subnets"]) or "-", p["port"], str(p["ofport"]), p["health"],
             _probe_state(p["probe"]), _num(p["probe"]["rtt_ms"], " ms"),
             _num(p["probe"]["since_answer_seconds"], "s"), _num(p["probe"]["since_sent_seconds"], "s"),
             *((_crypt(p["encryption"]),) if encrypted else ()))
            for p in d["peers"]]
    heads = ("PEER", "IP", "SUBNETS", "PORT", "OFPORT", "TUNNEL", "PROBE", "RTT", "ANSWERED", "SENT",
             *(("ENCRYPTION",) if encrypted else ()))
    w = [max([len(hd), *(len(r[i]) for r in rows)]) for i, hd in enumerate(heads)]
    for r in [heads, *rows]:
        lines.append(" ".join(c.rjust(w[i]) if i in (4, 7, 8, 9) else c.ljust(w[i])
                              for i, c in enumerate(r)).rstrip())
    lines += [f"problem: {p}" for p in d["problems"]]
    return "\n".join(lines)


def _probe_state(view: dict) -> str:
    """The verdict; in a dual-stack cluster where the families differ, each family's."""
    fam = view["families"]
    if len(set(fam.values())) > 1:
        return ",".join(f"{f}:{s}" for f, s in sorted(fam.items()))
    return view["state"]


def _num(value, unit: str) -> str:
    return "-" if value is None else f"{value}{unit}"
