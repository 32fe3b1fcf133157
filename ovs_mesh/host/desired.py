"""What the host should hold: a pure function of the config, the pod MTU and
what was observed (the underlay's addresses and routes move as found; saved
settings are restored only where they still exist).  No I/O."""
from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv6Address

from topology.config import ConfigError
from topology.errors import NotOurs, Problem
from topology.mesh import peers_of
from topology.model import OVERHEAD, Config

from ..encryption import wireguard
from ..ovs.model import BRIDGE
from . import cni, strongswan
from .model import (
    KBR,
    ROUTE_PROTO,
    Address,
    AntiSpoof,
    CniFile,
    Enslaved,
    HostObject,
    HostRoute,
    HostState,
    Kbr,
    LinkUp,
    Masquerade,
    Offload,
    PodGuard,
    Service,
    Setting,
    StrongswanConf,
    Sysctl,
    UnderlayBridge,
    UnderlayPort,
    WgDevice,
    WgFilter,
    WgKey,
)
from .netlink import IPV6_DEFAULT_METRIC, SCOPE_LINK, Route
from .services import IPSEC_UNIT
from .underlay import desired_ovs


def wanted_sysctls(families=("ipv4",)) -> tuple[Sysctl, ...]:
    """Per cluster family: forwarding on.  IPv4: no ICMP redirects from kbr0
    (the kernel ORs kbr0 with `all`).  IPv6 has no `send_redirects`: the
    redirects are dropped in our `inet` table instead (nft.py); IPv6 on kbr0
    is switched on (a host whose default is disable_ipv6=1 would leave kbr0
    without its gateway6).  obr0 needs no IPv6 of its own: as a port of kbr0
    it only carries frames."""
    out: list[Sysctl] = []
    if "ipv4" in families:
        out += [Sysctl("net.ipv4.ip_forward", "1"), Sysctl("net.ipv4.conf.all.send_redirects", "0"),
                Sysctl(f"net.ipv4.conf.{KBR}.send_redirects", "0")]
    if "ipv6" in families:
        out += [Sysctl("net.ipv6.conf.all.forwarding", "1"), Sysctl(f"net.ipv6.conf.{KBR}.disable_ipv6", "0")]
    return tuple(out)


def accept_ra(link: str) -> str:
    return f"net.ipv6.conf.{link}.accept_ra"


def gateway_mac(gw) -> str:
    """A stable MAC for kbr0 (0a:58 + the gateway IP, as ovn-kubernetes does;
    an IPv6 gateway's 128 bits XOR-folded into 32), so the bridge keeps its
    address when pods (ports) come and go.  Every node's kbr0 must have its
    own MAC: a node's ND and ARP cross the tunnels into the other nodes' kbr0,
    and a Linux bridge drops frames that carry its own address as source.  The
    last 4 bytes of an IPv6 gateway (::1 on every node) would not differ; the
    fold keeps every bit that tells the node subnets apart (up to 32 of them)."""
    b = gw.packed
    if len(b) == 16:
        b = (int.from_bytes(b[:4], "big") ^ int.from_bytes(b[4:8], "big") ^ int.from_bytes(b[8:12], "big")
             ^ int.from_bytes(b[12:], "big")).to_bytes(4, "big")
    return "0a:58:" + ":".join(f"{x:02x}" for x in b[-4:])


def link_local(mac: str) -> IPv6Address:
    """The EUI-64 link-local address the kernel gives a link with `mac`
    (addr_gen_mode eui64, the default): kbr0's, which pods must not claim.
    On a host whose default addr_gen_mode is another (stable-privacy), kbr0's
    real link-local differs and is not protected; pods do not route through
    it (their default route is via gateway6 and kbr0 sends no router
    advertisements), so a claim of it misleads no pod's routing."""
    b = bytes.fromhex(mac.replace(":", ""))
    iid = bytes([b[0] ^ 0x02]) + b[1:3] + b"\xff\xfe" + b[3:]
    return IPv6Address(b"\xfe\x80" + b"\x00" * 6 + iid)


def desired_host(config: Config, pod_mtu: int, observed: HostState, teardown: bool = False) -> HostState:
    """The host objects this node should have, in apply order.  Raises
    ConfigError (an InputError) for a missing underlay interface or an IPv6
    cluster on a kernel without IPv6, and NotOurs when something we must
    write is not ours; teardown wants only what moves back (the underlay's
    addresses and routes) and the saved settings."""
    facts = observed.facts
    u = facts.underlay
    if not teardown:
        if u is not None and facts.underlay_mtu is None:
            raise ConfigError([Problem("local.underlay_interface", u.interface, "no such network interface")])
        if config.cluster.cidr6 is not None and not facts.ipv6:
            raise ConfigError([Problem("cluster.cidr", str(config.cluster.cidr6),
                                       "this kernel has no IPv6 (booted with ipv6.disable=1)")])
        if config.cluster.encryption == "ipsec":
            _check_ipsec(config.cluster.tunnel, facts)
        if config.cluster.encryption == "wireguard":
            _check_wireguard(config, facts)
        if facts.foreign:
            raise NotOurs("; ".join(facts.foreign))
    want: list[HostObject] = []
    if u is not None and not teardown:
        ovs = desired_ovs(u.bridge, u.interface, facts.underlay_mtu)
        assert ovs.bridge is not None   # desired_ovs always has the bridge
        want += [UnderlayBridge(ovs.bridge), *(UnderlayPort(p) for p in ovs.ports)]
    node, cluster = config.local_node, config.cluster
    families = cluster.families
    gws: list[IPv4Address | IPv6Address] = [node.gateway] if node.subnet is not None else []
    gws += [node.gateway6] if node.subnet6 is not None else []
    mac = gateway_mac(gws[0]) if gws else None
    if not teardown:
        want.append(Kbr(pod_mtu, mac))
        if config.local.datapath != "dummy":  # dummy: obr0 has no kernel device
            want.append(Enslaved(BRIDGE))
        if u is not None:
            want.append(LinkUp(u.bridge))
        want += desired_wireguard(config, pod_mtu, observed)
    want += _settings(observed, teardown, families)   # before the addresses: kbr0's disable_ipv6
    if not teardown:
        if node.subnet is not None:
            want.append(Address(f"{node.gateway}/{cluster.node_prefix}", KBR))
        if node.subnet6 is not None:
            want.append(Address(f"{node.gateway6}/{cluster.node_prefix6}", KBR))
    want += _moved_addresses(observed, teardown)
    if not teardown:
        want += cluster_routes(config)
    want += _moved_routes(observed, teardown, {w.key for w in want if isinstance(w, HostRoute)})
    if not teardown:
        masq = " ".join(str(c) for c in cluster.cidrs) if cluster.masquerade else ""
        if masq or "ipv6" in families:
            want.append(Masquerade(masq, redirects_off="ipv6" in families))
        v6_link_local = [str(link_local(mac))] if node.subnet6 is not None and mac is not None else []
        gateways = [*(str(g) for g in gws), *v6_link_local]
        want.append(AntiSpoof(",".join(str(s) for s in node.subnets), ",".join(gateways), BRIDGE))
        if config.local.pod_guard:
            want.append(pod_guard(observed))
        want.append(CniFile(config.local.cni_conf, cni.render(node.subnet, pod_mtu, node.subnet6,
                                                              guard=config.local.pod_guard)))
        if config.cluster.encryption == "ipsec" and facts.systemd:
            if facts.strongswan_d:   # before the monitor starts: strongSwan reads it as it starts
                want.append(StrongswanConf(strongswan.PATH, strongswan.render()))
            want.append(Service(IPSEC_UNIT))
    return HostState(tuple(want), facts)


def _check_ipsec(tunnel: str, facts) -> None:
    """What IPsec needs of this host: the kernel's XFRM, and (where the agent starts it) the monitor,
    one that keeps VXLAN/Geneve connections (host/services.py monitor_reads_names)."""
    if not facts.xfrm:
        raise ConfigError([Problem("cluster.encryption", "ipsec", "this kernel has no XFRM (IPsec): "
                                                                  "/proc/net/xfrm_stat is missing")])
    if facts.systemd and not facts.ipsec_monitor:
        raise ConfigError([Problem("cluster.encryption", "ipsec", "ovs-monitor-ipsec is not installed "
                                   "(apt-get install openvswitch-ipsec strongswan libstrongswan-standard-plugins)")])
    if facts.systemd and tunnel in ("vxlan", "geneve") and not facts.ipsec_names:
        raise ConfigError([Problem("cluster.tunnel", tunnel, "with cluster.encryption ipsec, this node's "
                                   "ovs-monitor-ipsec (Open vSwitch 3.1) misreads VXLAN/Geneve connection names and "
                                   "tears them down: run `ovs-mesh install-service` (it installs the fixed start, "
                                   "50-ovs-mesh-ipsec-monitor.conf), or use tunnel gre")])


def _check_wireguard(config: Config, facts) -> None:
    """What WireGuard needs of this host (the kernel's module, wireguard-tools), and that the
    inventory's public key of this node, if it gives one, is the key this node holds."""
    if not facts.wireguard:
        raise ConfigError([Problem("cluster.encryption", "wireguard", "this kernel has no WireGuard "
                                   "(no wireguard module: Linux 5.6 or later, or the wireguard module installed)")])
    if not facts.wg_tools:
        raise ConfigError([Problem("cluster.encryption", "wireguard",
                                   "wireguard-tools is not installed (apt-get install wireguard-tools)")])
    listed = config.local_node.wireguard_key
    # the Kubernetes source: the annotation is this agent's to write (agent.session), not a mistake
    if config.source == "file" and listed and facts.wg_public_key and listed != facts.wg_public_key:
        index = next(i for i, n in enumerate(config.nodes) if n.name == config.local.node)
        raise ConfigError([Problem(f"nodes[{index}].wireguard_public_key", listed,
                                   f"not this node's key: {config.local.wireguard_key} holds the private key "
                                   f"of {facts.wg_public_key} (`ovs-mesh wireguard-key` prints it)")])


def desired_wireguard(config: Config, pod_mtu: int, observed: HostState) -> list[HostObject]:
    """cluster.encryption wireguard: the private key file, the device (its MTU carries a tunnel
    packet of a pod packet at `pod_mtu`), its peers (those with a public key), its address, and
    the filter that keeps plaintext tunnel packets out.  Otherwise only the key file, while it
    exists (the key stays until teardown, so switching WireGuard off and on keeps this node's
    public key)."""
    c = config.cluster
    key_path = config.local.wireguard_key
    if c.encryption != "wireguard":
        return [WgKey(key_path)] if WgKey(key_path) in observed.objects else []
    me = config.local_node
    addr = wireguard.address(c, me)
    peers = wireguard.peers(c, peers_of(c, config.nodes, config.local.node))
    proto = {"vxlan": f"udp {c.vxlan_port}", "geneve": "udp 6081", "gre": "gre"}[c.tunnel]
    out: list[HostObject] = [
        WgKey(key_path),
        WgDevice(wireguard.DEVICE, c.wireguard_port, observed.facts.wg_public_key, pod_mtu + OVERHEAD[c.tunnel],
                 peers),
    ]
    if addr is not None:
        out.append(Address(f"{addr}/{c.wireguard_cidr.prefixlen}", wireguard.DEVICE))
    out.append(WgFilter(wireguard.DEVICE, proto))
    return out


def pod_guard(observed: HostState) -> PodGuard:
    """The guard's table with one entry per veth on kbr0: the entry the sets have (the CNI
    plugin's, from the pod's CNI result), else the one learned from the pod; entries of
    veths that are gone are dropped."""
    facts = observed.facts
    have = {p.port: p for g in observed.of(PodGuard) for p in g.pods}
    learned = {p.port: p for p in facts.learned_pods}
    pods = [have.get(port) or learned.get(port) for port in facts.pod_ports]
    return PodGuard(KBR, BRIDGE, facts.bridge_scoped, tuple(sorted(p for p in pods if p is not None)))


def cluster_routes(config: Config) -> list[HostRoute]:
    """`cidr dev kbr0` per family, with our protocol and kbr0's address as the
    source (node -> pod traffic comes from the gateway, never the underlay
    IP).  IPv6 has no route scope (always universe) and the kernel gives a
    route without a metric 1024: both are stated so the observed route
    compares equal."""
    node, out = config.local_node, []
    if config.cluster.cidr is not None and node.subnet is not None:
        out.append(HostRoute(Route(dst=str(config.cluster.cidr), dev=KBR, src=str(node.gateway),
                                   scope=SCOPE_LINK, proto=ROUTE_PROTO)))
    if config.cluster.cidr6 is not None and node.subnet6 is not None:
        out.append(HostRoute(Route(dst=str(config.cluster.cidr6), dev=KBR, src=str(node.gateway6),
                                   proto=ROUTE_PROTO, metric=IPV6_DEFAULT_METRIC)))
    return out


def _moved_addresses(observed: HostState, teardown: bool) -> list[Address]:
    """Every address on the underlay interface or bridge belongs on the bridge
    (on the interface after teardown)."""
    u = observed.facts.underlay
    if u is None:
        return []
    target = u.interface if teardown else u.bridge
    return [Address(a.cidr, target) for dev in (u.interface, u.bridge)
            for a in observed.of(Address) if a.dev == dev]


def _moved_routes(observed: HostState, teardown: bool, taken: set) -> list[HostRoute]:
    u = observed.facts.underlay
    if u is None:
        return []
    target = u.interface if teardown else u.bridge
    out = []
    for r in observed.of(HostRoute):
        if r.route.dev in (u.interface, u.bridge) and r.route.proto != ROUTE_PROTO and r.key not in taken:
            taken.add(r.key)
            out.append(HostRoute(dataclasses.replace(r.route, dev=target)))
    return out


def _settings(observed: HostState, teardown: bool, families) -> list[Setting]:
    """Ours while applied; on teardown the saved values of those that still exist.

    IPv6 forwarding makes the kernel ignore router advertisements where
    accept_ra is 1 (a router does not learn its routes from RAs); a link that
    learns routes from RAs (facts.ra_links) gets accept_ra=2 ("even when
    forwarding"), so the node keeps its RA-learned default route.  A link
    where accept_ra is 0 is left as it is."""
    if teardown:
        present = {(s.kind, s.key) for s in observed.of(Sysctl, Offload)}
        return [s for s in observed.facts.saved if (s.kind, s.key) in present]
    out: list[Setting] = list(wanted_sysctls(families))
    if "ipv6" in families:
        ra = {accept_ra(l) for l in observed.facts.ra_links}
        ra |= {s.name for s in observed.facts.saved if isinstance(s, Sysctl) and s.name.endswith(".accept_ra")}
        out += [Sysctl(s.name, "2") for s in observed.of(Sysctl) if s.name in ra and s.value in ("1", "2")]
    u = observed.facts.underlay
    if u is not None and any(o.interface == u.interface for o in observed.of(Offload)):
        out.append(Offload(u.interface, "off"))
    return out
