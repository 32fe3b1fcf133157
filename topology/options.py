"""Every key of the config file, once: its type, default, allowed values and help (pure).

`topology.config` takes from this table the keys each section accepts, the
choices and the ranges it checks; the defaults are the fields of the model's
dataclasses (`Cluster`, `Local`, `Kubernetes`), read here, so a default is written once.
`tools/gen_reference.py` writes docs/reference/config.md from it, and the
unit tests check that the shipped example configs name every key.

A key is written as its path in the file: `cluster.cidr`, `nodes[].ip`.  An
option whose value is derived when it is absent (`local.node`: the hostname)
has `default` NO_DEFAULT and says what happens in `derived`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from .addresses import MAX_NODE_PREFIX6
from .model import (
    DATAPATHS,
    ENCRYPTIONS,
    FAMILIES,
    IPSEC_AUTHS,
    MAX_VNI,
    MODES,
    SOURCES,
    TUNNELS,
    Cluster,
    Health,
    Kubernetes,
    Local,
)

NO_DEFAULT = None


@dataclasses.dataclass(frozen=True)
class Option:
    key: str                              # path in the file: "cluster.vni", "nodes[].name"
    type: str                             # as a user reads it: "integer", "one of", "string", ...
    help: str                             # one line
    default: Any = NO_DEFAULT             # the value when the key is absent (NO_DEFAULT: none, or `derived`)
    choices: tuple[str, ...] = ()
    range: tuple[float, float] | None = None   # inclusive
    derived: str = ""                     # what an absent key means when there is no fixed default
    required: bool = False

    @property
    def section(self) -> str:
        return self.key.rpartition(".")[0]

    @property
    def name(self) -> str:
        return self.key.rpartition(".")[2]


def _default(cls: type, field: str) -> Any:
    f = next(f for f in dataclasses.fields(cls) if f.name == field)
    return f.default


_C, _L, _H = Cluster, Local, Health
PORT = (1, 65535)

OPTIONS: tuple[Option, ...] = (
    Option("cluster.cidr", "CIDR, or one per family (\"a,b\" or a list)",
           "The pod range: one CIDR per address family, as Kubernetes' --cluster-cidr; an IPv4 range is at most /28",
           default=str(_default(_C, "cidr"))),
    Option("cluster.node_prefix", "integer", "Prefix length of each node's IPv4 pod subnet",
           default=_default(_C, "node_prefix"), range=(8, 30)),
    Option("cluster.node_prefix_ipv6", "integer",
           "Prefix length of each node's IPv6 pod subnet: longer than the IPv6 range, at most 16 bits longer",
           default=_default(_C, "node_prefix6"), range=(8, MAX_NODE_PREFIX6)),
    Option("cluster.tunnel", "one of", "The tunnel protocol between nodes",
           default=_default(_C, "tunnel"), choices=TUNNELS),
    Option("cluster.mode", "one of",
           "How peers are reached: one tunnel port and a flow per peer (flow), a port per peer (port), "
           "or ports with spanning tree (stp)", default=_default(_C, "mode"), choices=MODES),
    Option("cluster.vxlan_port", "integer", "UDP port of the VXLAN tunnels",
           default=_default(_C, "vxlan_port"), range=PORT),
    Option("cluster.mesh_degree", "integer",
           "stp mode only: peers per node; 0 is a full mesh, 1 is refused (the mesh would split into pairs)",
           default=_default(_C, "mesh_degree"), range=(0, 1 << 16)),
    Option("cluster.mtu", "auto or integer",
           "The pod MTU; auto is the underlay MTU minus the tunnel overhead. At least 576 (1280 with an IPv6 "
           "range), at most 65535 with the overhead", default="auto"),
    Option("cluster.masquerade", "boolean", "Masquerade pod traffic that leaves the cluster range",
           default=_default(_C, "masquerade")),
    Option("cluster.vni", "integer",
           "The tunnel key (VXLAN/Geneve VNI, GRE key): one per cluster sharing an underlay",
           default=_default(_C, "vni"), range=(0, MAX_VNI)),
    Option("cluster.encryption", "one of",
           "Encrypt and authenticate the tunnels between nodes: none, Open vSwitch's IPsec (ipsec), or a "
           "WireGuard device the tunnels ride in (wireguard). Kernel datapath only (local.datapath system)",
           default=_default(_C, "encryption"), choices=ENCRYPTIONS),
    Option("cluster.ipsec_auth", "one of",
           "encryption ipsec: CA-signed certificates (local.certificate, private_key, ca_cert; a peer is "
           "accepted with its node name as the certificate's CN), or a pre-shared key (psk: opt-in, "
           "from local.psk_file)", default=_default(_C, "ipsec_auth"), choices=IPSEC_AUTHS),
    Option("cluster.ipsec_sa_lifetime", "integer",
           "encryption ipsec: seconds an ESP SA lives; strongSwan replaces it (make-before-break) within the last "
           "two thirds of its life, the IKE SA after three times as long. 0: strongSwan's defaults (1 h, IKE 3 h); "
           "otherwise at least 60", default=_default(_C, "ipsec_sa_lifetime"), range=(0, 86400)),
    Option("cluster.wireguard_port", "integer", "encryption wireguard: the UDP port of the WireGuard devices",
           default=_default(_C, "wireguard_port"), range=PORT),
    Option("cluster.wireguard_cidr", "IPv4 CIDR",
           "encryption wireguard: the nodes' addresses on their WireGuard devices (the tunnels' endpoints): "
           "node k of the pod range gets address k+1; outside every pod range and the underlay",
           default=str(_default(_C, "wireguard_cidr"))),
    Option("source", "one of", "Where the node inventory comes from: the nodes list, or Kubernetes Node objects",
           default="file", choices=SOURCES),
    Option("nodes", "list", "source: file only: every node of the mesh, this one included", default=[]),
    Option("nodes[].name", "DNS name", "The node's name (Kubernetes' Node name)", required=True),
    Option("nodes[].ip", "IP address",
           "The node's underlay address, the tunnels' endpoint; every node has the same family, "
           "outside the pod ranges", required=True),
    Option("nodes[].subnet", "CIDR, or one per family (\"a,b\" or a list)",
           "The node's pod subnet of each cluster family, inside cluster.cidr",
           derived="none yet: `ovs-mesh allocate` assigns the lowest free one"),
    Option("nodes[].wireguard_public_key", "base64 key",
           "encryption wireguard: the node's WireGuard public key (`ovs-mesh wireguard-key` on the node prints it)",
           derived="none: the node is left out of the WireGuard mesh until it has one"),
    Option("kubernetes.kubeconfig", "string (path)", "source: kubernetes: the kubeconfig to reach the API server",
           derived="in a pod the service account, else $KUBECONFIG or ~/.kube/config"),
    Option("kubernetes.resync_seconds", "number", "source: kubernetes: seconds between full relists of the Nodes",
           default=_default(Kubernetes, "resync_seconds"), range=(1, 86400)),
    Option("kubernetes.underlay_family", "one of",
           "source: kubernetes: the family of the Nodes' InternalIP that the tunnels use",
           choices=FAMILIES, derived="ipv6 for an IPv6-only cluster, else ipv4"),
    Option("health.enabled", "boolean", "Probe every peer through the overlay (status and metrics show the result)",
           default=_default(_H, "enabled")),
    Option("health.interval", "number", "Seconds between two probe rounds to one peer (spread by +-10 %)",
           default=_default(_H, "interval"), range=(0.2, 3600)),
    Option("health.failures", "integer", "Unanswered rounds in a row after which a peer is unreachable",
           default=_default(_H, "failures"), range=(1, 100)),
    Option("health.max_probes_per_second", "integer",
           "At most this many probe packets per second from this node (2 per peer and family per round); "
           "with many peers the rounds are spaced out to stay under it",
           default=_default(_H, "max_probes_per_second"), range=(1, 100000)),
    Option("health.peer_metrics_max", "integer",
           "Per-peer health metric series only while the peers are at most this many (0: never)",
           default=_default(_H, "peer_metrics_max"), range=(0, 1000000)),
    Option("local.node", "DNS name", "This node's name (--node overrides it)", derived="the hostname"),
    Option("local.ovsdb", "OVSDB remote", "OVSDB remote: unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT "
           "(--ovsdb overrides it)", default=_default(_L, "ovsdb")),
    Option("local.datapath", "one of", "The OVS datapath type of the bridges",
           default=_default(_L, "datapath"), choices=DATAPATHS),
    Option("local.host", "boolean",
           "Manage the host side (kbr0, routes, sysctls, nftables, CNI file); false: OVS only",
           default=_default(_L, "host")),
    Option("local.pod_guard", "boolean",
           "The per-pod source guard: each pod sends only with its own MAC and addresses (its nftables table, "
           "and the CNI plugin ovs-mesh-guard in the conflist, which the runtime must find)",
           default=_default(_L, "pod_guard")),
    Option("local.underlay_bridge", "string", "netdev datapath: the OVS bridge that carries the node IP "
           "(at most 15 bytes)"),
    Option("local.underlay_interface", "string", "netdev datapath: the uplink moved onto underlay_bridge "
           "(at most 15 bytes)"),
    Option("local.cni_conf", "string (path)", "Where the CNI network config is written",
           default=_default(_L, "cni_conf")),
    Option("local.metrics", "HOST:PORT", "Where the agent serves /metrics and /healthz (agent --metrics "
           "overrides it)", default=_default(_L, "metrics")),
    Option("local.ovs_rundir", "string (path)", "OVS run directory (bridge .mgmt sockets, ovs-vswitchd pidfile)",
           derived="the directory of a unix: ovsdb remote, else /var/run/openvswitch"),
    Option("local.certificate", "string (path)",
           "encryption ipsec, ipsec_auth certificate: this node's certificate (X.509, CN and a DNS "
           "subjectAltName = the node name), signed by local.ca_cert"),
    Option("local.private_key", "string (path)",
           "encryption ipsec, ipsec_auth certificate: the certificate's private key (owned by root, mode 0600)"),
    Option("local.ca_cert", "string (path)",
           "encryption ipsec, ipsec_auth certificate: the CA certificate every node's certificate is checked against"),
    Option("local.psk_file", "string (path)",
           "encryption ipsec, ipsec_auth psk: the file holding the cluster's pre-shared key, one line "
           "(owned by root, mode 0600; never written in the config itself)"),
    Option("local.wireguard_key", "string (path)",
           "encryption wireguard: this node's private key, generated there on first use (mode 0600) and kept",
           default=_default(_L, "wireguard_key")),
    Option("local.ssl_key", "string (path)", "ssl: ovsdb remotes: the client's private key",
           default=_default(_L, "ssl_key")),
    Option("local.ssl_cert", "string (path)", "ssl: ovsdb remotes: the client's certificate",
           default=_default(_L, "ssl_cert")),
    Option("local.ssl_ca", "string (path)", "ssl: ovsdb remotes: the CA certificate the server is checked against",
           default=_default(_L, "ssl_ca")),
)

BY_KEY = {o.key: o for o in OPTIONS}


def option(key: str) -> Option:
    return BY_KEY[key]


def keys_of(section: str) -> tuple[str, ...]:
    """The keys a section accepts, in table order ("" is the top level)."""
    out: list[str] = []
    for o in OPTIONS:
        if section == "":
            top = o.key.split(".")[0].removesuffix("[]")
            if top not in out:
                out.append(top)
        elif o.section == section:
            out.append(o.name)
    return tuple(out)


def bounds(key: str) -> tuple[Any, Any]:
    """(lowest, highest) allowed value of a ranged option."""
    r = BY_KEY[key].range
    assert r is not None, key
    return r
