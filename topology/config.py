"""Validate a decoded config document (pure: reading the file is ovs_mesh.config_file).

Every problem is collected and reported at once as ``path: value: reason`` so a
user fixes a file in one go.  Node checks (`topology.nodes`) are exposed
separately (`check_nodes`) because the Kubernetes source applies the same rules
to Node objects and skips the bad ones instead of failing; `parse_config` takes
the entries' own checks from a cache when the file source has one.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable

from .errors import InputError, Problem, show
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
from .nodes import (  # noqa: F401 (parse_network, parse_node_ip, check_subnet, NODE_NAME: this module's API)
    MISSING,
    NODE_NAME,
    Entry,
    check_entries,
    check_subnet,
    node_entry,
    parse_network,
    parse_node_ip,
)

MAX_PROBLEMS = 100  # reported of one document; the rest are counted in one last line
_MISSING = MISSING


class ConfigError(InputError):
    """Invalid config: carries every problem found (`errors` renders them as lines)."""


class _Checker:
    """Collects `Problem`s; values are quoted through `show` (short, YAML spelling).

    Past `limit` problems only `count` grows: a file of 100 000 bad entries costs
    no more to report than one of 100."""

    def __init__(self, limit: int | None = None) -> None:
        self.errors: list[Problem] = []
        self.count = 0
        self.limit = limit

    def error(self, path: str, value: Any, reason: str) -> None:
        self.count += 1
        if self.limit is None or len(self.errors) < self.limit:
            self.errors.append(Problem(path, show(value), reason))

    def problems(self) -> list[Problem]:
        """The problems kept, and one last line counting the others."""
        if self.count <= len(self.errors):
            return self.errors
        return self.errors + [Problem("...", f"{self.count - len(self.errors)} more", "not shown")]

    def mapping(self, path: str, raw: Any, allowed: Iterable[str]) -> dict:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.error(path, raw, "must be a mapping")
            return {}
        allowed = set(allowed)
        reason = f"unknown key (allowed: {', '.join(sorted(allowed))})"
        for key in raw:
            if key not in allowed:
                self.error(f"{path}.{show(key)}" if path else show(key), raw[key], reason)
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


def check_nodes(raw_nodes: list, cluster: Cluster, path: str = "nodes",
                require_subnet: bool = False, limit: int | None = None,
                entries: Callable[[int, Any], Entry] | None = None
                ) -> tuple[list[Node], list[Problem], set[int]]:
    """Validate node entries.  Returns (good nodes, problems, indexes of bad entries).

    A node that conflicts with an earlier one (duplicate name or IP, overlapping
    subnet) is the bad one; the earlier keeps its place.  `entries(i, raw)` gives
    each entry's own checks (`node_entry`) from a cache, when the caller has one.
    """
    c = _Checker(limit)
    nodes, bad = _check_nodes(c, raw_nodes, cluster, path, require_subnet, entries)
    return nodes, c.problems(), bad


def _check_nodes(c: _Checker, raw_nodes: list, cluster: Cluster, path: str, require_subnet: bool,
                 entries: Callable[[int, Any], Entry] | None = None) -> tuple[list[Node], set[int]]:
    """The node checks (topology.nodes): each entry's own, from `entries` (a cache) when given."""
    if entries is None:
        def entries(_i: int, raw: Any) -> Entry:
            return node_entry(raw, cluster, require_subnet)
    return check_entries(c.error, raw_nodes, cluster, path, entries)


CLUSTER_KEYS = ("cidr", "node_prefix", "tunnel", "mode", "vxlan_port", "mesh_degree", "mtu",
                "masquerade", "vni")
LOCAL_KEYS = ("node", "ovsdb", "datapath", "host", "underlay_bridge", "underlay_interface",
              "cni_conf", "metrics", "ovs_rundir", "ssl_key", "ssl_cert", "ssl_ca")
TOP_KEYS = ("cluster", "source", "nodes", "local", "kubernetes")


def local_key_problems(data: dict, where: str) -> list[Problem]:
    """Unknown keys of a mapping of local settings (a `--local` file; `where` names it)."""
    c = _Checker(MAX_PROBLEMS)
    reason = f"unknown key (allowed: {', '.join(LOCAL_KEYS)})"
    for k in data:
        if k not in LOCAL_KEYS:
            c.error(where, f"local.{show(k)}", reason)
    return c.problems()


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


def host_port_problem(value: str) -> str | None:
    """Why `value` is not HOST:PORT with a port in 1-65535 (None when it is)."""
    m = re.fullmatch(r"[^:]*:(\d{1,5})", value)
    if not m:
        return "must be HOST:PORT"
    if not 1 <= int(m.group(1)) <= 65535:
        return "port must be between 1 and 65535"
    return None


def _parse_local(c: _Checker, raw: Any, overrides: dict, default_node: str) -> Local:
    m = c.mapping("local", raw, LOCAL_KEYS)
    m.update({k: v for k, v in overrides.items() if v is not None})
    d = Local(node="")
    node = c.string("local.node", m.get("node", _MISSING), None)
    if node is not None and not NODE_NAME.match(node):  # a node name, as in `nodes` and Kubernetes
        c.error("local.node", node, "must be a DNS name (lower case letters, digits, '-', '.')")
    node = node or default_node
    ovsdb = c.string("local.ovsdb", m.get("ovsdb", _MISSING), d.ovsdb)
    remote = re.fullmatch(r"unix:.+|(?:tcp|ssl):[^:]+:(\d+)", ovsdb, re.S)
    if not remote:
        c.error("local.ovsdb", ovsdb, "must be unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT")
    elif remote.group(1) is not None and (len(remote.group(1)) > 5 or not 1 <= int(remote.group(1)) <= 65535):
        c.error("local.ovsdb", ovsdb, "port must be between 1 and 65535")
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
    if metrics and host_port_problem(metrics):
        c.error("local.metrics", metrics, host_port_problem(metrics))
    return Local(node=node, ovsdb=ovsdb, datapath=datapath, host=host, **strings)


def _parse_kubernetes(c: _Checker, raw: Any) -> dict:
    kube = c.mapping("kubernetes", raw, ("kubeconfig", "resync_seconds"))
    resync = kube.get("resync_seconds", _MISSING)
    if resync is not _MISSING and (isinstance(resync, bool) or not isinstance(resync, (int, float))
                                   or not 1 <= resync <= 86400):
        c.error("kubernetes.resync_seconds", resync, "must be a number of seconds between 1 and 86400")
    c.string("kubernetes.kubeconfig", kube.get("kubeconfig", _MISSING), None)
    return kube




def _name(node: Node) -> str:
    return node.name


def parse_config(data: Any, overrides: dict | None = None, require_local: bool = True,
                 default_node: str = "", entries: Callable[[int, Any, Cluster], Entry] | None = None) -> Config:
    """Validate a decoded YAML document; raise ConfigError with every problem.

    `local.node` defaults to `default_node` (the caller passes the hostname:
    this package does no I/O).  At most MAX_PROBLEMS problems are listed."""
    c = _Checker(MAX_PROBLEMS)
    top = c.mapping("", data, TOP_KEYS)
    if data is not None and not isinstance(data, dict):
        raise ConfigError(c.problems())
    cluster = _parse_cluster(c, top.get("cluster"))
    source = c.choice("source", top.get("source", _MISSING), SOURCES, "file")
    local = _parse_local(c, top.get("local"), overrides or {}, default_node)
    kube = _parse_kubernetes(c, top.get("kubernetes"))
    raw_nodes = top.get("nodes") or []
    if not isinstance(raw_nodes, list):
        c.error("nodes", raw_nodes, "must be a list")
        raw_nodes = []
    if source == "kubernetes" and raw_nodes:
        c.error("nodes", f"{len(raw_nodes)} nodes", "not used with source: kubernetes")
    nodes, _ = _check_nodes(c, raw_nodes, cluster, "nodes", False,
                            None if entries is None else lambda i, raw: entries(i, raw, cluster))
    if require_local and not local.node and not c.count:
        c.error("local.node", None, "required (set local.node or --node)")
    elif require_local and source == "file" and not c.count and local.node not in {n.name for n in nodes}:
        c.error("local.node", local.node, "not in nodes (set local.node or --node)")
    if c.count:
        raise ConfigError(c.problems())
    # Names are unique in a valid config, so the name order is the order of the Nodes.
    return Config(cluster=cluster, local=local, nodes=tuple(sorted(nodes, key=_name)), source=source,
                  kubernetes=dict(kube) or None)
