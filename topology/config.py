"""Validate a decoded config document (pure: reading the file is ovs_mesh.config.file).

Every problem is collected and reported at once as ``path: value: reason`` so a
user fixes a file in one go.  Node checks (`topology.nodes.check_nodes`, also
importable from here) are separate because the Kubernetes source applies the
same rules to Node objects and skips the bad ones instead of failing; the
per-family address rules (IPv4 and IPv6) are in `topology.addresses`;
`parse_config` takes the entries' own checks from a cache when the file source
has one (`entries`, see `topology.nodes.node_entry`).

`cluster.cidr` is one CIDR or one per family (Kubernetes' `--cluster-cidr`:
"10.244.0.0/16,fd00:10:244::/56" or a list); `node_prefix` sizes the IPv4 node
subnets, `node_prefix_ipv6` (default 64) the IPv6 ones.  A prefix of a family
the cluster lacks is accepted and unused (generators write both).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .addresses import MAX_MASK_DIFF6, MAX_NODE_PREFIX6, family_of, parse_cidr_list
from .checker import MAX_PROBLEMS, MISSING, NODE_NAME, Checker, ConfigError  # ConfigError: API
from .errors import Problem, show
from .model import MIN_POD_MTU, OVERHEAD, Cluster, Config, Health, Kubernetes, Local, Node
from .nodes import Entry, check_node_list, check_nodes  # noqa: F401  (check_nodes: the sources' entry point)
from .options import bounds, keys_of, option

MIN_POD_MTU6 = 1280  # IPv6's minimum link MTU (RFC 8200)

# The keys, choices, ranges and help of every option: topology.options.
CLUSTER_KEYS = keys_of("cluster")
LOCAL_KEYS = keys_of("local")
KUBERNETES_KEYS = keys_of("kubernetes")
HEALTH_KEYS = keys_of("health")
TOP_KEYS = keys_of("")


def local_key_problems(data: dict, where: str) -> list[Problem]:
    """Unknown keys of a mapping of local settings (a `--local` file; `where` names it)."""
    c = Checker(MAX_PROBLEMS)
    reason = f"unknown key (allowed: {', '.join(LOCAL_KEYS)})"
    for k in data:
        if k not in LOCAL_KEYS:
            c.error(where, f"local.{show(k)}", reason)
    return c.problems()


def _parse_cidrs(c: Checker, m: dict) -> tuple:
    """cluster.cidr: one CIDR or one per family -> (IPv4 range or None, IPv6 range or None)."""
    d = Cluster()
    if "cidr" not in m:
        return d.cidr, d.cidr6
    items, whole = parse_cidr_list(m["cidr"])
    if whole:
        c.error("cluster.cidr", m["cidr"], whole)
        return d.cidr, d.cidr6
    got = {}
    for item, net, reason in items:
        if reason is None and net.version == 4 and net.prefixlen > 28:
            reason = "too small for a pod range (at most /28)"
        if reason:
            c.error("cluster.cidr", item, reason)
        else:
            got[family_of(net)] = net
    if not got:
        return d.cidr, d.cidr6
    return got.get("ipv4"), got.get("ipv6")


def _node_prefix6(c: Checker, m: dict, cidr6) -> int:
    """cluster.node_prefix_ipv6, checked against the IPv6 range as kube-controller-manager does."""
    default = Cluster().node_prefix6
    raw = m.get("node_prefix_ipv6", MISSING)
    prefix = c.integer("cluster.node_prefix_ipv6", raw, default, *bounds("cluster.node_prefix_ipv6"))
    if cidr6 is None:
        return prefix
    given = raw is not MISSING
    if prefix <= cidr6.prefixlen:
        if given:
            c.error("cluster.node_prefix_ipv6", prefix,
                    f"must be longer than cluster.cidr's /{cidr6.prefixlen} ({cidr6})")
        else:
            c.error("cluster.cidr", str(cidr6), f"too small for /{prefix} node subnets "
                                                "(set cluster.node_prefix_ipv6)")
        return min(MAX_NODE_PREFIX6, cidr6.prefixlen + 1)
    if prefix - cidr6.prefixlen > MAX_MASK_DIFF6:
        reason = (f"at most {MAX_MASK_DIFF6} bits longer than cluster.cidr {cidr6} (Kubernetes' limit "
                  f"for --node-cidr-mask-size-ipv6): /{cidr6.prefixlen + MAX_MASK_DIFF6} or shorter")
        if given:
            c.error("cluster.node_prefix_ipv6", prefix, reason)
        else:
            c.error("cluster.cidr", str(cidr6), f"too large for /{prefix} node subnets: Kubernetes allows at "
                                                f"most {MAX_MASK_DIFF6} bits between the cluster and node masks "
                                                f"(use /{prefix - MAX_MASK_DIFF6} or longer, or set "
                                                "cluster.node_prefix_ipv6)")
        return cidr6.prefixlen + MAX_MASK_DIFF6
    return prefix


def _parse_cluster(c: Checker, raw: Any) -> Cluster:
    m = c.mapping("cluster", _inline_psk(c, "cluster", raw), CLUSTER_KEYS)
    d = Cluster()
    cidr, cidr6 = _parse_cidrs(c, m)
    lo, hi = bounds("cluster.node_prefix")
    node_prefix = c.integer("cluster.node_prefix", m.get("node_prefix", MISSING), d.node_prefix, lo, hi)
    if cidr is not None and node_prefix <= cidr.prefixlen:
        c.error("cluster.node_prefix", node_prefix, f"must be longer than cluster.cidr's /{cidr.prefixlen}")
        node_prefix = min(hi, max(cidr.prefixlen + 1, d.node_prefix))
    node_prefix6 = _node_prefix6(c, m, cidr6)
    tunnel = c.choice("cluster.tunnel", m.get("tunnel", MISSING), option("cluster.tunnel").choices, d.tunnel)
    mode = c.choice("cluster.mode", m.get("mode", MISSING), option("cluster.mode").choices, d.mode)
    vxlan_port = c.integer("cluster.vxlan_port", m.get("vxlan_port", MISSING), d.vxlan_port,
                           *bounds("cluster.vxlan_port"))
    mesh_degree = c.integer("cluster.mesh_degree", m.get("mesh_degree", MISSING), d.mesh_degree,
                            *bounds("cluster.mesh_degree"))
    if mesh_degree and mode != "stp":
        c.error("cluster.mesh_degree", mesh_degree, f"only used in stp mode (cluster.mode is {mode})")
    elif mesh_degree == 1:   # one peer each: more than 2 nodes fall apart into pairs
        c.error("cluster.mesh_degree", mesh_degree, "must be 0 (a full mesh) or at least 2: with one peer "
                "per node, more than 2 nodes split into pairs that cannot reach each other")
    mtu = None
    raw_mtu = m.get("mtu", option("cluster.mtu").default)
    if raw_mtu != "auto":
        overhead = OVERHEAD[tunnel]
        if isinstance(raw_mtu, bool) or not isinstance(raw_mtu, int):
            c.error("cluster.mtu", raw_mtu, "must be auto or an integer (the pod MTU)")
        elif cidr6 is not None and raw_mtu < MIN_POD_MTU6:
            c.error("cluster.mtu", raw_mtu, f"too small: IPv6 pods need at least {MIN_POD_MTU6} (RFC 8200)")
        elif raw_mtu < MIN_POD_MTU:
            c.error("cluster.mtu", raw_mtu,
                    f"too small: pods need at least {MIN_POD_MTU}, and {tunnel} adds {overhead} bytes on top")
        elif raw_mtu + overhead > 65535:
            c.error("cluster.mtu", raw_mtu, f"too large: with {tunnel}'s {overhead} bytes it exceeds 65535")
        else:
            mtu = raw_mtu
    masquerade = c.boolean("cluster.masquerade", m.get("masquerade", MISSING), d.masquerade)
    vni = c.integer("cluster.vni", m.get("vni", MISSING), d.vni, *bounds("cluster.vni"))
    crypt = _parse_encryption(c, m, [n for n in (cidr, cidr6) if n is not None])
    return Cluster(cidr=cidr, node_prefix=node_prefix, cidr6=cidr6, node_prefix6=node_prefix6, tunnel=tunnel, mode=mode,
                   vxlan_port=vxlan_port, mesh_degree=mesh_degree, mtu=mtu, masquerade=masquerade, vni=vni, **crypt)


INLINE_PSK = ("a pre-shared key is never written in the config (it would be in every copy and log of the "
              "file): put it in a file owned by root with mode 0600, name it in local.psk_file and set "
              "cluster.ipsec_auth: psk")
PSK_KEYS = ("psk", "ipsec_psk", "pre_shared_key")


def _inline_psk(c: Checker, section: str, raw: Any) -> Any:
    """A PSK written inline is refused with its own reason (its value never shown); the
    rest of the mapping is returned for the usual checks."""
    if not isinstance(raw, dict) or not any(k in raw for k in PSK_KEYS):
        return raw
    for k in PSK_KEYS:
        if k in raw:
            c.error(f"{section}.{k}", "(hidden)", INLINE_PSK)
    return {k: v for k, v in raw.items() if k not in PSK_KEYS}


MIN_SA_LIFETIME = 60


def _parse_encryption(c: Checker, m: dict, pod_ranges: list) -> dict:
    """cluster.encryption and its settings (the datapath and the key files are checked
    with the local section: `_check_encryption_local`)."""
    d = Cluster()
    encryption = c.choice("cluster.encryption", m.get("encryption", MISSING), option("cluster.encryption").choices,
                          d.encryption)
    ipsec_auth = c.choice("cluster.ipsec_auth", m.get("ipsec_auth", MISSING), option("cluster.ipsec_auth").choices,
                          d.ipsec_auth)
    lifetime = c.integer("cluster.ipsec_sa_lifetime", m.get("ipsec_sa_lifetime", MISSING), d.ipsec_sa_lifetime,
                         *bounds("cluster.ipsec_sa_lifetime"))
    if 0 < lifetime < MIN_SA_LIFETIME:
        c.error("cluster.ipsec_sa_lifetime", lifetime,
                f"at least {MIN_SA_LIFETIME} (or 0: strongSwan's defaults): an IKE exchange under load takes seconds")
        lifetime = d.ipsec_sa_lifetime
    port = c.integer("cluster.wireguard_port", m.get("wireguard_port", MISSING), d.wireguard_port,
                     *bounds("cluster.wireguard_port"))
    wg_cidr = d.wireguard_cidr
    raw = m.get("wireguard_cidr", MISSING)
    if raw is not MISSING:
        items, whole = parse_cidr_list(raw)
        net = items[0][1] if not whole and len(items) == 1 else None
        reason = whole or (items[0][2] if len(items) == 1 else "one IPv4 CIDR")
        if net is not None and net.version != 4:
            net, reason = None, "must be an IPv4 CIDR (the WireGuard devices' addresses)"
        elif net is not None and net.prefixlen > 30:
            net, reason = None, "too small (at most /30)"
        elif net is not None and any(net.overlaps(r) for r in pod_ranges):
            net, reason = None, f"overlaps cluster.cidr {', '.join(str(r) for r in pod_ranges)}"
        if net is None:
            c.error("cluster.wireguard_cidr", raw, reason or "must be an IPv4 CIDR")
        else:
            wg_cidr = net
    elif encryption == "wireguard" and any(wg_cidr.overlaps(r) for r in pod_ranges):
        c.error("cluster.cidr", ", ".join(str(r) for r in pod_ranges),
                f"overlaps cluster.wireguard_cidr's default {wg_cidr} (set cluster.wireguard_cidr)")
    return {"encryption": encryption, "ipsec_auth": ipsec_auth, "ipsec_sa_lifetime": lifetime, "wireguard_port": port,
            "wireguard_cidr": wg_cidr}


IPSEC_CERT_FILES = ("certificate", "private_key", "ca_cert")


def wireguard_capacity(cluster: Cluster) -> tuple[int, int]:
    """(node subnets the pod range holds, addresses cluster.wireguard_cidr gives them): each
    node's WireGuard address is derived from its subnet's number in the range."""
    if cluster.cidr is not None:
        subnets = 1 << (cluster.node_prefix - cluster.cidr.prefixlen)
    else:
        assert cluster.cidr6 is not None
        subnets = 1 << (cluster.node_prefix6 - cluster.cidr6.prefixlen)
    return subnets, cluster.wireguard_cidr.num_addresses - 2


def _check_wireguard_nodes(c: Checker, cluster: Cluster, raw_nodes: list, nodes: list[Node]) -> None:
    """The WireGuard addresses: enough of them for every node subnet, none an underlay address."""
    subnets, addresses = wireguard_capacity(cluster)
    if subnets > addresses:
        c.error("cluster.wireguard_cidr", str(cluster.wireguard_cidr),
                f"too small: the pod range holds {subnets} node subnets, each node needs an address here "
                f"(/{32 - max(2, (subnets + 1).bit_length())} or larger)")
    index = {n.name: i for i, n in enumerate(nodes)}
    for i, raw in enumerate(raw_nodes):
        name = raw.get("name") if isinstance(raw, dict) else None
        node = nodes[index[name]] if name in index else None
        if node is not None and node.ip in cluster.wireguard_cidr:
            c.error(f"nodes[{i}].ip", str(node.ip), f"inside cluster.wireguard_cidr {cluster.wireguard_cidr}")


def _check_encryption_local(c: Checker, cluster: Cluster, local: Local) -> None:
    """What cluster.encryption needs of this node: the kernel datapath (XFRM and WireGuard act
    on packets in the kernel; the userspace and dummy datapaths never hand them over), and
    the files that name its credentials (their contents and modes: ovs_mesh.config.secrets)."""
    enc = cluster.encryption
    if enc == "none":
        return
    if local.datapath != "system":
        c.error("cluster.encryption", enc,
                f"needs the kernel datapath (local.datapath system): {'XFRM' if enc == 'ipsec' else 'WireGuard'} "
                f"works on the kernel's packets, local.datapath is {local.datapath}")
    if enc != "ipsec":
        return
    if cluster.tunnel == "vxlan" and cluster.vxlan_port != 4789:
        c.error("cluster.vxlan_port", cluster.vxlan_port,
                "cluster.encryption ipsec protects VXLAN on udp/4789 only (ovs-monitor-ipsec's connections "
                "name that port)")
    if cluster.ipsec_auth == "certificate":
        for k in IPSEC_CERT_FILES:
            if getattr(local, k) is None:
                c.error(f"local.{k}", None, "required with cluster.encryption ipsec (cluster.ipsec_auth certificate)")
        if local.psk_file is not None:
            c.error("local.psk_file", local.psk_file,
                    "not used with cluster.ipsec_auth certificate (a pre-shared key is opt-in: "
                    "cluster.ipsec_auth psk)")
    else:
        if local.psk_file is None:
            c.error("local.psk_file", None, "required with cluster.ipsec_auth psk")
        for k in IPSEC_CERT_FILES:
            if getattr(local, k) is not None:
                c.error(f"local.{k}", getattr(local, k),
                        "not used with cluster.ipsec_auth psk (OVS takes one method for all tunnels)")


def host_port_problem(value: str) -> str | None:
    """Why `value` is not HOST:PORT with a port in 1-65535 (None when it is)."""
    m = re.fullmatch(r"[^:]*:(\d{1,5})", value)
    if not m:
        return "must be HOST:PORT"
    if not 1 <= int(m.group(1)) <= 65535:
        return "port must be between 1 and 65535"
    return None


def _parse_local(c: Checker, raw: Any, overrides: dict, default_node: str) -> Local:
    m = c.mapping("local", _inline_psk(c, "local", raw), LOCAL_KEYS)
    m.update({k: v for k, v in overrides.items() if v is not None})
    d = Local(node="")
    node = c.string("local.node", m.get("node", MISSING), None)
    if node is not None and not NODE_NAME.match(node):  # a node name, as in `nodes` and Kubernetes
        c.error("local.node", node, "must be a DNS name (lower case letters, digits, '-', '.')")
    node = node or default_node
    ovsdb = c.string("local.ovsdb", m.get("ovsdb", MISSING), d.ovsdb)
    remote = re.fullmatch(r"unix:.+|(?:tcp|ssl):[^:]+:(\d+)", ovsdb, re.S)
    if not remote:
        c.error("local.ovsdb", ovsdb, "must be unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT")
    elif remote.group(1) is not None and (len(remote.group(1)) > 5 or not 1 <= int(remote.group(1)) <= 65535):
        c.error("local.ovsdb", ovsdb, "port must be between 1 and 65535")
    datapath = c.choice("local.datapath", m.get("datapath", MISSING), option("local.datapath").choices, d.datapath)
    host = c.boolean("local.host", m.get("host", MISSING), d.host)
    pod_guard = c.boolean("local.pod_guard", m.get("pod_guard", MISSING), d.pod_guard)
    strings = {k: c.string(f"local.{k}", m.get(k, MISSING), getattr(d, k))
               for k in ("underlay_bridge", "underlay_interface", "cni_conf", "metrics", "ovs_rundir",
                         "ssl_key", "ssl_cert", "ssl_ca", "certificate", "private_key", "ca_cert", "psk_file",
                         "wireguard_key")}
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
    return Local(node=node, ovsdb=ovsdb, datapath=datapath, host=host, pod_guard=pod_guard, **strings)


def _seconds(c: Checker, path: str, value: Any, default: float) -> float:
    """A number of seconds within the option table's bounds for `path`; `default` when absent or refused."""
    lo, hi = bounds(path)
    if value is MISSING:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        c.error(path, value, f"must be a number of seconds between {lo} and {hi}")
        return default
    return value


def _parse_kubernetes(c: Checker, raw: Any) -> Kubernetes:
    """The `kubernetes:` section, checked once here: the Kubernetes source takes it as it is."""
    kube = c.mapping("kubernetes", raw, KUBERNETES_KEYS)
    default = Kubernetes()
    resync = _seconds(c, "kubernetes.resync_seconds", kube.get("resync_seconds", MISSING), default.resync_seconds)
    kubeconfig = c.string("kubernetes.kubeconfig", kube.get("kubeconfig", MISSING), default.kubeconfig)
    # the family of the Nodes' InternalIP the tunnels use (default: IPv6 for an IPv6-only cluster, else IPv4)
    family = c.choice("kubernetes.underlay_family", kube.get("underlay_family", MISSING),
                      option("kubernetes.underlay_family").choices, "")
    return Kubernetes(kubeconfig=kubeconfig, resync_seconds=resync, underlay_family=family or None)


def _parse_health(c: Checker, raw: Any) -> Health:
    m = c.mapping("health", raw, HEALTH_KEYS)
    d = Health()
    interval = _seconds(c, "health.interval", m.get("interval", MISSING), d.interval)
    ints = {k: c.integer(f"health.{k}", m.get(k, MISSING), getattr(d, k), *bounds(f"health.{k}"))
            for k in ("failures", "max_probes_per_second", "peer_metrics_max")}
    return Health(enabled=c.boolean("health.enabled", m.get("enabled", MISSING), d.enabled),
                  interval=float(interval), **ints)


def _name(node: Node) -> str:
    return node.name


def parse_config(data: Any, overrides: dict | None = None, require_local: bool = True,
                 default_node: str = "", entries: Callable[[int, Any, Cluster], Entry] | None = None) -> Config:
    """Validate a decoded YAML document; raise ConfigError with every problem.

    `local.node` defaults to `default_node` (the caller passes the hostname:
    this package does no I/O).  At most MAX_PROBLEMS problems are listed."""
    c = Checker(MAX_PROBLEMS)
    top = c.mapping("", data, TOP_KEYS)
    if data is not None and not isinstance(data, dict):
        raise ConfigError(c.problems())
    cluster = _parse_cluster(c, top.get("cluster"))
    source = c.choice("source", top.get("source", MISSING), option("source").choices, option("source").default)
    local = _parse_local(c, top.get("local"), overrides or {}, default_node)
    kube = _parse_kubernetes(c, top.get("kubernetes"))
    health = _parse_health(c, top.get("health"))
    _check_encryption_local(c, cluster, local)
    raw_nodes = top.get("nodes") or []
    if not isinstance(raw_nodes, list):
        c.error("nodes", raw_nodes, "must be a list")
        raw_nodes = []
    if source == "kubernetes" and raw_nodes:
        c.error("nodes", f"{len(raw_nodes)} nodes", "not used with source: kubernetes")
    nodes, _ = check_node_list(c, raw_nodes, cluster, "nodes", False,
                               None if entries is None else lambda i, raw: entries(i, raw, cluster))
    if cluster.encryption == "wireguard":
        _check_wireguard_nodes(c, cluster, raw_nodes, nodes)
    if require_local and not local.node and not c.count:
        c.error("local.node", None, "required (set local.node or --node)")
    elif require_local and source == "file" and not c.count and local.node not in {n.name for n in nodes}:
        c.error("local.node", local.node, "not in nodes (set local.node or --node)")
    if c.count:
        raise ConfigError(c.problems())
    # Names are unique in a valid config, so the name order is the order of the Nodes.
    return Config(cluster=cluster, local=local, nodes=tuple(sorted(nodes, key=_name)), source=source,
                  kubernetes=kube, health=health)
