"""Configs for the IPv6 / dual-stack host tests, in the contract's YAML shape
(`cidr: 10.244.0.0/16,fd00:10:244::/56`, a node `subnet: [v4, v6]`) and read
by the real parser.  Shared by the pure tests and hostctl.py, which applies
one inside a test's network namespace."""
from __future__ import annotations

from topology.config import parse_config
from topology.model import Config

UNDERLAY = {"node-1": ("192.168.77.11", "fd00:77::11"), "node-2": ("192.168.77.12", "fd00:77::12")}


def data(family: str = "ipv4", masquerade: bool = True, underlay: str = "ipv4", mtu="auto", **local) -> dict:
    """Two nodes, local node-1, of `family` ("ipv4", "ipv6" or "dual") over
    an `underlay` ("ipv4"/"ipv6") network; `local` overrides local settings."""
    cidr = {"ipv4": "10.244.0.0/16", "ipv6": "fd00:10:244::/56", "dual": "10.244.0.0/16,fd00:10:244::/56"}[family]
    nodes = []
    for i, (name, ips) in enumerate(UNDERLAY.items(), start=1):
        subnets = {"ipv4": f"10.244.{i}.0/24", "ipv6": f"fd00:10:244:{i}::/64"}
        subnet = [subnets["ipv4"], subnets["ipv6"]] if family == "dual" else subnets[family]
        nodes.append({"name": name, "ip": ips[underlay == "ipv6"], "subnet": subnet})
    return {"cluster": {"cidr": cidr, "node_prefix": 24, "masquerade": masquerade, "mtu": mtu},
            "nodes": nodes,
            "local": {"node": "node-1", "datapath": "system", "host": True,
                      "cni_conf": "/etc/cni/net.d/10-ovs-mesh.conflist", "ovsdb": "unix:/run/omho/db.sock", **local}}


def config(*args, **kw) -> Config:
    return parse_config(data(*args, **kw))
