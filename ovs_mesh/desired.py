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
"""
from __future__ import annotations

import hashlib
from typing import Mapping

from topology.mesh import peers_of
from topology.model import Config, Node

from .state import (
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
    OvsState,
    PortSpec,
    frozen_map,
)

PORT_PREFIX = {"vxlan": "vx-", "gre": "gre-", "geneve": "gnv-"}
DATAPATH_TYPE = {"system": "system", "netdev": "netdev", "dummy": "dummy"}


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


def build(config: Config, pod_mtu: int | None = None,
          existing_ofports: Mapping[str, int] | None = None) -> OvsState:
    """The OvsState ovs-mesh wants on the local node.

    `existing_ofports` (port name -> ofport of every port on the bridge now)
    keeps peer ports on their numbers across runs, so flows stay unchanged.
    """
    c = config.cluster
    local = config.local_node
    peers = peers_of(c, config.nodes, local.name)
    bridge = BridgeSpec(name=BRIDGE, datapath_type=DATAPATH_TYPE[config.local.datapath],
                        rstp_enable=c.mode == "stp", mtu_request=pod_mtu)
    if c.mode == "flow":
        port = PortSpec(name=tunnel_port_name(c.tunnel), type=c.tunnel,
                        options=frozen_map(tunnel_options(config, "flow")),
                        ofport_request=TUNNEL_OFPORT,
                        external_ids=frozen_map({OWNER_KEY: "tunnel"}))
        return OvsState(bridge=bridge, ports=(port,),
                        flows=frozenset(flow_mode_flows(local, peers, c.vni)))
    names = {p.name: peer_port_name(c.tunnel, p.name) for p in peers}
    ofports = assign_ofports(sorted(names.values()), existing_ofports or {})
    ports = tuple(sorted(
        (PortSpec(name=names[p.name], type=c.tunnel,
                  options=frozen_map(tunnel_options(config, str(p.ip))),
                  bfd=frozen_map({"enable": "true"}) if c.mode == "port" else (),
                  ofport_request=ofports[names[p.name]],
                  external_ids=frozen_map({OWNER_KEY: "tunnel", PEER_KEY: p.name}))
         for p in peers), key=lambda p: p.name))
    if c.mode == "stp":
        flows = {Flow(T_CLASSIFY, 0, "", "NORMAL")}
    else:
        flows = port_mode_flows(local, [(p, ofports[names[p.name]]) for p in peers])
    return OvsState(bridge=bridge, ports=ports, flows=frozenset(flows))


# Neighbour solicitations a node sends for a pod it forwards to carry kbr0's link-local
# source (Linux uses the triggering packet's source only when it is kbr0's own), which no
# peer could answer: the answer would go to an address only this node's kbr0 holds.  So
# table 0 gives such a solicitation the gateway6 source (an address of kbr0 too; OVS fixes
# the ICMPv6 checksum); the target's answer then goes to gateway6, inside this node's subnet.
LINK_LOCAL = "fe80::/10"
ND_NS = "icmp6,icmp_type=135"


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
            Flow(T_CLASSIFY, 100, f"icmp6,in_port=LOCAL,ipv6_src={LINK_LOCAL},icmp_type=135",
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
        flows += [Flow(T_TO_PEERS, 100, f"ip,nw_dst={peer.subnet}", out),
                  Flow(T_TO_PEERS, 100, f"arp,arp_tpa={peer.subnet}", out),
                  Flow(T_FROM_PEERS, 100, f"ip,{sender},nw_src={peer.subnet}", to_local),
                  Flow(T_FROM_PEERS, 100, f"arp,{sender},arp_spa={peer.subnet}", to_local)]
    if peer.subnet6 is not None:
        # a unicast solicitation (NUD) matches both out rules: the target decides
        flows += [Flow(T_TO_PEERS, 100, f"ipv6,ipv6_dst={peer.subnet6}", out),
                  Flow(T_TO_PEERS, 110, f"{ND_NS},nd_target={peer.subnet6}", out),
                  Flow(T_FROM_PEERS, 100, f"ipv6,{sender},ipv6_src={peer.subnet6}", to_local)]
    return flows


def tunnel_fields(peer: Node) -> tuple[str, str]:
    """Flow mode: (the field set to send to `peer`, the match of what it sent), per underlay family."""
    if peer.underlay_family == "ipv6":
        return f"set_field:{peer.ip}->tun_ipv6_dst", f"tun_ipv6_src={peer.ip}"
    return f"set_field:{peer.ip}->tun_dst", f"tun_src={peer.ip}"


def flow_mode_flows(local: Node, peers: list[Node], vni: int = 0) -> list[Flow]:
    """Per peer and pod family: out (set tun_id, tun_dst or tun_ipv6_dst), in (tun_src or
    tun_ipv6_src and the source filter): 4 flows for IPv4, 3 for IPv6."""
    key = tun_id(vni)
    flows = _common_flows(local) + [
        Flow(T_CLASSIFY, 100, f"tun_id={key},in_port={TUNNEL_OFPORT}", f"goto_table:{T_FROM_PEERS}"),
        Flow(T_CLASSIFY, 0, "", "drop"),
    ]
    for p in peers:
        set_dst, sender = tunnel_fields(p)
        flows += _peer_flows(p, f"set_field:{key}->tun_id,{set_dst},output:{TUNNEL_OFPORT}", sender)
    return flows


def port_mode_flows(local: Node, peers: list[tuple[Node, int]]) -> list[Flow]:
    """Per peer and pod family: out (output to its port), in (its port and the source filter)."""
    flows = _common_flows(local) + [Flow(T_CLASSIFY, 0, "", f"goto_table:{T_FROM_PEERS}")]
    for p, ofport in peers:
        flows += _peer_flows(p, f"output:{ofport}", f"in_port={ofport}")
    return flows
