"""The cluster model: frozen values that every other stage reads.

Nothing here talks to the machine.  A `Config` is what one validated YAML file
(plus CLI overrides) says; `Node` is one member of the mesh.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

TUNNELS = ("vxlan", "gre", "geneve")
MODES = ("flow", "port", "stp")
SOURCES = ("file", "kubernetes")
DATAPATHS = ("system", "netdev", "dummy")
ENCRYPTIONS = ("none", "ipsec", "wireguard")
IPSEC_AUTHS = ("certificate", "psk")

# Bytes of outer headers each tunnel adds (IPv4 underlay): the pod MTU is the
# underlay MTU minus this.  GRE is counted with its key field.  An IPv6
# underlay adds IPV6_UNDERLAY_EXTRA more (a 40-byte outer header, not 20).
OVERHEAD = {"vxlan": 50, "geneve": 50, "gre": 42}
IPV6_UNDERLAY_EXTRA = 20

# ESP in transport mode around a tunnel packet (OVS's IPsec, strongSwan's
# aes256gcm16): SPI + sequence number 8, GCM IV 8, pad length + next header 2,
# ICV 16, and at most 3 bytes of padding (the payload is aligned to 4 bytes).
# Transport mode adds no IP header: the same over IPv4 and IPv6.
ESP_OVERHEAD = 8 + 8 + 2 + 16 + 3
# WireGuard's data message: outer IPv4 20 + UDP 8 + type/receiver/counter 16 +
# Poly1305 tag 16 (its padding to 16 bytes is capped at the device MTU, so it
# costs nothing more).  An IPv6 underlay adds IPV6_UNDERLAY_EXTRA.  The tunnels
# ride inside the WireGuard device between IPv4 addresses (cluster.wireguard_cidr).
WIREGUARD_OVERHEAD = 20 + 8 + 16 + 16
FAMILIES = ("ipv4", "ipv6")

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network
# The tunnel key (VXLAN/Geneve VNI, GRE key) tells clusters on one underlay
# apart.  24 bits: the width of the VXLAN and Geneve VNI.  0 is what ovs-mesh
# always sent before the key was configurable.
MAX_VNI = (1 << 24) - 1
MIN_POD_MTU = 576  # smallest MTU every IPv4 host must accept (RFC 791)


@dataclasses.dataclass(frozen=True, order=True)
class Node:
    """One member of the mesh.

    `ip` is the underlay address the tunnels use (IPv4 or IPv6; every node of
    a cluster has the same family).  `subnet` is the node's IPv4 pod subnet,
    `subnet6` its IPv6 one; a single-stack cluster leaves the other None.
    """
    name: str
    ip: Address
    subnet: IPv4Network | None = None
    subnet6: IPv6Network | None = None
    wireguard_key: str | None = None   # the node's WireGuard public key (base64), cluster.encryption wireguard

    @property
    def gateway(self) -> IPv4Address:
        """The first address of the node's IPv4 pod subnet: kbr0's address."""
        assert self.subnet is not None
        return self.subnet.network_address + 1

    @property
    def gateway6(self) -> IPv6Address:
        """The first address of the node's IPv6 pod subnet: kbr0's IPv6 address."""
        assert self.subnet6 is not None
        return self.subnet6.network_address + 1

    @property
    def subnets(self) -> tuple[Network, ...]:
        """The pod subnets this node has, IPv4 first."""
        return tuple(s for s in (self.subnet, self.subnet6) if s is not None)

    @property
    def underlay_family(self) -> str:
        return "ipv6" if self.ip.version == 6 else "ipv4"


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Cluster-wide settings.  Pod ranges per family, as Kubernetes'
    `--cluster-cidr=10.244.0.0/16,fd00:10:244::/56` with
    `--node-cidr-mask-size-ipv4/-ipv6`: `cidr` (IPv4, None in an IPv6-only
    cluster) with `node_prefix`, `cidr6` (IPv6, None unless configured) with
    `node_prefix6`."""
    cidr: IPv4Network | None = IPv4Network("10.244.0.0/16")
    node_prefix: int = 24
    cidr6: IPv6Network | None = None
    node_prefix6: int = 64
    tunnel: str = "vxlan"
    mode: str = "flow"
    vxlan_port: int = 4789
    mesh_degree: int = 0
    mtu: int | None = None  # None: auto (underlay MTU - overhead)
    masquerade: bool = True
    vni: int = 0
    encryption: str = "none"             # none | ipsec | wireguard
    ipsec_auth: str = "certificate"      # certificate (CA-signed, remote_name = node name) | psk (opt-in)
    ipsec_sa_lifetime: int = 0           # seconds an ESP SA lives (0: strongSwan's defaults)
    wireguard_port: int = 51820
    wireguard_cidr: IPv4Network = IPv4Network("100.64.0.0/16")   # the nodes' addresses on the WireGuard device

    def wireguard_overhead(self, underlay_family: str = "ipv4") -> int:
        """What the WireGuard device adds to a packet over the underlay (its MTU is the
        underlay's minus this)."""
        return WIREGUARD_OVERHEAD + (IPV6_UNDERLAY_EXTRA if underlay_family == "ipv6" else 0)

    def overhead_for(self, underlay_family: str = "ipv4") -> int:
        """Bytes of outer headers on a pod packet: the tunnel's over the underlay's family,
        then ESP around it (ipsec), or the tunnel over the WireGuard device's IPv4
        addresses inside WireGuard's own headers (wireguard)."""
        extra = IPV6_UNDERLAY_EXTRA if underlay_family == "ipv6" else 0
        if self.encryption == "wireguard":
            return OVERHEAD[self.tunnel] + self.wireguard_overhead(underlay_family)
        if self.encryption == "ipsec":
            return OVERHEAD[self.tunnel] + extra + ESP_OVERHEAD
        return OVERHEAD[self.tunnel] + extra

    def pod_mtu(self, underlay_mtu: int, underlay_family: str = "ipv4") -> int:
        return self.mtu if self.mtu is not None else underlay_mtu - self.overhead_for(underlay_family)

    @property
    def families(self) -> tuple[str, ...]:
        """The pod address families of the cluster, IPv4 first."""
        return tuple(f for f, c in (("ipv4", self.cidr), ("ipv6", self.cidr6)) if c is not None)

    @property
    def cidrs(self) -> tuple[Network, ...]:
        return tuple(c for c in (self.cidr, self.cidr6) if c is not None)


@dataclasses.dataclass(frozen=True)
class Local:
    node: str
    ovsdb: str = "unix:/var/run/openvswitch/db.sock"
    datapath: str = "system"
    host: bool = True
    # the per-pod source guard (ovs_mesh.pod_guard): its nftables table, and its CNI plugin
    # `ovs-mesh-guard` in the conflist (which the runtime must find in its CNI bin directory)
    pod_guard: bool = True
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
    # cluster.encryption ipsec: this node's certificate and key and the CA (certificate
    # authentication), or the file holding the pre-shared key (cluster.ipsec_auth psk)
    certificate: str | None = None
    private_key: str | None = None
    ca_cert: str | None = None
    psk_file: str | None = None
    # cluster.encryption wireguard: where this node's private key is generated and kept
    wireguard_key: str = "/var/lib/ovs-mesh/wireguard/private.key"
    # the pre-shared key read from psk_file (ovs_mesh.config.secrets), never printed
    psk: str | None = dataclasses.field(default=None, repr=False)

    @property
    def rundir(self) -> str:
        if self.ovs_rundir:
            return self.ovs_rundir
        if self.ovsdb.startswith("unix:"):
            import os.path

            return os.path.dirname(self.ovsdb[len("unix:"):]) or "."
        return "/var/run/openvswitch"


@dataclasses.dataclass(frozen=True)
class Kubernetes:
    """The `kubernetes:` section: how the Kubernetes source (`source: kubernetes`) reads the Nodes."""
    kubeconfig: str | None = None        # None: in a pod the service account, else $KUBECONFIG or ~/.kube/config
    resync_seconds: float = 300          # between full relists of the Nodes
    underlay_family: str | None = None   # of the Nodes' InternalIP; None: ipv6 for an IPv6-only cluster, else ipv4


@dataclasses.dataclass(frozen=True)
class Health:
    """Per-peer probes (ovs_mesh/health): every `interval` seconds (spread by
    +-10 %) a small and a full-MTU echo to each peer's gateway, at most
    `max_probes_per_second` packets; `failures` unanswered rounds in a row make
    a peer unreachable; per-peer metric series only up to `peer_metrics_max` peers."""
    enabled: bool = True
    interval: float = 10.0
    failures: int = 3
    max_probes_per_second: int = 200
    peer_metrics_max: int = 500

    @property
    def timeout(self) -> float:
        """How long a probe's answer is waited for: half the interval, at most 2 s."""
        return min(2.0, self.interval / 2)


@dataclasses.dataclass(frozen=True)
class Config:
    cluster: Cluster
    local: Local
    nodes: tuple[Node, ...] = ()
    source: str = "file"
    kubernetes: Kubernetes = Kubernetes()
    health: Health = Health()

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

    @property
    def underlay_family(self) -> str | None:
        """The family of the nodes' underlay addresses, which the tunnels' outer
        header uses (every node has the same): the local node's, else the first
        node's; None without nodes."""
        node = self.node(self.local.node) or (self.nodes[0] if self.nodes else None)
        return node.underlay_family if node is not None else None

    def with_nodes(self, nodes) -> Config:
        return dataclasses.replace(self, nodes=tuple(sorted(nodes)))


@dataclasses.dataclass(frozen=True)
class NodeDelta:
    """What changed from one node set to another, by name."""
    added: tuple[Node, ...] = ()
    removed: tuple[Node, ...] = ()
    changed: tuple[tuple[Node, Node], ...] = ()   # (old, new)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    @property
    def names(self) -> set[str]:
        return {n.name for n in self.added + self.removed} | {new.name for _, new in self.changed}


def diff_nodes(old: Mapping[str, Node], new: Mapping[str, Node]) -> NodeDelta:
    """The one comparison of two node sets (each by name): added and changed in `new`'s
    order, removed in `old`'s.  O(nodes), but a node that is the very same object in
    both costs an identity check (sources keep the Node objects of unchanged nodes)."""
    added: list[Node] = []
    changed: list[tuple[Node, Node]] = []
    for name, n in new.items():
        o = old.get(name)
        if o is None:
            added.append(n)
        elif o is not n and o != n:
            changed.append((o, n))
    return NodeDelta(tuple(added), tuple(o for name, o in old.items() if name not in new), tuple(changed))
