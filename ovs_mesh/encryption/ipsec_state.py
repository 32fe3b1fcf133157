"""Per-peer IPsec state as the kernel holds it: XFRM policies and ESP SAs (`ip xfrm`).

A peer's traffic is protected when a policy covers it (the monitor installs one per
direction and tunnel); it is *up* only when an ESP child SA exists in both directions:
an IKE SA without a child SA carries nothing (once counted as up elsewhere), so strongSwan's IKE state
is not asked at all.  The SA age is the seconds since the newest outbound SA was added
(a rekey makes a new one).  `ip -s xfrm state` prints key material: only the selector,
the direction and the `add` time are ever read from it, nothing else is kept or shown.
"""
from __future__ import annotations

import dataclasses
import re
import subprocess
import time

_STATE_HEAD = re.compile(r"^src (\S+) dst (\S+)\s*$")
_ADD = re.compile(r"^\s+add (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")
_POLICY = re.compile(r"^src (\S+?)(?:/\d+)? dst (\S+?)(?:/\d+)?\s.*$")


@dataclasses.dataclass(frozen=True)
class PeerIpsec:
    """One peer's IPsec as `status` shows it."""
    policy: bool                  # a policy requires ESP for this peer's tunnel traffic
    sa_out: bool                  # an ESP SA to the peer
    sa_in: bool                   # an ESP SA from the peer
    sa_age_seconds: float | None  # since the newest outbound SA was installed

    @property
    def state(self) -> str:
        if self.sa_out and self.sa_in:
            return "up"
        return "no-sa" if self.policy else "no-policy"

    def as_dict(self) -> dict:
        return {"mode": "ipsec", "encrypted": self.policy, "state": self.state,
                "sa_age_seconds": self.sa_age_seconds}


def parse_states(text: str, now: float) -> dict[tuple[str, str], float | None]:
    """`ip -s xfrm state` -> (src, dst) of each ESP SA -> its age in seconds (None if not shown).
    Times are the host's local time, as ip prints them."""
    out: dict[tuple[str, str], float | None] = {}
    key: tuple[str, str] | None = None
    esp = False
    for line in text.splitlines():
        m = _STATE_HEAD.match(line)
        if m:
            key, esp = (m.group(1), m.group(2)), False
            continue
        if key is None:
            continue
        if line.strip().startswith("proto esp"):
            esp = True
            out.setdefault(key, None)
        m = _ADD.match(line)
        if m and esp:
            added = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
            age = max(0.0, now - added)
            prev = out.get(key)
            out[key] = age if prev is None else min(prev, age)
    return out


def parse_policies(text: str) -> set[tuple[str, str]]:
    """`ip xfrm policy` -> (src, dst) of each policy that asks for ESP (not the drop shunts)."""
    out: set[tuple[str, str]] = set()
    sel: tuple[str, str] | None = None
    for line in text.splitlines():
        m = _POLICY.match(line)
        if m:
            sel = (m.group(1), m.group(2))
            continue
        if sel is not None and "proto esp" in line:
            out.add(sel)
    return out


def peer_states(local_ip: str, peers: list[str], states: str, policies: str, now: float) -> dict[str, PeerIpsec]:
    """Each peer address -> its PeerIpsec, from the two commands' outputs (pure)."""
    sas = parse_states(states, now)
    pol = parse_policies(policies)
    out = {}
    for ip in peers:
        out_age = sas.get((local_ip, ip))
        out[ip] = PeerIpsec(policy=(local_ip, ip) in pol or ("0.0.0.0", ip) in pol or (ip, local_ip) in pol,
                            sa_out=(local_ip, ip) in sas, sa_in=(ip, local_ip) in sas,
                            sa_age_seconds=None if out_age is None else round(out_age, 1))
    return out


def _ip(*args: str) -> str:
    try:
        return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def read(local_ip: str, peers: list[str]) -> dict[str, PeerIpsec]:
    """The kernel's view now (needs CAP_NET_ADMIN; without it every peer reads `no-policy`)."""
    return peer_states(local_ip, peers, _ip("-s", "xfrm", "state"), _ip("xfrm", "policy"), time.time())




def peer_reader(config):
    """For the agent's metrics: a function giving each peer's name -> its PeerIpsec when scraped
    (None without IPsec)."""
    from topology.mesh import peers_of

    if config.cluster.encryption != "ipsec":
        return None
    names = {str(p.ip): p.name for p in peers_of(config.cluster, config.nodes, config.local.node)}
    local = str(config.local_node.ip)

    def now() -> dict[str, PeerIpsec]:
        return {names[ip]: s for ip, s in read(local, list(names)).items()}
    return now
