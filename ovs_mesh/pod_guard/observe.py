"""What the agent reads for the pod guard: our table (its parameters and the pods in its
sets), the veths on kbr0, and, for a veth the sets do not know (a pod made before the
guard existed, or while its table was gone), the pod behind it.

A pod is learned from its own namespace, found through the veth's peer (link-netnsid and
peer ifindex, matched against the named namespaces `ip netns list-id` knows, where
container runtimes and the lab keep them): the MAC of its interface and its global
addresses inside this node's pod subnets.  An address that two veths' pods both hold is
given to neither (and said): only the CNI result says for sure who got it, and a pod may
have added a neighbour's address to itself before the guard existed.  What the pod can
change later no longer matters: from then on its entry stays as learned.
"""
from __future__ import annotations

import json
import logging
import subprocess
from ipaddress import ip_address

from . import rules

LOG = logging.getLogger(__name__)
_said: set[tuple] = set()   # what was logged already: every full pass learns again, the log says it once


def _once(key: tuple, msg: str, *args) -> None:
    if key not in _said:
        _said.add(key)
        LOG.warning(msg, *args)


def _ip(*args: str) -> list:
    p = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=30)
    if p.returncode != 0 or not p.stdout.strip():
        return []
    return json.loads(p.stdout)


def pod_ports(bridge: str, gateway_port: str) -> list[dict]:
    """The veths on `bridge` but `gateway_port`: ifname, peer ifindex, peer netns id."""
    return [link for link in _ip("-d", "link", "show", "master", bridge)
            if link.get("ifname") != gateway_port and (link.get("linkinfo") or {}).get("info_kind") == "veth"]


def learn(ports: list[dict], subnets) -> list[rules.GuardedPod]:
    """The pods behind `ports` (from `pod_ports`), read from their namespaces."""
    names = {e.get("nsid"): e.get("name") for e in _ip("netns", "list-id") if e.get("name")}
    found: list[tuple[str, str, list[str]]] = []
    for port in ports:
        ns = names.get(port.get("link_netnsid"))
        if ns is None:
            _once(("unnamed", port.get("ifname")), "pod guard: %s: its pod's namespace is not a named one: no "
                  "entry is learned for it (docs/security.md)", port.get("ifname"))
            continue
        link = next((x for x in _ip("-n", ns, "addr", "show") if x.get("ifindex") == port.get("link_index")), None)
        if link is None or not link.get("address"):
            continue
        ips = [a["local"] for a in link.get("addr_info", []) if a.get("scope") == "global"
               and any(ip_address(a["local"]) in s for s in subnets)]
        found.append((port["ifname"], link["address"].lower(), ips))
    claims: dict[str, int] = {}
    for _, _, ips in found:
        for a in ips:
            claims[a] = claims.get(a, 0) + 1
    out = []
    for ifname, mac, ips in found:
        shared = [a for a in ips if claims[a] > 1]
        if shared:
            _once(("shared", ifname, *shared), "pod guard: %s: %s held by more than one pod: given to none", ifname,
                  ", ".join(shared))
        out.append(rules.GuardedPod(ifname, mac, tuple(sorted((a for a in ips if claims[a] == 1),
                                                             key=lambda a: (ip_address(a).version,
                                                                            int(ip_address(a)))))))
    return out
