"""ovs-mesh's nftables tables, each created, replaced and deleted whole, so
ownership is trivial: nothing outside them is read or touched.

- `inet ovs_mesh`: pod traffic leaving the cluster range is masqueraded, per
  family (cluster.masquerade; pod <-> pod is never NATed), and in a cluster
  with IPv6 the ICMPv6 redirects the node would send out of kbr0 are dropped
  (Linux has no `send_redirects` for IPv6; see host/desired.py).  It replaces
  the IPv4-only `ip ovs_mesh` of older versions (LEGACY_MASQ_FAMILY), which
  apply deletes.
- `bridge ovs_mesh` (anti-spoofing): frames entering kbr0 from a pod port (any
  port but obr0's, the gateway side) whose IPv4 source, ARP sender, IPv6
  source or neighbour-advertisement target lies outside the node's subnet of
  that family, or is one of the gateway's addresses, are dropped; so are
  router advertisements and redirects from pods, IPv4/ARP in an IPv6-only
  cluster, and VLAN-tagged frames (they would carry IPv4/IPv6 past these
  matches).  Link-local and unspecified (::) IPv6 sources pass for ICMPv6
  only: pods need them for neighbour discovery, DAD and MLD.
- `inet ovs_mesh_wg` (cluster.encryption wireguard): tunnel packets (VXLAN/Geneve
  UDP, GRE) addressed to this host that did not arrive through the WireGuard
  device are dropped and counted: a plaintext tunnel packet forged on the
  underlay never reaches Open vSwitch.

The first rule of each table carries a comment naming its parameters, which
is what `observe_*` reads back to compare with the desired state.  Replacing a
table is one atomic `nft -f` transaction.
"""
from __future__ import annotations

import functools
import json
import shutil
import subprocess
from ipaddress import ip_address, ip_network

TABLE = "ovs_mesh"
MASQ_FAMILY, LEGACY_MASQ_FAMILY, ANTISPOOF_FAMILY = "inet", "ip", "bridge"
MASQ_COMMENT, ANTISPOOF_COMMENT = "ovs-mesh masquerade ", "ovs-mesh antispoof "
NO_REDIRECTS = "no-redirects"
# cluster.encryption wireguard: `inet ovs_mesh_wg`, tunnel packets only through the WireGuard device
WG_FAMILY, WG_TABLE, WG_COMMENT = "inet", TABLE + "_wg", "ovs-mesh wireguard "


class NftUnavailable(RuntimeError):
    pass


def available() -> bool:
    return shutil.which("nft") is not None


def _nft(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    if not available():
        raise NftUnavailable("ovs-mesh's host networking needs nftables (`nft`; apt-get install nftables)")
    return subprocess.run(["nft", *args], input=stdin, capture_output=True, text=True, timeout=30)


def _comment(family: str, prefix: str, table: str = TABLE) -> str | None:
    """The parameters in our table's comment ("" if the table exists without
    it), or None if the table does not exist / nft is missing."""
    if not available():
        return None
    p = _nft("-j", "list", "table", family, table)
    if p.returncode != 0:
        return None
    for item in json.loads(p.stdout).get("nftables", []):
        comment = item.get("rule", {}).get("comment", "")
        if comment.startswith(prefix):
            return comment[len(prefix):]
    return ""


def observe_masquerade() -> tuple[str, bool] | None:
    """(the CIDRs our `inet` table masquerades, space-separated; whether it
    drops ICMPv6 redirects), ("?", False) without our rule, None without the table."""
    found = _comment(MASQ_FAMILY, MASQ_COMMENT)
    if found is None:
        return None
    if not found:
        return "?", False
    words = found.split()
    return " ".join(w for w in words if w != NO_REDIRECTS), NO_REDIRECTS in words


def observe_legacy_masquerade() -> str | None:
    """The CIDR of an `ip ovs_mesh` table older versions wrote ("" without
    our rule), None without the table."""
    return _comment(LEGACY_MASQ_FAMILY, MASQ_COMMENT)


def observe_antispoof() -> tuple[str, str, str] | None:
    """(subnets, gateways, gateway port) of our `bridge` table, ("", "", "")
    without our rule, None without the table."""
    found = _comment(ANTISPOOF_FAMILY, ANTISPOOF_COMMENT)
    if found is None:
        return None
    parts = found.split()
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else ("", "", "")


def masquerade_ruleset(cidrs: list[str], redirects_from: str | None = None) -> str:
    """Masquerade each cluster range (one per family) leaving that range;
    with `redirects_from` (kbr0), drop the ICMPv6 redirects sent through it."""
    comment = MASQ_COMMENT + " ".join([*cidrs, *([NO_REDIRECTS] if redirects_from else [])])
    rules = []
    for cidr in cidrs:
        ip = "ip6" if ip_network(cidr).version == 6 else "ip"
        rules.append(f"{ip} saddr {cidr} {ip} daddr != {cidr} masquerade")
    out = [f"table {MASQ_FAMILY} {TABLE} {{"]
    if rules:
        rules[0] += f' comment "{comment}"'
        out += ["  chain postrouting {", "    type nat hook postrouting priority srcnat; policy accept;",
                *(f"    {r}" for r in rules), "  }"]
    if redirects_from:
        rule = f'oifname "{redirects_from}" icmpv6 type nd-redirect drop'
        out += ["  chain output {", "    type filter hook output priority filter; policy accept;",
                f"    {rule}" + ("" if rules else f' comment "{comment}"'), "  }"]
    return "\n".join(out + ["}"]) + "\n"


@functools.cache
def bridge_meta_supported() -> bool:
    """Whether the kernel matches `meta ibrname` (nft_meta_bridge): asked with
    `nft --check`, which the kernel validates without committing anything."""
    probe = (f'table bridge {TABLE}_probe {{ chain c {{ type filter hook prerouting priority filter; '
             f'meta ibrname "x" accept; }}; }}')
    return available() and _nft("-c", "-f", "-", stdin=probe).returncode == 0


def _target(net, op: str = "") -> str:
    """A match of an ND message's target address against prefix `net`, as raw
    payload (nft 1.0 has no `icmpv6 taddr`): the target is the 128 bits at
    offset 64 of the ICMPv6 header."""
    n = ip_network(net)
    value = int(n.network_address) >> (128 - n.prefixlen)
    return f"@th,64,{n.prefixlen} {op}0x{value:x}"


def antispoof_ruleset(subnet: str, gateway: str, gateway_port: str, bridge: str,
                      scoped: bool = True) -> str:
    """Frames from kbr0's pod ports may only speak for the node's subnets,
    never for the gateway.  `subnet` and `gateway` are comma-separated (one
    subnet per cluster family; kbr0's addresses, IPv6 link-local included).
    `scoped=False` (a kernel without nft_meta_bridge) cannot tell kbr0's ports
    from other Linux bridges' ports: the rules then hold for every bridge port
    of the network namespace except `gateway_port`."""
    pod = (f'meta ibrname "{bridge}" ' if scoped else "") + f'iifname != "{gateway_port}"'
    nets = [ip_network(s) for s in subnet.split(",") if s]
    gws = [ip_address(g) for g in gateway.split(",") if g]
    v4 = [str(n) for n in nets if n.version == 4]
    v6 = [n for n in nets if n.version == 6]
    gw4 = [str(g) for g in gws if g.version == 4]
    gw6 = [g for g in gws if g.version == 6]
    rules = [f"ether type {{ 8021q, 8021ad }} drop comment \"{ANTISPOOF_COMMENT}{subnet} {gateway} {gateway_port}\""]
    if v4:
        rules += [f"ip saddr != {v4[0]} drop", *(f"ip saddr {g} drop" for g in gw4),
                  # 0.0.0.0: an ARP probe (RFC 5227) claims nothing
                  f"arp saddr ip != {{ {v4[0]}, 0.0.0.0 }} drop", *(f"arp saddr ip {g} drop" for g in gw4)]
    else:
        rules.append("ether type { ip, arp } drop")           # an IPv6-only cluster: pods have no IPv4
    if v6:
        gw_set = ", ".join(str(g) for g in gw6)
        rules += [
            # link-local and :: sources: neighbour discovery, DAD, MLD only
            "ip6 saddr { ::, fe80::/10 } meta l4proto != ipv6-icmp drop",
            "ip6 saddr :: icmpv6 type != { nd-router-solicit, nd-neighbor-solicit, mld-listener-report, "
            "mld2-listener-report } drop",
            f"ip6 saddr != {{ ::, fe80::/10, {v6[0]} }} drop",
            *([f"ip6 saddr {{ {gw_set} }} drop"] if gw6 else []),
            # a neighbour advertisement claims its target: only the node subnet or link-local
            f"icmpv6 type nd-neighbor-advert {_target(v6[0], '!= ')} {_target('fe80::/10', '!= ')} drop",
            *(f"icmpv6 type nd-neighbor-advert {_target(f'{g}/128')} drop" for g in gw6),
            # pods are hosts: no router advertisements (rogue default routes), no redirects
            "icmpv6 type { nd-router-advert, nd-redirect } drop",
        ]
    body = "".join(f"    {pod} {r}\n" for r in rules)
    return (f"table {ANTISPOOF_FAMILY} {TABLE} {{\n"
            f"  chain prerouting {{\n"
            f"    type filter hook prerouting priority filter; policy accept;\n"
            f"{body}"
            f"  }}\n}}\n")


def observe_wg_filter() -> tuple[str, str] | None:
    """(device, tunnel: "udp PORT" or "gre") of our WireGuard filter table, ("", "") without our
    rule, None without the table."""
    found = _comment(WG_FAMILY, WG_COMMENT, WG_TABLE)
    if found is None:
        return None
    device, _, tunnel = found.partition(" ")
    return (device, tunnel) if device and tunnel else ("", "")


def wg_filter_ruleset(device: str, tunnel: str) -> str:
    """Packets of our tunnel for this host (`tunnel`: "udp PORT" for VXLAN/Geneve, "gre") that
    did not come out of the WireGuard `device` are dropped and counted, in the input hook:
    before the tunnel's socket or GRE handler sees them."""
    match = "meta l4proto gre" if tunnel == "gre" else f"udp dport {int(tunnel.split()[1])}"
    return (f"table {WG_FAMILY} {WG_TABLE} {{\n"
            f"  chain input {{\n"
            f"    type filter hook input priority filter; policy accept;\n"
            f'    iifname != "{device}" {match} counter drop comment "{WG_COMMENT}{device} {tunnel}"\n'
            f"  }}\n}}\n")


def replace(family: str, ruleset: str, table: str = TABLE) -> None:
    """Replace our table of `family` atomically (create-if-missing, delete, add)."""
    script = f"table {family} {table}\ndelete table {family} {table}\n" + ruleset
    p = _nft("-f", "-", stdin=script)
    if p.returncode != 0:
        raise RuntimeError(f"nft: {p.stderr.strip()}")


def remove(family: str, table: str = TABLE) -> None:
    if _comment(family, "", table) is None:
        return
    p = _nft("delete", "table", family, table)
    if p.returncode != 0 and _comment(family, "", table) is not None:
        raise RuntimeError(f"nft delete table {family} {table}: {p.stderr.strip()}")
