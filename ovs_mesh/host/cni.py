"""The CNI config ovs-mesh writes for the node: a conflist for the reference
`bridge` plugin on kbr0 with `host-local` IPAM over the node's pod subnets:
one range set per family (IPv4 first), so a dual-stack pod gets an address
of each, and a default route per family (0.0.0.0/0, ::/0) via that family's
gateway.

kbr0 is made by ovs-mesh with exactly the gateway/prefix of the IPAM range,
which is what the bridge plugin (isGateway) requires to accept an existing
bridge.  ipMasq is off: masquerade is ovs-mesh's (cluster.masquerade).
The file is written atomically (tmp + rename) and only when it differs; the
`name` field marks it as ours, so teardown never deletes someone else's file.
"""
from __future__ import annotations

import json
import os
from ipaddress import IPv4Network, IPv6Network

from ovs_mesh.files import write_atomic

NETWORK_NAME = "ovs-mesh"
BRIDGE_NAME = "kbr0"
CNI_VERSION = "1.0.0"


def _range(subnet) -> dict:
    gateway = subnet.network_address + 1
    return {"subnet": str(subnet), "rangeStart": str(gateway + 1), "gateway": str(gateway)}


def conflist(subnet: IPv4Network | None, mtu: int, subnet6: IPv6Network | None = None,
             bridge: str = BRIDGE_NAME) -> dict:
    """`subnet` / `subnet6`: the node's pod subnet of each family (None when
    the cluster lacks the family; at least one is given)."""
    subnets = [s for s in (subnet, subnet6) if s is not None]
    default = {4: "0.0.0.0/0", 6: "::/0"}
    return {
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "plugins": [{
            "type": "bridge",
            "bridge": bridge,
            "isGateway": True,
            "ipMasq": False,
            "hairpinMode": False,
            "mtu": mtu,
            "ipam": {
                "type": "host-local",
                "ranges": [[_range(s)] for s in subnets],
                "routes": [{"dst": default[s.version]} for s in subnets],
            },
        }],
    }


def render(subnet: IPv4Network | None, mtu: int, subnet6: IPv6Network | None = None) -> str:
    return json.dumps(conflist(subnet, mtu, subnet6), indent=2) + "\n"


def read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def is_ours(content: str | None) -> bool:
    try:
        return json.loads(content or "").get("name") == NETWORK_NAME
    except (ValueError, AttributeError):
        return False


def write(path: str, content: str) -> bool:
    """Write atomically, only if different.  Returns True if written."""
    if read(path) == content:
        return False
    write_atomic(path, content, 0o644)
    return True


def remove(path: str) -> bool:
    """Delete the file only if it is ours."""
    if not is_ours(read(path)):
        return False
    os.unlink(path)
    return True


def plugin_config(content: str, index: int = 0) -> dict:
    """One plugin's network config, as a runtime hands it to the plugin
    (name and cniVersion copied from the list): used by tests and the lab."""
    data = json.loads(content)
    return {"cniVersion": data["cniVersion"], "name": data["name"], **data["plugins"][index]}
