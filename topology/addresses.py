"""The per-family address rules of a config: CIDRs, pod subnets and underlay addresses.

Pure: each function takes a raw YAML value and returns (value, None) or (None, reason);
`topology.config` turns reasons into `Problem`s with the field path.

IPv6 choices, following Kubernetes where it has a rule:

- **Canonical spelling only.**  An IPv6 value must be written as `ip -6` and
  Kubernetes (Go's `net.IP.String`) print it: RFC 5952, lower case, the longest
  run of zero groups as `::`.  `fd00:0:0::/56` is refused with "write it as
  fd00::/56"; host bits are reported as such, like IPv4 ("did you mean ...").
  One spelling per value keeps the file, `plan`, the flows and the Node objects
  comparable as text.
- **Ranges a pod or a tunnel cannot use** are refused for `cluster.cidr`, node
  subnets and node IPs: link-local fe80::/10 (needs an interface to mean
  anything), multicast ff00::/8, loopback ::1, unspecified ::, IPv4-mapped
  ::ffff:0:0/96 (an IPv4 address in disguise: write the IPv4 one), the other
  reserved ::/8 addresses, deprecated site-local fec0::/10, and a zone index
  (`%eth0`).  ULA fd00::/8 (fc00::/7) and global unicast ranges are accepted.
- **Sizes**: a node's IPv6 subnet is `cluster.node_prefix_ipv6` (default /64,
  at most /120), longer than the cluster range and at most 16 bits longer, as
  kube-controller-manager requires of `--node-cidr-mask-size-ipv6`.
"""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any

from .model import Address, Network

FAMILY = {4: "ipv4", 6: "ipv6"}
LABEL = {"ipv4": "IPv4", "ipv6": "IPv6"}
MAX_NODE_PREFIX6 = 120     # 256 addresses per node, like an IPv4 /24
MAX_MASK_DIFF6 = 16        # kube-controller-manager: node mask - cluster mask <= 16

# IPv6 ranges no pod subnet, cluster range or tunnel endpoint may touch, most specific first.
_V6_REFUSED = tuple((IPv6Network(net), why) for net, why in (
    ("::/128", "unspecified (::)"),
    ("::1/128", "loopback (::1)"),
    ("::ffff:0:0/96", "IPv4-mapped (::ffff:0:0/96): write the IPv4 address itself"),
    ("::/8", "reserved (::/8)"),
    ("fe80::/10", "link-local (fe80::/10)"),
    ("fec0::/10", "deprecated site-local (fec0::/10)"),
    ("ff00::/8", "multicast (ff00::/8)"),
))


def family_of(value: Address | Network) -> str:
    return FAMILY[value.version]


def _v6_spelling(raw: str, canonical: str) -> str | None:
    if raw != canonical:
        return f"not canonical: write it as {canonical} (RFC 5952, as `ip -6` prints it)"
    return None


# The same as integer ranges: a node file holds thousands of values, and ipaddress'
# overlaps/subnet_of cost about 10 microseconds each.
_V6_REFUSED_INT = tuple((int(n.network_address), int(n.broadcast_address), why) for n, why in _V6_REFUSED)


def _refused6(lo: int, hi: int) -> tuple[str, bool] | None:
    """(why, wholly inside) of the first refused range that [lo, hi] touches."""
    for a, b, why in _V6_REFUSED_INT:
        if lo <= b and a <= hi:
            return why, a <= lo and hi <= b
    return None


def v6_range_problem(net: IPv6Network) -> str | None:
    """Why an IPv6 range cannot hold pods (None when it can)."""
    lo = int(net.network_address)
    hit = _refused6(lo, lo | ((1 << (128 - net.prefixlen)) - 1))
    if hit is None:
        return None
    why, inside = hit
    return f"not usable for pods: {'' if inside else 'overlaps '}{why}"


def inside(net: Network, cidr: Network) -> bool:
    """`net` is a subnet of `cidr` (of the same family): ipaddress' subnet_of, in integers."""
    shift = net.max_prefixlen - cidr.prefixlen
    return (net.prefixlen >= cidr.prefixlen
            and int(net.network_address) >> shift == int(cidr.network_address) >> shift)


def holds(cidr: Network, ip: Address) -> bool:
    """`ip` lies in `cidr` (same family): `ip in cidr`, in integers."""
    shift = cidr.max_prefixlen - cidr.prefixlen
    return cidr.version == ip.version and int(ip) >> shift == int(cidr.network_address) >> shift


def parse_cidr(raw: Any) -> tuple[Network | None, str | None]:
    """One canonical CIDR of either family, or (None, reason)."""
    if not isinstance(raw, str):
        return None, "must be a CIDR like 10.244.0.0/16 or fd00:10:244::/56"
    try:   # straight to the family's class: ip_network would try IPv4 first and raise
        net = (IPv6Network if ":" in raw else IPv4Network)(raw, strict=False)
    except ValueError:
        return None, "not an IPv4 CIDR or IPv6 CIDR"
    if "/" not in raw:
        return None, f"not an {LABEL[family_of(net)]} CIDR: no /prefix"
    canonical = str(net)
    if net.version == 4:
        if canonical != raw:
            return None, f"not canonical: host bits set (did you mean {net}?)"
        return net, None
    if "%" in raw:
        return None, "not usable: a zone index (%...) has no place in a CIDR"
    reason = v6_range_problem(net)
    if reason is None and canonical != raw:   # the text differs: host bits, or another spelling
        if ip_address(raw.split("/")[0]) != net.network_address:
            reason = f"not canonical: host bits set (did you mean {net}?)"
        else:
            reason = _v6_spelling(raw, canonical)
    return (None, reason) if reason else (net, None)


def parse_cidr_list(raw: Any) -> tuple[list[tuple[Any, Network | None, str | None]], str | None]:
    """A value that holds one CIDR or one per family: "a", "a,b" or [a, b].

    Returns ([(raw element, network or None, reason or None)], reason for the
    whole value or None).  Two of one family is a problem of the whole value."""
    if isinstance(raw, str):
        items: list = [s.strip() for s in raw.split(",")] if "," in raw else [raw]
    elif isinstance(raw, list):
        items = list(raw)
    else:
        return [], "must be a CIDR, or one per family (a comma-separated string or a list of 2)"
    if not items:
        return [], "must hold a CIDR"
    if len(items) > 2:
        return [], "at most two CIDRs: one IPv4, one IPv6"
    out = []
    for item in items:
        net, reason = parse_cidr(item)
        out.append((item, net, reason))
    nets = [n for _, n, _ in out if n is not None]
    if len(nets) == 2 and nets[0].version == nets[1].version:
        return out, f"two {LABEL[family_of(nets[0])]} CIDRs: give at most one per family"
    return out, None


def parse_ip(raw: Any) -> tuple[Address | None, str | None]:
    """A unicast address of either family usable as a tunnel endpoint, or (None, reason)."""
    if not isinstance(raw, str):
        return None, "must be an IPv4 address or IPv6 address"
    try:
        ip = (IPv6Address if ":" in raw else IPv4Address)(raw)
    except ValueError:
        return None, "not an IPv4 address or IPv6 address"
    if ip.version == 4:
        return _v4_ip_problem(ip)
    if ip.scope_id is not None:
        return None, "not usable: a zone index (%...) ties it to one interface"
    n = int(ip)
    hit = _refused6(n, n)
    if hit is not None:
        return None, f"not usable as a tunnel endpoint: {hit[0]}"
    reason = _v6_spelling(raw, str(ip))
    return (None, reason) if reason else (ip, None)


def _v4_ip_problem(ip: IPv4Address) -> tuple[IPv4Address | None, str | None]:
    for bad, reason in (
        (ip.is_unspecified, "not unicast: unspecified"),
        (ip.is_loopback, "not unicast: loopback"),
        (ip.is_multicast, "not unicast: multicast"),
        (ip == IPv4Address("255.255.255.255"), "not unicast: broadcast"),
        (ip.is_reserved, "not unicast: reserved (240.0.0.0/4)"),
        (ip.is_link_local, "not usable: link-local"),
    ):
        if bad:
            return None, reason
    return ip, None


