"""Our nftables table `bridge ovs_mesh_guard` on this host: read it, replace it whole,
change the pods in its sets, delete it.  Standard library only (the CNI plugin uses it)."""
from __future__ import annotations

import json
import subprocess

from . import rules


class NftError(RuntimeError):
    pass


def nft(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["nft", *args], input=stdin, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise NftError("nft not found (apt-get install nftables)") from None


def read() -> tuple[tuple[str, str, bool] | None, tuple[rules.GuardedPod, ...]] | None:
    """((bridge, gateway port, scoped) from our first rule's comment, None without it; the
    pods in the sets), or None without the table (or without nft)."""
    try:
        p = nft("-j", "list", "table", rules.FAMILY, rules.TABLE)
    except NftError:
        return None
    if p.returncode != 0:
        return None
    params, sets = None, {}
    for item in json.loads(p.stdout).get("nftables", []):
        if "set" in item:
            sets[item["set"]["name"]] = item["set"].get("elem", [])
        comment = item.get("rule", {}).get("comment")
        if comment and params is None:
            params = rules.parse_comment(comment)
    return params, rules.pods_from_sets(sets)


def run_script(script: str) -> None:
    """One nft transaction: all of it or nothing."""
    if not script:
        return
    p = nft("-f", "-", stdin=script)
    if p.returncode != 0:
        raise NftError(f"nft: {p.stderr.strip()}")


def replace(bridge: str, gateway_port: str, scoped: bool, pods) -> None:
    """The whole table, with `pods`, in one transaction (create-if-missing, delete, add)."""
    run_script(f"table {rules.FAMILY} {rules.TABLE}\ndelete table {rules.FAMILY} {rules.TABLE}\n"
               + rules.ruleset(bridge, gateway_port, scoped, pods))


def update(old, new) -> None:
    """Change the sets from the pods `old` to the pods `new`: only the pods that differ, so
    what the CNI plugin added meanwhile stays."""
    old, new = set(old), set(new)
    run_script(rules.elements("delete", sorted(old - new)) + rules.elements("add", sorted(new - old)))


def remove() -> None:
    if read() is None:
        return
    p = nft("delete", "table", rules.FAMILY, rules.TABLE)
    if p.returncode != 0 and read() is not None:
        raise NftError(f"nft delete table {rules.FAMILY} {rules.TABLE}: {p.stderr.strip()}")
