"""Host networking for `local.host: true`: kbr0, routes, sysctls, masquerade,
anti-spoofing, the CNI file and (netdev datapath) the underlay bridge, built
like the OVS side:

    observed = observe_host(config, netlink, ovsdb)        observe.py (all the reads)
    desired  = desired_host(config, pod_mtu, observed)     desired.py (pure)
    changes  = diff_host(desired, observed)                diff.py    (pure)
    HostApplier(...).apply(changes)                        apply.py   (one applier per kind)

over the adapters only the host uses: netlink.py (pyroute2: links, addresses,
routes), nft.py (nftables), cni.py (the CNI conflist), underlay.py (the netdev
datapath's underlay bridge and tx checksum offload).

The objects are the frozen types of model.py.  What is ours, and how we know it:
  kbr0          IFLA_IFALIAS "ovs-mesh" (an untagged kbr0 is refused / left alone)
  routes        route protocol ROUTE_PROTO (109, "ovs-mesh"; unused in rt_protos)
  sysctls       the previous value of every sysctl we changed is kept in
                <ovs rundir>/ovs-mesh.host.json (saved.py); teardown restores only those
  nftables      the tables `inet ovs_mesh` (masquerade of each family, ICMPv6
                redirects dropped; it replaces older versions' `ip ovs_mesh`) and
                `bridge ovs_mesh` (anti-spoofing on kbr0's pod ports), whole
  CNI file      its "name": "ovs-mesh"
  underlay      OVS rows tagged external_ids ovs-mesh=underlay, written through
                the OVSDB client we are given; the addresses and routes of its
                internal device move back on teardown
"""
from __future__ import annotations

from topology.model import Config

from .apply import HostApplier
from .desired import desired_host, gateway_mac
from .diff import diff_host
from .model import ALIAS, KBR, ROUTE_PROTO, HostChange, HostState
from .netlink import Netlink
from .observe import observe_host, underlay_mtu

__all__ = ["ALIAS", "KBR", "ROUTE_PROTO", "HostChange", "HostLayer", "HostState", "desired_host",
           "diff_host", "gateway_mac", "observe_host"]


class HostLayer:
    """The host stage of one node, for one config: built once, closed once.
    `ovsdb` is the OvsdbClient the underlay bridge's rows are read and written
    with; `netlink` defaults to a Netlink of the current network namespace."""

    def __init__(self, config: Config, ovsdb=None, netlink=None):
        self.config, self.ovsdb = config, ovsdb
        self.nl = netlink if netlink is not None else Netlink()

    def close(self) -> None:
        self.nl.close()

    def underlay_mtu(self) -> int:
        return underlay_mtu(self.config, self.nl)

    def observe(self) -> HostState:
        return observe_host(self.config, self.nl, self.ovsdb)

    def plan(self, pod_mtu: int, teardown: bool) -> list[HostChange]:
        """The host changes that make this node match the config (or remove what is ours)."""
        observed = self.observe()
        return diff_host(desired_host(self.config, pod_mtu, observed, teardown), observed)

    def apply(self, changes: list[HostChange], teardown: bool) -> None:
        """Execute exactly `changes` (from plan), idempotently."""
        HostApplier(self.config, self.nl, self.ovsdb).apply(changes, teardown)
