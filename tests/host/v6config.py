"""Configs for the IPv6 / dual-stack host tests, built with the model's
constructors: an IPv4 file config is parsed, then given its IPv6 fields
(cluster.cidr6, node subnet6, an IPv6 underlay), as the dual-stack YAML
will (its parser is v6core's part of issue 12).  Shared by the pure tests
and hostctl.py, which applies one inside a test's network namespace."""
from __future__ import annotations

import dataclasses
from ipaddress import IPv6Network, ip_address

from topology.config import parse_config
from topology.model import Config

CIDR6 = IPv6Network("fd00:10:244::/56")
SUBNET6 = {"node-1": IPv6Network("fd00:10:244:1::/64"), "node-2": IPv6Network("fd00:10:244:2::/64")}
UNDERLAY = {"node-1": ("192.168.77.11", "fd00:77::11"), "node-2": ("192.168.77.12", "fd00:77::12")}


def config(family: str = "ipv4", masquerade: bool = True, underlay: str = "ipv4", mtu="auto",
           **local) -> Config:
    """Two nodes, local node-1, of `family` ("ipv4", "ipv6" or "dual") over
    an `underlay` ("ipv4"/"ipv6") network; `local` overrides local settings."""
    base = parse_config({
        "cluster": {"cidr": "10.244.0.0/16", "node_prefix": 24, "masquerade": masquerade, "mtu": mtu},
        "nodes": [{"name": n, "ip": ips[0], "subnet": f"10.244.{i}.0/24"}
                  for i, (n, ips) in enumerate(UNDERLAY.items(), start=1)],
        "local": {"node": "node-1", "datapath": "system", "host": True,
                  "cni_conf": "/etc/cni/net.d/10-ovs-mesh.conflist", "ovsdb": "unix:/run/omho/db.sock", **local}})
    cluster = dataclasses.replace(base.cluster, cidr6=CIDR6 if family != "ipv4" else None,
                                  cidr=None if family == "ipv6" else base.cluster.cidr)
    nodes = [dataclasses.replace(n, ip=ip_address(UNDERLAY[n.name][underlay == "ipv6"]),
                                 subnet=None if family == "ipv6" else n.subnet,
                                 subnet6=SUBNET6[n.name] if family != "ipv4" else None) for n in base.nodes]
    return dataclasses.replace(base, cluster=cluster).with_nodes(nodes)
