"""`ovs-mesh-guard`: the chained CNI plugin that puts each pod into the guard's sets.

The conflist ovs-mesh writes runs it after `bridge`.  ADD reads the bridge plugin's
result (`prevResult`): the host veth, the pod interface's MAC and the addresses
host-local gave it, and adds them to `bridge ovs_mesh_guard` in one nft transaction;
it returns prevResult unchanged.  DEL removes the pod's entries (from prevResult, when
the runtime passes it; otherwise the agent drops the entries of veths that are gone).
CHECK fails when the entries are missing.  No table (the agent has not built it, or someone deleted it): ADD
fails, so the runtime retries rather than start an unguarded pod; DEL succeeds.

It imports only the standard library, `rules` and `table`: it runs once per pod, and its start-up
time is part of every pod's creation (bench/pod_guard.py measures it).
"""
from __future__ import annotations

import json
import os
import sys

from . import rules, table

SUPPORTED = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]


class PluginError(Exception):
    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details


def installed() -> tuple[rules.GuardedPod, ...] | None:
    """The pods in our table now; None without the table."""
    found = table.read()
    return None if found is None else found[1]


def add(pod: rules.GuardedPod) -> None:
    """One nft transaction of additions (adding what is there already is no error).  Entries a
    former veth of the same name left are not looked for: the bridge plugin names veths with 32
    random bits, and the agent's next full pass drops the entries of veths that are gone."""
    try:
        table.run_script(rules.elements("add", [pod]))
    except table.NftError as e:
        if installed() is None:
            raise PluginError(999, f"nft table {rules.FAMILY} {rules.TABLE} missing: is the ovs-mesh agent "
                                   "running?") from None
        raise PluginError(999, "the guard's entries could not be added", str(e)) from None


def delete(port: str) -> None:
    pods = installed() or ()
    table.run_script(rules.elements("delete", [p for p in pods if p.port == port]))


def run(command: str, conf: dict, env) -> dict | None:
    """One CNI call; the result to print (None: nothing)."""
    if command == "VERSION":
        return {"cniVersion": conf.get("cniVersion", "1.0.0"), "supportedVersions": SUPPORTED}
    bridge = conf.get("bridge") or "kbr0"
    prev = conf.get("prevResult")
    netns, ifname = env.get("CNI_NETNS", ""), env.get("CNI_IFNAME", "eth0")
    if command == "DEL":
        if isinstance(prev, dict):
            try:
                delete(rules.pod_from_cni_result(prev, bridge, netns, ifname).port)
            except ValueError:
                pass   # nothing we can name: the agent drops entries of veths that are gone
        return None
    if not isinstance(prev, dict):
        raise PluginError(7, "ovs-mesh-guard must be chained after bridge: no prevResult")
    try:
        pod = rules.pod_from_cni_result(prev, bridge, netns, ifname)
    except ValueError as e:
        raise PluginError(7, str(e)) from None
    if command == "ADD":
        add(pod)
        return prev
    if command == "CHECK":
        if pod not in (installed() or ()):
            raise PluginError(999, f"{pod.port}: not in the guard's sets")
        return None
    raise PluginError(4, f"unknown CNI_COMMAND {command!r}")


def main() -> int:
    version = "1.0.0"
    try:
        command = os.environ.get("CNI_COMMAND", "")
        conf = json.loads(sys.stdin.read() or "{}") if command != "VERSION" else {}
        version = conf.get("cniVersion", version) if isinstance(conf, dict) else version
        if not isinstance(conf, dict):
            raise PluginError(6, "the network configuration is not a JSON object")
        out = run(command, conf, os.environ)
    except PluginError as e:
        json.dump({"cniVersion": version, "code": e.code, "msg": e.msg, "details": e.details}, sys.stdout)
        return 1
    except table.NftError as e:
        json.dump({"cniVersion": version, "code": 999, "msg": "the guard's entries could not be changed",
                   "details": str(e)}, sys.stdout)
        return 1
    except ValueError as e:   # bad JSON on stdin
        json.dump({"cniVersion": version, "code": 6, "msg": f"cannot decode the network configuration: {e}"},
                  sys.stdout)
        return 1
    if out is not None:
        json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
