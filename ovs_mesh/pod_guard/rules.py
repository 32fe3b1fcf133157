"""The per-pod source guard: each pod's frames leave its veth only with its own MAC and its
own addresses (pure: the nftables text; no I/O).

Why this exists: the `bridge ovs_mesh` table (host/nft.py) keeps a pod inside its node's
subnets, but one pod could still speak for a neighbour on the same node (its IPv4, IPv6,
ARP sender or neighbour-advertisement target).  Only the CNI ADD knows which veth got which
addresses, so a small chained plugin (`cni_plugin`, after `bridge` in the conflist
ovs-mesh writes) adds each pod's (veth, MAC, addresses) to the sets of our table
`bridge ovs_mesh_guard` and removes them on DEL; the agent keeps the sets equal to the
veths on kbr0 (`observe`: what the plugin recorded, learned from the pod for a pod
made before the guard, nothing for a veth that is gone).

In the table, for frames entering kbr0 from any port but obr0's:
  - a port without an entry drops everything (a pod is guarded from its first frame);
    on a kernel that cannot tell kbr0's ports from other bridges' (no nft_meta_bridge)
    a port without an entry is left alone instead, so that other Linux bridges keep
    working, and the agent's pass fills in the pods the plugin did not;
  - the Ethernet source and the ARP sender MAC must be the pod's MAC;
  - the IPv4 source and the ARP sender address must be the pod's (DHCP discover from
    0.0.0.0 and ARP probes with sender 0.0.0.0 pass);
  - the IPv6 source must be the pod's, or link-local / :: (neighbour discovery, DAD:
    the `bridge ovs_mesh` table allows those for ICMPv6 only), and a neighbour
    advertisement's target must be the pod's (or link-local).
The table is owned like our other tables: named `ovs_mesh_guard`, its first rule's
comment carries its parameters, it is replaced or deleted whole; the elements
are added and deleted one pod at a time, so the plugin and the agent never undo
each other's work.
"""
from __future__ import annotations

import dataclasses
from ipaddress import ip_address

TABLE = "ovs_mesh_guard"
FAMILY = "bridge"
COMMENT = "ovs-mesh pod-guard "
LINK_LOCAL_10_BITS = 0x3fa   # fe80::/10, the first 10 bits of an ND target


@dataclasses.dataclass(frozen=True, order=True)
class GuardedPod:
    """One pod as the guard knows it: its veth on kbr0, its MAC and its addresses."""
    port: str
    mac: str
    ips: tuple[str, ...] = ()

    @property
    def ipv4(self) -> list[str]:
        return [a for a in self.ips if ip_address(a).version == 4]

    @property
    def ipv6(self) -> list[str]:
        return [a for a in self.ips if ip_address(a).version == 6]


def ruleset(bridge: str, gateway_port: str, scoped: bool = True, pods=()) -> str:
    """The whole table, with `pods` in its sets (one nft transaction makes it).
    `scoped=False` (a kernel without nft_meta_bridge): the rules hold for the ports in the
    sets, on whichever bridge (the module docstring says why)."""
    comment = f"{COMMENT}{bridge} {gateway_port} {'scoped' if scoped else 'any'}"
    head = [f'meta ibrname != "{bridge}" accept comment "{comment}"'] if scoped else []
    head.append(f'iifname "{gateway_port}" accept' + ("" if scoped else f' comment "{comment}"'))
    rules = [*head,
             f"iifname != @pod_ports {'drop' if scoped else 'accept'}",
             "iifname . ether saddr != @pod_macs drop",
             "iifname . arp saddr ether != @pod_macs drop",
             "arp saddr ip 0.0.0.0 accept",
             "iifname . arp saddr ip != @pod_ip4 drop",
             "ip saddr 0.0.0.0 udp dport 67 accept",
             "iifname . ip saddr != @pod_ip4 drop",
             # link-local and :: sources (neighbour discovery, DAD, MLD): any but a claim
             "ip6 saddr { ::, fe80::/10 } icmpv6 type != nd-neighbor-advert accept",
             f"icmpv6 type nd-neighbor-advert @th,64,10 {LINK_LOCAL_10_BITS:#x} accept",
             "icmpv6 type nd-neighbor-advert iifname . @th,64,128 != @pod_na6 drop",
             "ip6 saddr { ::, fe80::/10 } accept",
             "iifname . ip6 saddr != @pod_ip6 drop"]
    sets = [("pod_ports", "type ifname"), ("pod_macs", "type ifname . ether_addr"),
            ("pod_ip4", "type ifname . ipv4_addr"), ("pod_ip6", "type ifname . ipv6_addr"),
            ("pod_na6", "typeof iifname . @th,64,128")]
    out = [f"table {FAMILY} {TABLE} {{"]
    out += [f"  set {name} {{ {kind}; }}" for name, kind in sets]
    out += ["  chain prerouting {", "    type filter hook prerouting priority filter; policy accept;",
            *(f"    {r}" for r in rules), "  }", "}"]
    return "\n".join(out) + "\n" + elements("add", pods)


def elements(verb: str, pods) -> str:
    """`add element` / `delete element` lines for every set entry of `pods`."""
    lines = []
    for p in pods:
        port = f'"{p.port}"'
        entries = [("pod_ports", port), ("pod_macs", f"{port} . {p.mac}"),
                   *(("pod_ip4", f"{port} . {a}") for a in p.ipv4),
                   *(("pod_ip6", f"{port} . {a}") for a in p.ipv6),
                   *(("pod_na6", f"{port} . {int(ip_address(a)):#x}") for a in p.ipv6)]
        lines += [f"{verb} element {FAMILY} {TABLE} {s} {{ {e} }}" for s, e in entries]
    return "".join(line + "\n" for line in lines)


def parse_comment(comment: str) -> tuple[str, str, bool] | None:
    """(bridge, gateway port, scoped) from our first rule's comment; None when it is not ours."""
    if not comment.startswith(COMMENT):
        return None
    parts = comment[len(COMMENT):].split()
    return (parts[0], parts[1], parts[2] == "scoped") if len(parts) == 3 else None


def pods_from_sets(sets: dict[str, list]) -> tuple[GuardedPod, ...]:
    """The pods in the sets as `nft -j list table` shows them: {set name: [element, ...]}, an
    element being a name (ports) or a concatenation {"concat": [port, value]}."""
    macs: dict[str, str] = {}
    ips: dict[str, list[str]] = {}
    for name in ("pod_macs", "pod_ip4", "pod_ip6"):
        for e in sets.get(name, []):
            concat = e.get("concat") if isinstance(e, dict) else None
            if not (isinstance(concat, list) and len(concat) == 2):
                continue
            port, value = concat
            if name == "pod_macs":
                macs[port] = value
            else:
                ips.setdefault(port, []).append(value)
    ports = [p for p in sets.get("pod_ports", []) if isinstance(p, str)]
    return tuple(sorted(GuardedPod(p, macs.get(p, ""), tuple(sorted(ips.get(p, []), key=_order)))
                        for p in ports))


def _order(a: str) -> tuple:
    ip = ip_address(a)
    return (ip.version, int(ip))


def pod_from_cni_result(result: dict, bridge: str, netns: str, ifname: str) -> GuardedPod:
    """The pod a CNI result describes (the `prevResult` the bridge plugin made): its host
    veth (the interface outside any sandbox that is not the bridge), the MAC of the pod's
    interface (`ifname` in `netns`) and its addresses.  ValueError when it lacks one."""
    interfaces = result.get("interfaces") or []
    host = [i for i, x in enumerate(interfaces) if isinstance(x, dict) and not x.get("sandbox")
            and x.get("name") != bridge]
    pod = [i for i, x in enumerate(interfaces) if isinstance(x, dict) and x.get("sandbox")
           and x.get("name") == ifname]
    if not host or not pod:
        raise ValueError(f"prevResult.interfaces: no host veth and pod interface {ifname} (in {netns})")
    mac = interfaces[pod[0]].get("mac")
    if not isinstance(mac, str) or not mac:
        raise ValueError(f"prevResult.interfaces[{pod[0]}].mac: {mac!r}: the pod interface has no MAC")
    ips = []
    for entry in result.get("ips") or []:
        if not isinstance(entry, dict) or entry.get("interface", pod[0]) != pod[0]:
            continue
        ips.append(str(ip_address(str(entry.get("address", "")).split("/")[0])))
    if not ips:
        raise ValueError("prevResult.ips: no address for the pod interface")
    return GuardedPod(interfaces[host[0]]["name"], mac.lower(), tuple(sorted(ips, key=_order)))
