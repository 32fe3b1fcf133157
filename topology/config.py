"""Parse and validate the YAML config (DESIGN.md section 5).

Every problem is collected and reported at once as ``path: value: reason`` so a
user fixes a file in one go.  Node checks are exposed separately
(`check_nodes`) because the Kubernetes source applies the same rules to Node
objects and skips the bad ones instead of failing.
"""
from __future__ import annotations

import io
import re
import socket
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from typing import Any, Iterable

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError as RoundTripError

from .errors import InputError
from .model import (
    DATAPATHS,
    MAX_VNI,
    MIN_POD_MTU,
    MODES,
    OVERHEAD,
    SOURCES,
    TUNNELS,
    Cluster,
    Config,
    Local,
    Node,
)

NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_MISSING = object()


class ConfigError(InputError):
    """Invalid config: carries every problem found (`errors` renders them as lines)."""


def _yaml() -> YAML:
    """Round-trip YAML (keeps comments): only for writing a user's file back."""
    y = YAML(typ="rt")
    y.allow_duplicate_keys = False
    return y


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """libyaml-backed safe loader (fast at thousands of nodes) that rejects duplicate keys."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            # Keys are plain scalars in any sane config: compare their text, which
            # costs nothing; anything else is constructed to compare.
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(
                self.construct_object(key_node, deep=True))
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_mapping)


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _Checker:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, path: str, value: Any, reason: str) -> None:
        self.errors.append(f"{path}: {_show(value)}: {reason}")

    def mapping(self, path: str, raw: Any, allowed: Iterable[str]) -> dict:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.error(path, raw, "must be a mapping")
            return {}
        allowed = set(allowed)
        for key in raw:
            if key not in allowed:
                self.error(f"{path}.{key}" if path else str(key), raw[key],
                           f"unknown key (allowed: {', '.join(sorted(allowed))})")
        return dict(raw)

    def choice(self, path: str, raw: Any, choices: Iterable[str], default: str) -> str:
        if raw is _MISSING:
            return default
        if raw not in choices:
            self.error(path, raw, f"must be one of {', '.join(choices)}")
            return default
        return raw

    def integer(self, path: str, raw: Any, default: int, lo: int, hi: int) -> int:
        if raw is _MISSING:
            return default
        if isinstance(raw, bool) or not isinstance(raw, int):
            self.error(path, raw, "must be an integer")
            return default
        if not lo <= raw <= hi:
            self.error(path, raw, f"must be between {lo} and {hi}")
            return default
        return raw

    def boolean(self, path: str, raw: Any, default: bool) -> bool:
        if raw is _MISSING:
            return default
        if not isinstance(raw, bool):
            self.error(path, raw, "must be true or false")
            return default
        return raw

    def string(self, path: str, raw: Any, default: str | None) -> str | None:
        if raw is _MISSING:
            return default
        if not isinstance(raw, str) or not raw:
            self.error(path, raw, "must be a non-empty string")
            return default
        return raw


def parse_network(raw: Any) -> tuple[IPv4Network | None, str | None]:
    """A canonical IPv4 CIDR, or (None, reason)."""
    if not isinstance(raw, str):
        return None, "must be an IPv4 CIDR like 10.244.0.0/16"
    try:
        net = ip_network(raw, strict=False)
    except ValueError:
        return None, "not an IPv4 CIDR"
    if net.version != 4 or "/" not in raw:
        return None, "not an IPv4 CIDR"
    if str(net) != raw:
        return None, f"not canonical: host bits set (did you mean {net}?)"
    return net, None


def parse_node_ip(raw: Any, cluster: Cluster | None) -> tuple[IPv4Address | None, str | None]:
    """A unicast IPv4 address usable as a tunnel endpoint, or (None, reason)."""
    if not isinstance(raw, str):
        return None, "must be an IPv4 address"
    try:
        ip = ip_address(raw)
    except ValueError:
        return None, "not an IPv4 address"
    if ip.version != 4:
        return None, "not an IPv4 address"
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
    if cluster is not None and ip in cluster.cidr:
        return None, f"inside cluster.cidr {cluster.cidr}: node IPs must be outside the pod range"
    return ip, None


def check_subnet(subnet: IPv4Network, cluster: Cluster) -> str | None:
    if not subnet.subnet_of(cluster.cidr):
        return f"outside cluster.cidr {cluster.cidr}"
    if subnet.prefixlen != cluster.node_prefix:
        return f"wrong size: cluster.node_prefix is /{cluster.node_prefix}"
    return None


def check_nodes(raw_nodes: list, cluster: Cluster, path: str = "nodes",
                require_subnet: bool = False) -> tuple[list[Node], list[str], set[int]]:
    """Validate node entries.  Returns (good nodes, errors, indexes of bad entries).

    A node that conflicts with an earlier one (duplicate name or IP, overlapping
    subnet) is the bad one; the earlier keeps its place.
    """
    c = _Checker()
    nodes: list[Node] = []
    bad: set[int] = set()
    names: dict[str, int] = {}
    ips: dict[IPv4Address, int] = {}
    # Valid subnets all have cluster.node_prefix and lie in the cluster range,
    # so two of them overlap exactly when they are equal: a dict finds it.
    subnets: dict[IPv4Network, int] = {}
    for i, raw in enumerate(raw_nodes):
        p = f"{path}[{i}]"
        before = len(c.errors)
        entry = c.mapping(p, raw, ("name", "ip", "subnet"))
        if not isinstance(raw, dict):
            bad.add(i)
            continue
        name = entry.get("name", _MISSING)
        if name is _MISSING:
            c.error(f"{p}.name", None, "required")
        elif not isinstance(name, str) or not NODE_NAME.match(name):
            c.error(f"{p}.name", name, "must be a DNS name (lower case letters, digits, '-', '.')")
        elif name in names:
            c.error(f"{p}.name", name, f"duplicate of {path}[{names[name]}].name")
        ip_raw = entry.get("ip", _MISSING)
        ip = None
        if ip_raw is _MISSING:
            c.error(f"{p}.ip", None, "required")
        else:
            ip, reason = parse_node_ip(ip_raw, cluster)
            if reason:
                c.error(f"{p}.ip", ip_raw, reason)
            elif ip in ips:
                c.error(f"{p}.ip", ip_raw, f"duplicate of {path}[{ips[ip]}].ip")
        subnet = None
        sub_raw = entry.get("subnet", _MISSING)
        if sub_raw in (_MISSING, None):
            if require_subnet:
                c.error(f"{p}.subnet", None, "required (run `ovs-mesh allocate` to assign one)")
        else:
            subnet, reason = parse_network(sub_raw)
            reason = reason or check_subnet(subnet, cluster)
            if reason:
                c.error(f"{p}.subnet", sub_raw, reason)
                subnet = None
            elif subnet in subnets:
                j = subnets[subnet]
                c.error(f"{p}.subnet", sub_raw, f"overlaps {path}[{j}].subnet {subnet}")
        if len(c.errors) > before:
            bad.add(i)
            continue
        names[name] = i
        ips[ip] = i
        if subnet is not None:
            subnets[subnet] = i
        nodes.append(Node(name=name, ip=ip, subnet=subnet))
    capacity = 2 ** (cluster.node_prefix - cluster.cidr.prefixlen)
    if len(raw_nodes) > capacity:
        c.error(path, f"{len(raw_nodes)} nodes",
                f"more than cluster.cidr {cluster.cidr} holds at /{cluster.node_prefix} ({capacity})")
    return nodes, c.errors, bad


CLUSTER_KEYS = ("cidr", "node_prefix", "tunnel", "mode", "vxlan_port", "mesh_degree", "mtu",
                "masquerade", "vni")
LOCAL_KEYS = ("node", "ovsdb", "datapath", "host", "underlay_bridge", "underlay_interface",
              "cni_conf", "metrics", "ovs_rundir", "ssl_key", "ssl_cert", "ssl_ca")
TOP_KEYS = ("cluster", "source", "nodes", "local", "kubernetes")


def _parse_cluster(c: _Checker, raw: Any) -> Cluster:
    m = c.mapping("cluster", raw, CLUSTER_KEYS)
    d = Cluster()
    cidr = d.cidr
    if "cidr" in m:
        net, reason = parse_network(m["cidr"])
        if reason:
            c.error("cluster.cidr", m["cidr"], reason)
        elif net.prefixlen > 28:
            c.error("cluster.cidr", m["cidr"], "too small for a pod range (at most /28)")
        else:
            cidr = net
    node_prefix = c.integer("cluster.node_prefix", m.get("node_prefix", _MISSING), d.node_prefix, 8, 30)
    if node_prefix <= cidr.prefixlen:
        c.error("cluster.node_prefix", node_prefix, f"must be longer than cluster.cidr's /{cidr.prefixlen}")
        node_prefix = min(30, max(cidr.prefixlen + 1, d.node_prefix))
    tunnel = c.choice("cluster.tunnel", m.get("tunnel", _MISSING), TUNNELS, d.tunnel)
    mode = c.choice("cluster.mode", m.get("mode", _MISSING), MODES, d.mode)
    vxlan_port = c.integer("cluster.vxlan_port", m.get("vxlan_port", _MISSING), d.vxlan_port, 1, 65535)
    mesh_degree = c.integer("cluster.mesh_degree", m.get("mesh_degree", _MISSING), 0, 0, 1 << 16)
    if mesh_degree and mode != "stp":
        c.error("cluster.mesh_degree", mesh_degree, f"only used in stp mode (cluster.mode is {mode})")
    mtu = None
    raw_mtu = m.get("mtu", "auto")
    if raw_mtu != "auto":
        overhead = OVERHEAD[tunnel]
        if isinstance(raw_mtu, bool) or not isinstance(raw_mtu, int):
            c.error("cluster.mtu", raw_mtu, "must be auto or an integer (the pod MTU)")
        elif raw_mtu < MIN_POD_MTU:
            c.error("cluster.mtu", raw_mtu,
                    f"too small: pods need at least {MIN_POD_MTU}, and {tunnel} adds {overhead} bytes on top")
        elif raw_mtu + overhead > 65535:
            c.error("cluster.mtu", raw_mtu, f"too large: with {tunnel}'s {overhead} bytes it exceeds 65535")
        else:
            mtu = raw_mtu
    masquerade = c.boolean("cluster.masquerade", m.get("masquerade", _MISSING), d.masquerade)
    vni = c.integer("cluster.vni", m.get("vni", _MISSING), d.vni, 0, MAX_VNI)
    return Cluster(cidr=cidr, node_prefix=node_prefix, tunnel=tunnel, mode=mode,
                   vxlan_port=vxlan_port, mesh_degree=mesh_degree, mtu=mtu, masquerade=masquerade, vni=vni)


def _parse_local(c: _Checker, raw: Any, overrides: dict) -> Local:
    m = c.mapping("local", raw, LOCAL_KEYS)
    m.update({k: v for k, v in overrides.items() if v is not None})
    d = Local(node="")
    node = c.string("local.node", m.get("node", _MISSING), None) or socket.gethostname()
    ovsdb = c.string("local.ovsdb", m.get("ovsdb", _MISSING), d.ovsdb)
    if not re.match(r"^(unix:.+|tcp:[^:]+:\d+|ssl:[^:]+:\d+)$", ovsdb):
        c.error("local.ovsdb", ovsdb, "must be unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT")
    datapath = c.choice("local.datapath", m.get("datapath", _MISSING), DATAPATHS, d.datapath)
    host = c.boolean("local.host", m.get("host", _MISSING), d.host)
    strings = {k: c.string(f"local.{k}", m.get(k, _MISSING), getattr(d, k))
               for k in ("underlay_bridge", "underlay_interface", "cni_conf", "metrics", "ovs_rundir",
                         "ssl_key", "ssl_cert", "ssl_ca")}
    if strings["underlay_interface"] and datapath != "netdev":
        c.error("local.underlay_interface", strings["underlay_interface"],
                f"only used with local.datapath netdev (it is {datapath})")
    if strings["underlay_interface"] and not strings["underlay_bridge"]:
        c.error("local.underlay_bridge", None, "required with local.underlay_interface")
    for k in ("underlay_bridge", "underlay_interface"):
        v = strings[k]
        if v and len(v.encode()) > 15:
            c.error(f"local.{k}", v, "interface names are at most 15 bytes")
    metrics = strings["metrics"]
    if metrics and not re.match(r"^[^:]*:\d{1,5}$", metrics):
        c.error("local.metrics", metrics, "must be HOST:PORT")
    return Local(node=node, ovsdb=ovsdb, datapath=datapath, host=host, **strings)


def parse_config(data: Any, overrides: dict | None = None, require_local: bool = True) -> Config:
    """Validate a decoded YAML document; raise ConfigError with every problem."""
    c = _Checker()
    top = c.mapping("", data, TOP_KEYS)
    if data is not None and not isinstance(data, dict):
        raise ConfigError(c.errors)
    cluster = _parse_cluster(c, top.get("cluster"))
    source = c.choice("source", top.get("source", _MISSING), SOURCES, "file")
    local = _parse_local(c, top.get("local"), overrides or {})
    kube = c.mapping("kubernetes", top.get("kubernetes"), ("kubeconfig", "resync_seconds"))
    raw_nodes = top.get("nodes") or []
    if not isinstance(raw_nodes, list):
        c.error("nodes", raw_nodes, "must be a list")
        raw_nodes = []
    if source == "kubernetes" and raw_nodes:
        c.error("nodes", f"{len(raw_nodes)} nodes", "not used with source: kubernetes")
    nodes, errors, _ = check_nodes(raw_nodes, cluster)
    c.errors.extend(errors)
    if require_local and source == "file" and not c.errors and local.node not in {n.name for n in nodes}:
        c.error("local.node", local.node, "not in nodes (set local.node or --node)")
    if c.errors:
        raise ConfigError(c.errors)
    return Config(cluster=cluster, local=local, nodes=tuple(sorted(nodes)), source=source,
                  kubernetes=dict(kube) or None)


def load_yaml(text: str, path: str = "config", round_trip: bool = False) -> Any:
    try:
        if round_trip:
            return _yaml().load(io.StringIO(text))
        return yaml.load(text, Loader=_Loader)
    except (yaml.YAMLError, RoundTripError) as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError([f"{path}: {where}: malformed YAML: {problem}"]) from None


def load_config(path: str, overrides: dict | None = None, require_local: bool = True) -> Config:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError([f"--config: {path}: {e.strerror}"]) from None
    return parse_config(load_yaml(text, path), overrides, require_local)
