"""The userspace-datapath underlay: the node IP on an OVS bridge of ours.

With `datapath: netdev`, OVS's userspace tunnels only work if the route to a
peer resolves through an OVS bridge (OVS-FACTS.md).  So the node IP moves from
`underlay_interface` to the internal device of `underlay_bridge`, a netdev
bridge (external_ids ovs-mesh=underlay, fail_mode standalone: plain
learning switch) with `underlay_interface` as its only port.  The host layer
moves addresses and routes; this module owns the OVS rows (through the same
ovsdb_client reader/writer as obr0, so the same tagging rules hold) and the
tx checksum offload switch of the underlay interface.
"""
from __future__ import annotations

import shutil
import subprocess

from .diff import diff_rows
from .state import OWNER_KEY, BridgeSpec, HostChange, OvsState, PortSpec, frozen_map

ROLE = "underlay"


def desired_ovs(bridge: str, interface: str, mtu: int | None) -> OvsState:
    return OvsState(
        bridge=BridgeSpec(name=bridge, datapath_type="netdev", fail_mode="", rstp_enable=False,
                          mtu_request=mtu, external_ids=frozen_map({OWNER_KEY: ROLE})),
        ports=(PortSpec(name=interface, type="", external_ids=frozen_map({OWNER_KEY: ROLE})),))


class UnderlayOvs:
    """OVSDB rows of the underlay bridge, over the node's one OvsdbClient."""

    def __init__(self, client):
        self.client = client

    def read(self, bridge: str) -> OvsState:
        owned = self.client.read(bridge)
        if owned.refusal is not None:
            raise owned.refusal
        return OvsState(owned.bridge, owned.ports)

    def changes(self, bridge: str, want: OvsState) -> list[HostChange]:
        """OVS changes wrapped as host changes of kind "underlay" (the
        Reconciler routes kinds bridge/port to obr0, so they must not leak)."""
        return [HostChange(c.action, "underlay", f"{c.kind} {c.name}", old=c, new=c)
                for c in diff_rows(want, self.read(bridge))]

    def apply(self, bridge: str, changes: list[HostChange]) -> None:
        inner = [c.new for c in changes]
        if inner:
            self.client.apply(bridge, inner)

    def close(self) -> None:
        """The client belongs to the node (node.open_node), which closes it."""


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
