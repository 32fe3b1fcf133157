"""ovs-mesh's nftables tables, each created, replaced and deleted whole, so
ownership is trivial: nothing outside them is read or touched.

- `ip ovs_mesh` (cluster.masquerade): pod traffic leaving the cluster range
  is masqueraded.
- `bridge ovs_mesh` (anti-spoofing): frames entering kbr0 from a pod port (any
  port but obr0's, the gateway side) whose IPv4 source or ARP sender address
  lies outside the node subnet, or is the gateway, are dropped, as are
  VLAN-tagged frames (they would carry IPv4/ARP past these matches).

The first rule of each table carries a comment naming its parameters, which
is what `observe_*` reads back to compare with the desired state.  Replacing a
table is one atomic `nft -f` transaction.
"""
from __future__ import annotations

import functools
import json
import shutil
import subprocess

TABLE = "ovs_mesh"
MASQ_FAMILY, ANTISPOOF_FAMILY = "ip", "bridge"
MASQ_COMMENT, ANTISPOOF_COMMENT = "ovs-mesh masquerade ", "ovs-mesh antispoof "


class NftUnavailable(RuntimeError):
    pass


def available() -> bool:
    return shutil.which("nft") is not None


def _nft(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    if not available():
        raise NftUnavailable("ovs-mesh's host networking needs nftables (`nft`; apt-get install nftables)")
    return subprocess.run(["nft", *args], input=stdin, capture_output=True, text=True, timeout=30)


def _comment(family: str, prefix: str) -> str | None:
    """The parameters in our table's comment ("" if the table exists without
    it), or None if the table does not exist / nft is missing."""
    if not available():
        return None
    p = _nft("-j", "list", "table", family, TABLE)
    if p.returncode != 0:
        return None
    for item in json.loads(p.stdout).get("nftables", []):
        comment = item.get("rule", {}).get("comment", "")
        if comment.startswith(prefix):
            return comment[len(prefix):]
    return ""


def observe_masquerade() -> str | None:
    """The CIDR our `ip` table masquerades, "" without our rule, None without the table."""
    return _comment(MASQ_FAMILY, MASQ_COMMENT)


def observe_antispoof() -> tuple[str, str, str] | None:
    """(subnet, gateway, gateway port) of our `bridge` table, ("", "", "")
    without our rule, None without the table."""
    found = _comment(ANTISPOOF_FAMILY, ANTISPOOF_COMMENT)
    if found is None:
        return None
    parts = found.split()
    return tuple(parts) if len(parts) == 3 else ("", "", "")


def masquerade_ruleset(cidr: str) -> str:
    return (f"table {MASQ_FAMILY} {TABLE} {{\n"
            f"  chain postrouting {{\n"
            f"    type nat hook postrouting priority srcnat; policy accept;\n"
            f"    ip saddr {cidr} ip daddr != {cidr} masquerade comment \"{MASQ_COMMENT}{cidr}\"\n"
            f"  }}\n}}\n")


@functools.lru_cache(maxsize=None)
def bridge_meta_supported() -> bool:
    """Whether the kernel matches `meta ibrname` (nft_meta_bridge): asked with
    `nft --check`, which the kernel validates without committing anything."""
    probe = (f'table bridge {TABLE}_probe {{ chain c {{ type filter hook prerouting priority filter; '
             f'meta ibrname "x" accept; }}; }}')
    return available() and _nft("-c", "-f", "-", stdin=probe).returncode == 0


def antispoof_ruleset(subnet: str, gateway: str, gateway_port: str, bridge: str,
                      scoped: bool = True) -> str:
    """Frames from kbr0's pod ports may only speak for the node subnet, never
    for the gateway.  `scoped=False` (a kernel without nft_meta_bridge) cannot
    tell kbr0's ports from other Linux bridges' ports: the rules then hold for
    every bridge port of the network namespace except `gateway_port`."""
    pod = (f'meta ibrname "{bridge}" ' if scoped else "") + f'iifname != "{gateway_port}"'
    return (f"table {ANTISPOOF_FAMILY} {TABLE} {{\n"
            f"  chain prerouting {{\n"
            f"    type filter hook prerouting priority filter; policy accept;\n"
            f"    {pod} ether type {{ 8021q, 8021ad }} drop "
            f"comment \"{ANTISPOOF_COMMENT}{subnet} {gateway} {gateway_port}\"\n"
            f"    {pod} ip saddr != {subnet} drop\n"
            f"    {pod} ip saddr {gateway} drop\n"
            # 0.0.0.0: an ARP probe (RFC 5227) claims nothing
            f"    {pod} arp saddr ip != {{ {subnet}, 0.0.0.0 }} drop\n"
            f"    {pod} arp saddr ip {gateway} drop\n"
            f"  }}\n}}\n")


def replace(family: str, ruleset: str) -> None:
    """Replace our table of `family` atomically (create-if-missing, delete, add)."""
    script = f"table {family} {TABLE}\ndelete table {family} {TABLE}\n" + ruleset
    p = _nft("-f", "-", stdin=script)
    if p.returncode != 0:
        raise RuntimeError(f"nft: {p.stderr.strip()}")


def remove(family: str) -> None:
    if _comment(family, "") is None:
        return
    p = _nft("delete", "table", family, TABLE)
    if p.returncode != 0 and _comment(family, "") is not None:
        raise RuntimeError(f"nft delete table {family} {TABLE}: {p.stderr.strip()}")
