"""Desired OVS state for one node: a pure function of the topology.

Pipeline on obr0 (flow and port modes).  Nobody on the overlay speaks for
someone else: a packet enters it only with a source address its sender owns.

  table 0   from LOCAL (kbr0): ip with nw_src / arp with arp_spa in this node's
            subnet (the gateway is in it), ipv6 with ipv6_src in its subnet6 -> 10;
            a neighbour solicitation from a link-local source gets the gateway6
            source first (see LINK_LOCAL); any other LOCAL packet drops.
            From the tunnel: flow mode only with tun_id = cluster.vni -> 20;
            port mode every other port -> 20, where only peers' ports match.
  table 10  per peer: ip/arp to the peer's subnet, ipv6 to its subnet6 and
            neighbour solicitations (icmp6 type 135) for a target in it ->
            tunnel to the peer (flow mode: set tun_id = vni and tun_dst, or
            tun_ipv6_dst over an IPv6 underlay, = the peer's IP)
  table 20  per peer: ip with nw_src / arp with arp_spa in that peer's subnet,
            ipv6 with ipv6_src in its subnet6, and only from that peer
            (tun_src / tun_ipv6_src in flow mode, its port in port mode) -> 30
  table 30  only to the local subnets (ip, arp; ipv6 and solicitations for a
            target in subnet6) -> LOCAL
Neighbour advertisements are unicast to an address in the soliciting node's
subnet6, so the ipv6 rules carry them.
Every table ends in a drop; nothing is flooded, so the mesh has no loops.
`stp` mode instead builds ports to `mesh_degree` peers with RSTP on the bridge
and a single NORMAL flow: no address is checked there.

The state is built in two kinds of parts (`build_parts`): the fixed part (a
function of the cluster settings and the local node) and one part per peer
(`peer_part`: a function of the cluster settings, that peer and its ofport).
`build` composes them; the agent's incremental sync (agent/installed.py)
calls `peer_part` for just the peers that changed, so whatever a peer's part
holds is installed the same way by both paths.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping

from topology.mesh import peers_of
from topology.model import Address, Config, Node

from ..encryption import wireguard
from .model import (
    BRIDGE,
    FIRST_PEER_OFPORT,
    OWNER_KEY,
    PEER_KEY,
    T_CLASSIFY,
    T_FROM_PEERS,
    T_TO_LOCAL,
    T_TO_PEERS,
    TUNNEL_OFPORT,
    BridgeSpec,
    Flow,
    GlobalSpec,
    OvsState,
    PortSpec,
    frozen_map,
)

PORT_PREFIX = {"vxlan": "vx-", "gre": "gre-", "geneve": "gnv-"}


def tunnel_port_name(tunnel: str) -> str:
    """Flow mode's single tunnel port."""
    return f"{BRIDGE}-{tunnel}"


def peer_port_name(tunnel: str, peer: str) -> str:
    """Port/stp mode: stable, <= 15 bytes, derived from the peer's name only,
    so an IP change modifies the port instead of replacing it."""
    return PORT_PREFIX[tunnel] + hashlib.sha256(peer.encode()).hexdigest()[:10]


def tun_id(vni: int) -> str:
    """A tunnel key as ovs-ofctl prints it in matches and set_field."""
    return f"{vni:#x}" if vni else "0"


def tunnel_options(config: Config, remote_ip: str) -> dict[str, str]:
    c = config.cluster
    opts = {"remote_ip": remote_ip}
    if remote_ip == "flow":
        opts["key"] = "flow"          # flows match and set tun_id = cluster.vni
    elif c.vni:
        opts["key"] = str(c.vni)      # per-peer port: OVS keeps other keys off this port
    if c.tunnel == "vxlan" and c.vxlan_port != 4789:
        opts["dst_port"] = str(c.vxlan_port)
    return opts


def per_peer_ports(config: Config) -> bool:
    """Whether every peer has a port of its own: port and stp modes, and flow mode with
    IPsec (ovs-monitor-ipsec configures a connection per port with a literal remote_ip)."""
    return config.cluster.mode != "flow" or config.cluster.encryption == "ipsec"


def ipsec_options(config: Config, peer: Node) -> dict[str, str]:
    """What makes ovs-monitor-ipsec protect the tunnel to `peer` (nothing without IPsec):
    the peer's identity (certificates: its node name, which its certificate's CN must be;
    or the cluster's pre-shared key) and this node's underlay address as the connection's
    local end (otherwise the monitor takes the default route's address)."""
    c = config.cluster
    if c.encryption != "ipsec":
        return {}
    opts = {"local_ip": str(config.local_node.ip)}
    if c.ipsec_auth == "psk":
        assert config.local.psk, "the PSK is read with the config (ovs_mesh.config.secrets)"
        opts["psk"] = config.local.psk
    else:
        opts["remote_name"] = peer.name
    opts.update(sa_lifetime_options(c.ipsec_sa_lifetime))
    return opts


def sa_lifetime_options(seconds: int) -> dict[str, str]:
    """cluster.ipsec_sa_lifetime as strongSwan connection settings (`options:ipsec_<key>`, which
    ovs-monitor-ipsec copies into the tunnel's connection): the ESP SA's `lifetime`, a
    `rekeymargin` of a third of it (with strongSwan's default fuzz of 100 % the new SA is
    negotiated between a third and two thirds of the way, before the old one expires), and the
    IKE SA's `ikelifetime`, three times as long (strongSwan's own ratio).  Nothing for 0."""
    if not seconds:
        return {}
    return {"ipsec_lifetime": f"{seconds}s", "ipsec_rekeymargin": f"{seconds // 3}s",
            "ipsec_ikelifetime": f"{3 * seconds}s"}


# Open_vSwitch other_config keys IPsec takes (the monitor reads them): the certificate
# files, and ipsec_skb_mark 0/1, which makes the monitor install drop ("shunt") policies
# for every tunnel packet whose skb mark has bit 0 clear -- all of ours: no tunnel packet
# leaves unencrypted, also before a peer's SA is up.
IPSEC_SKB_MARK = "0/1"


def ipsec_globals(config: Config) -> GlobalSpec | None:
    c, l = config.cluster, config.local
    if c.encryption != "ipsec":
        return None
    keys = {"ipsec_skb_mark": IPSEC_SKB_MARK}
    if c.ipsec_auth == "certificate":
        keys.update(certificate=l.certificate or "", private_key=l.private_key or "", ca_cert=l.ca_cert or "")
    return GlobalSpec(other_config=frozen_map(keys))


def assign_ofports(wanted: list[str], existing: Mapping[str, int]) -> dict[str, int]:
    """Ofports for our peer ports.

    `existing` is every port on the bridge now (ours, also those about to be
    deleted, and anyone else's) -> its current ofport.  A wanted port keeps its
    number if it has one of ours (>= FIRST_PEER_OFPORT); a new or misplaced one
    gets the lowest number nobody holds now.  So a number is never handed to a
    new port in the transaction that deletes its holder: OVS would give the new
    port another number (the flows would output to the wrong port).
    """
    out = {name: existing[name] for name in wanted if existing.get(name, -1) >= FIRST_PEER_OFPORT}
    used = set(existing.values()) | set(out.values())
    nxt = FIRST_PEER_OFPORT
    for name in wanted:
        if name in out:
            continue
        while nxt in used:
            nxt += 1
        out[name] = nxt
        used.add(nxt)
    return out


@dataclasses.dataclass(frozen=True)
class Parts:
    """The desired state cut where the agent's incremental sync cuts it: the fixed
    part (bridge, flow mode's tunnel port, the flows no peer owns) and each
    peer's part (its port in port/stp modes, its flows; `bridge` None)."""
    fixed: OvsState
    peers: Mapping[str, OvsState]


def build(config: Config, pod_mtu: int | None = None,
          existing_ofports: Mapping[str, int] | None = None) -> OvsState:
    """The OvsState ovs-mesh wants on the local node.

    `existing_ofports` (port name -> ofport of every port on the bridge now)
    keeps peer ports on their numbers across runs, so flows stay unchanged.
    """
    return compose(build_parts(config, pod_mtu, existing_ofports))


def compose(parts: Parts) -> OvsState:
    """The whole state from its parts (what `build` returns)."""
    peers = parts.peers.values()
    ports = tuple(sorted((*parts.fixed.ports, *(p for s in peers for p in s.ports)), key=lambda p: p.name))
    return OvsState(bridge=parts.fixed.bridge, ports=ports,
                    flows=parts.fixed.flows.union(*(s.flows for s in peers)), globals=parts.fixed.globals)


def build_parts(config: Config, pod_mtu: int | None = None,
                existing_ofports: Mapping[str, int] | None = None, part=None) -> Parts:
    """`build`, by part: the fixed part and one `peer_part` per peer (`part`: a
    function with peer_part's signature and result, e.g. one that remembers them)."""
    part = part or peer_part
    c = config.cluster
    peers = peers_of(c, config.nodes, config.local.node)
    ofports: dict[str, int] = {}
    if per_peer_ports(config):
        by_port = assign_ofports(sorted(peer_port_name(c.tunnel, p.name) for p in peers),
                                 existing_ofports or {})
        ofports = {p.name: by_port[peer_port_name(c.tunnel, p.name)] for p in peers}
    return Parts(fixed_part(config, pod_mtu),
                 {p.name: part(config, p, ofports.get(p.name)) for p in peers})


def fixed_part(config: Config, pod_mtu: int | None = None) -> OvsState:
    """The bridge, flow mode's one tunnel port, and the flows that belong to no peer:
    a function of the cluster settings and the local node only."""
    c = config.cluster
    bridge = BridgeSpec(name=BRIDGE, datapath_type=config.local.datapath,
                        rstp_enable=c.mode == "stp", mtu_request=pod_mtu)
    ports: tuple[PortSpec, ...] = ()
    if c.mode == "flow":
        ports = (PortSpec(name=tunnel_port_name(c.tunnel), type=c.tunnel,
                          options=frozen_map(tunnel_options(config, "flow")),
                          ofport_request=TUNNEL_OFPORT,
                          external_ids=frozen_map({OWNER_KEY: "tunnel"})),)
    return OvsState(bridge=bridge, ports=ports, flows=frozenset(fixed_flows(config)), globals=ipsec_globals(config))


def peer_part(config: Config, peer: Node, ofport: int | None = None) -> OvsState:
    """One peer's port (port/stp modes, and flow mode with IPsec; at `ofport`) and flows (no bridge).

    Flow mode with IPsec keeps sending through the flow-based port (the kernel's XFRM
    policies match the packet's addresses and ports, not the OVS port); the peer's own
    port is what the monitor turns into an IPsec connection, and what OVS receives the
    peer's packets on (the port with the matching remote_ip wins), so table 0 lets them
    on from there too (without that flow every received packet would drop)."""
    c = config.cluster
    ports: tuple[PortSpec, ...] = ()
    if not reachable(config, peer):
        return OvsState()
    if per_peer_ports(config):
        assert ofport is not None, "port and stp modes, and flow mode with IPsec, number every peer port"
        remote = str(tunnel_ip(config, peer))
        options = tunnel_options(config, remote)
        if c.mode == "flow":
            options["key"] = "flow"   # received packets carry tun_id: table 0 matches cluster.vni
        ports = (PortSpec(name=peer_port_name(c.tunnel, peer.name), type=c.tunnel,
                          options=frozen_map({**options, **ipsec_options(config, peer)}),
                          bfd=frozen_map({"enable": "true"}) if c.mode == "port" else (),
                          ofport_request=ofport,
                          external_ids=frozen_map({OWNER_KEY: "tunnel" if c.mode != "flow" else "ipsec",
                                                   PEER_KEY: peer.name})),)
    return OvsState(ports=ports, flows=frozenset(peer_flows(config, peer, ofport)))


def fixed_flows(config: Config) -> list[Flow]:
    """The flows of no peer: the local side of tables 0 and 30, the drops."""
    c = config.cluster
    if c.mode == "stp":
        return [Flow(T_CLASSIFY, 0, "", "NORMAL")]
    flows = _common_flows(config.local_node)
    if c.mode == "flow":
        return flows + [
            Flow(T_CLASSIFY, 100, f"tun_id={tun_id(c.vni)},in_port={TUNNEL_OFPORT}", f"goto_table:{T_FROM_PEERS}"),
            Flow(T_CLASSIFY, 0, "", "drop"),
        ]
    return flows + [Flow(T_CLASSIFY, 0, "", f"goto_table:{T_FROM_PEERS}")]


def peer_flows(config: Config, peer: Node, ofport: int | None = None) -> list[Flow]:
    """Per pod family the peer has a subnet of: out (flow mode: set tun_id and tun_dst, or
    tun_ipv6_dst over an IPv6 underlay; port mode: output to its port), in (from the peer:
    tun_src / tun_ipv6_src / its port, only the peer's sources): 4 flows for IPv4 (ip and
    arp out and in), 3 for IPv6 (ipv6 and solicitations out, ipv6 in); stp: none."""
    c = config.cluster
    if c.mode == "stp" or not peer.subnets or not reachable(config, peer):
        return []
    if c.mode == "flow":
        set_dst, sender = tunnel_fields(config, peer)
        flows = _peer_flows(peer, f"set_field:{tun_id(c.vni)}->tun_id,{set_dst},output:{TUNNEL_OFPORT}", sender)
        if ofport is not None:   # IPsec: the peer's packets arrive on its own port
            flows.append(Flow(T_CLASSIFY, 100, f"tun_id={tun_id(c.vni)},in_port={ofport}",
                              f"goto_table:{T_FROM_PEERS}"))
        return flows
    return _peer_flows(peer, f"output:{ofport}", f"in_port={ofport}")


# Neighbour solicitations a node sends for a pod it forwards to carry kbr0's link-local
# source (Linux uses the triggering packet's source only when it is kbr0's own), which no
# peer could answer: the answer would go to an address only this node's kbr0 holds.  So
# table 0 gives such a solicitation the gateway6 source (an address of kbr0 too; OVS fixes
# the ICMPv6 checksum); the target's answer then goes to gateway6, inside this node's subnet.
LINK_LOCAL = "fe80::/10"
# Every solicitation match names icmp_code=0 (the only code RFC 4861 allows) beside the type.
# Without it the kernel datapath forwards solicitations to the wrong place: OVS passes the
# ND fields (nd_target) of a megaflow's mask to the kernel only when both ICMPv6 type and
# code are matched exactly, so with the code wildcarded the kernel's cached flow ignores the
# target, and the first solicitation's verdict (to one peer, or dropped) is applied to every
# later one from the same source, whatever it asks for.  The userspace datapath keeps the
# mask as OVS built it, which is why only the kernel datapath showed it.
NS_TYPE = "icmp_type=135,icmp_code=0"
ND_NS = f"icmp6,{NS_TYPE}"


def _common_flows(local: Node) -> list[Flow]:
    """Tables 0 (the local side), 10, 20 and 30 without per-peer flows, per pod family."""
    to_peers = f"goto_table:{T_TO_PEERS}"
    flows = [
        Flow(T_CLASSIFY, 90, "in_port=LOCAL", "drop"),   # a source that is not this node's
        Flow(T_TO_PEERS, 0, "", "drop"),
        Flow(T_FROM_PEERS, 0, "", "drop"),
        Flow(T_TO_LOCAL, 0, "", "drop"),
    ]
    if local.subnet is not None:
        flows += [
            Flow(T_CLASSIFY, 100, f"ip,in_port=LOCAL,nw_src={local.subnet}", to_peers),
            Flow(T_CLASSIFY, 100, f"arp,in_port=LOCAL,arp_spa={local.subnet}", to_peers),
            Flow(T_TO_LOCAL, 100, f"ip,nw_dst={local.subnet}", "LOCAL"),
            Flow(T_TO_LOCAL, 100, f"arp,arp_tpa={local.subnet}", "LOCAL"),
        ]
    if local.subnet6 is not None:
        flows += [
            Flow(T_CLASSIFY, 100, f"ipv6,in_port=LOCAL,ipv6_src={local.subnet6}", to_peers),
            Flow(T_CLASSIFY, 100, f"icmp6,in_port=LOCAL,ipv6_src={LINK_LOCAL},{NS_TYPE}",
                 f"set_field:{local.gateway6}->ipv6_src,{to_peers}"),
            Flow(T_TO_LOCAL, 100, f"ipv6,ipv6_dst={local.subnet6}", "LOCAL"),
            Flow(T_TO_LOCAL, 100, f"{ND_NS},nd_target={local.subnet6}", "LOCAL"),
        ]
    return flows


def _peer_flows(peer: Node, out: str, sender: str) -> list[Flow]:
    """Per pod family: out to the peer's subnet (IP and ARP; IPv6 and neighbour
    solicitations for it), in from `sender` with only the peer's sources."""
    to_local = f"goto_table:{T_TO_LOCAL}"
    flows = []
    if peer.subnet is not None:
        subnet = str(peer.subnet)   # formatted once: hot at thousands of peers
        flows += [Flow(T_TO_PEERS, 100, f"ip,nw_dst={subnet}", out),
                  Flow(T_TO_PEERS, 100, f"arp,arp_tpa={subnet}", out),
                  Flow(T_FROM_PEERS, 100, f"ip,{sender},nw_src={subnet}", to_local),
                  Flow(T_FROM_PEERS, 100, f"arp,{sender},arp_spa={subnet}", to_local)]
    if peer.subnet6 is not None:
        subnet6 = str(peer.subnet6)
        # a unicast solicitation (NUD) matches both out rules: the target decides
        flows += [Flow(T_TO_PEERS, 100, f"ipv6,ipv6_dst={subnet6}", out),
                  Flow(T_TO_PEERS, 110, f"{ND_NS},nd_target={subnet6}", out),
                  Flow(T_FROM_PEERS, 100, f"ipv6,{sender},ipv6_src={subnet6}", to_local)]
    return flows


def tunnel_ip(config: Config, peer: Node) -> Address:
    """The address the tunnels to `peer` use: its underlay address, or with WireGuard its address
    on the WireGuard device (the tunnel packets then ride inside WireGuard)."""
    if config.cluster.encryption == "wireguard":
        addr = wireguard.address(config.cluster, peer)
        assert addr is not None, "a WireGuard peer has a pod subnet"
        return addr
    return peer.ip


def tunnel_fields(config: Config, peer: Node) -> tuple[str, str]:
    """Flow mode: (the field set to send to `peer`, the match of what it sent), per underlay family."""
    addr = tunnel_ip(config, peer)
    ip = str(addr)
    if addr.version == 6:
        return f"set_field:{ip}->tun_ipv6_dst", f"tun_ipv6_src={ip}"
    return f"set_field:{ip}->tun_dst", f"tun_src={ip}"


def reachable(config: Config, peer: Node) -> bool:
    """With WireGuard only a peer whose public key the inventory has can be tunnelled to."""
    return config.cluster.encryption != "wireguard" or bool(peer.wireguard_key)
