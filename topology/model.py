"""The cluster model: frozen values that every other stage reads.

Nothing here talks to the machine.  A `Config` is what one validated YAML file
(plus CLI overrides) says; `Node` is one member of the mesh.
"""
from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv4Network

TUNNELS = ("vxlan", "gre", "geneve")
MODES = ("flow", "port", "stp")
SOURCES = ("file", "kubernetes")
DATAPATHS = ("system", "netdev", "dummy")

# Bytes of outer headers each tunnel adds (IPv4 underlay): the pod MTU is the
# underlay MTU minus this.  GRE is counted with its key field.
OVERHEAD = {"vxlan": 50, "geneve": 50, "gre": 42}
# The tunnel key (VXLAN/Geneve VNI, GRE key) tells clusters on one underlay
# apart.  24 bits: the width of the VXLAN and Geneve VNI.  0 is what ovs-mesh
# always sent before the key was configurable.
MAX_VNI = (1 << 24) - 1
MIN_POD_MTU = 576  # smallest MTU every IPv4 host must accept (RFC 791)


@dataclasses.dataclass(frozen=True, order=True)
class Node:
    name: str
    ip: IPv4Address
    subnet: IPv4Network | None = None

    @property
    def gateway(self) -> IPv4Address:
        """The first address of the node's pod subnet: kbr0's address."""
        assert self.subnet is not None
        return self.subnet.network_address + 1


@dataclasses.dataclass(frozen=True)
class Cluster:
    cidr: IPv4Network = IPv4Network("10.244.0.0/16")
    node_prefix: int = 24
    tunnel: str = "vxlan"
    mode: str = "flow"
    vxlan_port: int = 4789
    mesh_degree: int = 0
    mtu: int | None = None  # None: auto (underlay MTU - overhead)
    masquerade: bool = True
    vni: int = 0

    @property
    def overhead(self) -> int:
        return OVERHEAD[self.tunnel]

    def pod_mtu(self, underlay_mtu: int) -> int:
        return self.mtu if self.mtu is not None else underlay_mtu - self.overhead


@dataclasses.dataclass(frozen=True)
class Local:
    node: str
    ovsdb: str = "unix:/var/run/openvswitch/db.sock"
    datapath: str = "system"
    host: bool = True
    underlay_bridge: str | None = None
    underlay_interface: str | None = None
    cni_conf: str = "/etc/cni/net.d/10-ovs-mesh.conflist"
    metrics: str = "127.0.0.1:9476"
    # OVS run directory (bridge .mgmt sockets, vswitchd pidfile).  Derived
    # from a unix: ovsdb remote when not given.
    ovs_rundir: str | None = None
    ssl_key: str = "/etc/openvswitch/ovsclient-privkey.pem"
    ssl_cert: str = "/etc/openvswitch/ovsclient-cert.pem"
    ssl_ca: str = "/etc/openvswitch/cacert.pem"

    @property
    def rundir(self) -> str:
        if self.ovs_rundir:
            return self.ovs_rundir
        if self.ovsdb.startswith("unix:"):
            import os.path

            return os.path.dirname(self.ovsdb[len("unix:"):]) or "."
        return "/var/run/openvswitch"


@dataclasses.dataclass(frozen=True)
class Config:
    cluster: Cluster
    local: Local
    nodes: tuple[Node, ...] = ()
    source: str = "file"
    kubernetes: dict | None = None  # source options (kubeconfig path, ...)

    def node(self, name: str) -> Node | None:
        for n in self.nodes:
            if n.name == name:
                return n
        return None

    @property
    def local_node(self) -> Node:
        node = self.node(self.local.node)
        if node is None:
            raise LookupError(self.local.node)
        return node

    def with_nodes(self, nodes) -> "Config":
        return dataclasses.replace(self, nodes=tuple(sorted(nodes)))
