"""WireGuard between nodes, the pure part: addresses, keys, the desired device (no I/O here).

Each node's WireGuard device carries one IPv4 address of cluster.wireguard_cidr derived from its
node identity: the number of its pod subnet in the pod range (node 10.244.7.0/24 of
10.244.0.0/16 is number 7 and gets 100.64.0.8).  Subnets are unique, so addresses are, and they
do not move unless the subnet does.  The tunnels (any type, any mode) run between these addresses,
so every tunnel packet rides inside WireGuard; the WireGuard peers' endpoints are the underlay
addresses.  A peer is accepted only for its own address (allowed-ips = its /32) and only with the
public key the inventory gives for it.

Keys: each node's private key is made on the node (32 random bytes, clamped as X25519 wants) and
never leaves it; its public key is derived here (RFC 7748) so that `ovs-mesh wireguard-key` can
print it before any device exists.
"""
from __future__ import annotations

import base64
import dataclasses
from ipaddress import IPv4Address

from topology.model import Cluster, Node

DEVICE = "ovsm-wg0"

_P = 2**255 - 19
_A24 = 121665


def clamp(raw: bytes) -> bytes:
    """A Curve25519 private key from 32 random bytes (RFC 7748 section 5)."""
    assert len(raw) == 32
    b = bytearray(raw)
    b[0] &= 248
    b[31] &= 127
    b[31] |= 64
    return bytes(b)


def x25519(scalar: bytes, u: bytes) -> bytes:
    """RFC 7748's X25519 function (the Montgomery ladder, constant in its steps, not in time:
    it runs once per key on the node that owns it)."""
    k = int.from_bytes(clamp(scalar), "little")
    x1 = int.from_bytes(u, "little") & ((1 << 255) - 1)
    x2, z2, x3, z3, swap = 1, 0, x1, 1, 0
    for t in reversed(range(255)):
        bit = (k >> t) & 1
        swap ^= bit
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a, b = (x2 + z2) % _P, (x2 - z2) % _P
        aa, bb = a * a % _P, b * b % _P
        e = (aa - bb) % _P
        c, d = (x3 + z3) % _P, (x3 - z3) % _P
        da, cb = d * a % _P, c * b % _P
        x3 = (da + cb) ** 2 % _P
        z3 = x1 * (da - cb) ** 2 % _P
        x2 = aa * bb % _P
        z2 = e * (aa + _A24 * e) % _P
    if swap:
        x2, z2 = x3, z3
    return (x2 * pow(z2, _P - 2, _P) % _P).to_bytes(32, "little")


def public_key(private_b64: str) -> str:
    """The base64 public key of a base64 private key (what `wg pubkey` prints)."""
    return base64.b64encode(x25519(base64.b64decode(private_b64), (9).to_bytes(32, "little"))).decode()


def new_private_key(random32: bytes) -> str:
    return base64.b64encode(clamp(random32)).decode()


def address(cluster: Cluster, node: Node) -> IPv4Address | None:
    """The node's address on its WireGuard device (None without a pod subnet)."""
    if cluster.cidr is not None and node.subnet is not None:
        index = (int(node.subnet.network_address) - int(cluster.cidr.network_address)) >> (32 - cluster.node_prefix)
    elif cluster.cidr6 is not None and node.subnet6 is not None:
        index = ((int(node.subnet6.network_address) - int(cluster.cidr6.network_address))
                 >> (128 - cluster.node_prefix6))
    else:
        return None
    return cluster.wireguard_cidr.network_address + index + 1


@dataclasses.dataclass(frozen=True, order=True)
class WgPeer:
    """One WireGuard peer as the device holds it: key, underlay endpoint, its one allowed address."""
    public_key: str
    endpoint: str          # "ip:port" (IPv6: "[ip]:port")
    allowed_ip: str        # "100.64.0.3/32"


def endpoint(node: Node, port: int) -> str:
    return f"[{node.ip}]:{port}" if node.ip.version == 6 else f"{node.ip}:{port}"


def peers(cluster: Cluster, nodes: list[Node]) -> tuple[WgPeer, ...]:
    """The device's peers: every given node that has a public key and an address."""
    out = []
    for n in nodes:
        addr = address(cluster, n)
        if n.wireguard_key and addr is not None:
            out.append(WgPeer(n.wireguard_key, endpoint(n, cluster.wireguard_port), f"{addr}/32"))
    return tuple(sorted(out))
