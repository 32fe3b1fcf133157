"""Masquerade of pod traffic that leaves the cluster range, with nftables.

All of it lives in one table of its own, `ip ovs_mesh`, created and deleted
whole, so ownership is trivial: nothing outside that table is read or touched.
The rule carries a comment naming the CIDR, which is what `observe` reads
back to compare with the desired range.  Replacing the table is one atomic
`nft -f` transaction.
"""
from __future__ import annotations

import json
import shutil
import subprocess

TABLE = "ovs_mesh"
FAMILY = "ip"
COMMENT_PREFIX = "ovs-mesh masquerade "


class NftUnavailable(RuntimeError):
    pass


def available() -> bool:
    return shutil.which("nft") is not None


def _nft(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    if not available():
        raise NftUnavailable("cluster.masquerade needs nftables (`nft`; apt-get install nftables)")
    return subprocess.run(["nft", *args], input=stdin, capture_output=True, text=True, timeout=30)


def observe() -> str | None:
    """The CIDR our table masquerades ("" if the table exists without our
    rule), or None if the table does not exist / nft is missing."""
    if not available():
        return None
    p = _nft("-j", "list", "table", FAMILY, TABLE)
    if p.returncode != 0:
        return None
    for item in json.loads(p.stdout).get("nftables", []):
        comment = item.get("rule", {}).get("comment", "")
        if comment.startswith(COMMENT_PREFIX):
            return comment[len(COMMENT_PREFIX):]
    return ""


def ruleset(cidr: str) -> str:
    return (f"table {FAMILY} {TABLE} {{\n"
            f"  chain postrouting {{\n"
            f"    type nat hook postrouting priority srcnat; policy accept;\n"
            f"    ip saddr {cidr} ip daddr != {cidr} masquerade comment \"{COMMENT_PREFIX}{cidr}\"\n"
            f"  }}\n}}\n")


def ensure(cidr: str) -> None:
    """Replace the whole table atomically (create-if-missing, delete, add)."""
    script = f"table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n" + ruleset(cidr)
    p = _nft("-f", "-", stdin=script)
    if p.returncode != 0:
        raise RuntimeError(f"nft: {p.stderr.strip()}")


def remove() -> None:
    if observe() is None:
        return
    p = _nft("delete", "table", FAMILY, TABLE)
    if p.returncode != 0 and observe() is not None:
        raise RuntimeError(f"nft delete table {FAMILY} {TABLE}: {p.stderr.strip()}")
