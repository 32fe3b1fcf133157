"""The userspace-datapath underlay: the node IP on an OVS bridge of ours.

With `datapath: netdev`, OVS's userspace tunnels only work if the route to a
peer resolves through an OVS bridge (the tunnel's egress is looked up in OVS's
own routing table, which learns only addresses of OVS bridges' internal
devices).  So the node IP moves from
`underlay_interface` to the internal device of `underlay_bridge`, a netdev
bridge (external_ids ovs-mesh=underlay, fail_mode standalone: plain
learning switch) with `underlay_interface` as its only port.  This module
describes those rows (the host layer reads and writes them with the OVSDB
client it is given, so the same tagging rules as obr0 hold) and switches the
underlay interface's tx checksum offload; the host layer moves addresses and routes.
"""
from __future__ import annotations

import shutil
import subprocess

from ..ovs.model import OWNER_KEY, BridgeSpec, OvsState, PortSpec, frozen_map

ROLE = "underlay"


def desired_ovs(bridge: str, interface: str, mtu: int | None) -> OvsState:
    return OvsState(
        bridge=BridgeSpec(name=bridge, datapath_type="netdev", fail_mode="", rstp_enable=False,
                          mtu_request=mtu, external_ids=frozen_map({OWNER_KEY: ROLE})),
        ports=(PortSpec(name=interface, type="", external_ids=frozen_map({OWNER_KEY: ROLE})),))


def tx_checksum(interface: str) -> str | None:
    """"on"/"off" for the interface's tx-checksumming, None if unknown."""
    if shutil.which("ethtool") is None:
        return None
    p = subprocess.run(["ethtool", "-k", interface], capture_output=True, text=True, timeout=10)
    for line in p.stdout.splitlines():
        if line.startswith("tx-checksumming:"):
            return line.split(":", 1)[1].split()[0]
    return None


def set_tx_checksum(interface: str, value: str) -> None:
    """TCP through a veth on a netdev bridge breaks with tx checksum offload
    (the userspace datapath forwards partial checksums); ICMP still works."""
    p = subprocess.run(["ethtool", "-K", interface, "tx", value], capture_output=True, text=True,
                       timeout=10)
    if p.returncode != 0 and tx_checksum(interface) != value:
        raise RuntimeError(f"ethtool -K {interface} tx {value}: {p.stderr.strip()}")
