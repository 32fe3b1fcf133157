"""What the agent installed, by part, and the delta of a few changed nodes against it.  Pure.

Why: a full pass (observe every row and flow, build the whole desired state,
diff it all) costs O(peers) on every event; at 5000 peers that is half a
second for a join that OVS itself takes 25 ms to install.  So, as Antrea's
node route controller does, the agent keeps a record of what it installed for
each peer (`Installed`) and handles an event about node X by building X's part
(`desired.peer_part`, the same function `desired.build` composes), diffing it
against X's recorded part and applying only that.

The record is rebuilt from the desired state after every successful full pass
(`Installed.after_full_pass`) and changed only after an incremental change
succeeded (`Installed.commit`).  It can be wrong only if someone changed OVS
behind our back: the agent's watcher and the periodic full pass repair that.

Not per-peer (`blocker` says why; a full pass runs instead): no record yet, a
change of the cluster or local settings or of the local node (the fixed part),
and stp mode with a partial mesh (`mesh_degree`: who peers with whom depends
on every node).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from topology.model import Cluster, Config, Local, Node, diff_nodes

from ..ovs.desired import Parts, assign_ofports, build_parts, peer_part, peer_port_name, per_peer_ports
from ..ovs.diff import diff_flows, diff_rows
from ..ovs.model import OvsState, PortSpec
from ..reconcile.plan import Plan


def basis(config: Config) -> tuple[Cluster, Local, Node]:
    """What the fixed part and every peer's part depend on besides the peer itself."""
    return (config.cluster, config.local, config.local_node)


@dataclasses.dataclass
class Installed:
    """The agent's record of what OVS holds because of it, after the last success."""
    basis: tuple[Cluster, Local, Node]
    nodes: dict[str, Node]          # the installed inventory, local node included
    fixed: OvsState                 # bridge, fixed ports and flows
    peers: dict[str, OvsState]      # peer name -> its port (port/stp modes) and flows
    ofports: dict[str, int]         # every port on the bridge -> its ofport (ours as installed)
    flow_count: int

    @classmethod
    def after_full_pass(cls, config: Config, parts: Parts, ofports_before: Mapping[str, int],
                        ours_before: Iterable[str]) -> Installed:
        """The record once a full pass installed `parts`.  `ofports_before` is every
        port's number as that pass read it, `ours_before` our ports it read: ours are
        taken from the desired state (deleted ones dropped), others kept as read."""
        ours = set(ours_before)
        ofports = {k: v for k, v in ofports_before.items() if k not in ours}
        peers = dict(parts.peers)
        for part in (parts.fixed, *peers.values()):
            for p in part.ports:
                ofports[p.name] = p.ofport_request or -1
        count = len(parts.fixed.flows) + sum(len(p.flows) for p in peers.values())
        return cls(basis(config), {n.name: n for n in config.nodes}, parts.fixed, peers, ofports, count)

    def rows(self) -> OvsState:
        """Bridge and ports as installed (what the watcher compares OVSDB with)."""
        ports = [*self.fixed.ports, *(p for part in self.peers.values() for p in part.ports)]
        return OvsState(self.fixed.bridge, tuple(sorted(ports, key=lambda p: p.name)))

    def commit(self, delta: PeerChanges) -> None:
        """Record a delta that was applied successfully (never before)."""
        for name, part in delta.peers.items():
            old = self.peers.pop(name, None)
            if old is not None:
                self.flow_count -= len(old.flows)
                for p in old.ports:
                    self.ofports.pop(p.name, None)
            if part is not None:
                self.peers[name] = part
                self.flow_count += len(part.flows)
                for p in part.ports:
                    self.ofports[p.name] = p.ofport_request or -1
        self.nodes = delta.nodes


@dataclasses.dataclass(frozen=True)
class PeerChanges:
    """The changes for a few nodes, and their new parts (None: no part any more)."""
    plan: Plan
    peers: Mapping[str, OvsState | None]
    nodes: dict[str, Node]          # the whole new inventory by name

    @property
    def names(self) -> list[str]:
        return sorted(self.peers)


def blocker(installed: Installed | None, config: Config, nodes: Mapping[str, Node] | None = None) -> str | None:
    """Why `config` cannot be reached by per-peer changes from `installed` (None: it can).
    `nodes`: config's nodes by name, when the caller has them."""
    if installed is None:
        return "no record of what is installed yet"
    c = config.cluster
    if c.mode == "stp" and c.mesh_degree:
        return "stp mode with mesh_degree: who peers with whom depends on every node"
    me = config.local.node
    if installed.basis[0] != c or installed.basis[1] != config.local:
        return "cluster or local settings changed"
    if c.encryption == "wireguard":
        return ("cluster.encryption wireguard: the peers' keys and endpoints are the WireGuard device's, "
                "which the host part of a full pass sets")
    if installed.nodes.get(me) != (nodes.get(me) if nodes is not None else config.node(me)):
        return "the local node changed"
    return None


def node_map(config: Config) -> dict[str, Node]:
    return {n.name: n for n in config.nodes}


def changed_names(installed: Installed, nodes: Mapping[str, Node]) -> set[str]:
    """Nodes added, removed or changed since `installed`.  O(nodes), but cheap: a
    source that keeps the Node objects of unchanged nodes makes it identity checks."""
    return diff_nodes(installed.nodes, nodes).names


def delta(installed: Installed, config: Config, names: Iterable[str],
          nodes: dict[str, Node] | None = None) -> PeerChanges:
    """The row and flow changes that take the named nodes from their recorded parts
    to their parts in `config` (callers check `blocker` first).

    New peer ports get the lowest numbers nobody holds in the record, which still
    holds the ports this delta deletes: a number is never reused in the
    transaction that frees it (`desired.assign_ofports`)."""
    nodes = node_map(config) if nodes is None else nodes
    me, c = config.local.node, config.cluster
    wanted = {name: nodes.get(name) if name != me else None for name in names}
    ofports: dict[str, int | None] = {}
    if per_peer_ports(config):
        fresh = []
        for name, node in wanted.items():
            old = installed.peers.get(name)
            if node is None:
                continue
            if old is not None and old.ports:
                ofports[name] = old.ports[0].ofport_request
            else:
                fresh.append(name)
        by_port = assign_ofports(sorted(peer_port_name(c.tunnel, n) for n in fresh), installed.ofports)
        ofports.update({n: by_port[peer_port_name(c.tunnel, n)] for n in fresh})
    parts = {name: peer_part(config, node, ofports.get(name)) if node is not None else None
             for name, node in wanted.items()}
    have = [installed.peers[n] for n in parts if n in installed.peers]
    want = [p for p in parts.values() if p is not None]
    rows = diff_rows(_ports(want), _ports(have))
    flows = diff_flows(frozenset().union(*(p.flows for p in want)),
                       frozenset().union(*(p.flows for p in have)))
    return PeerChanges(Plan(ovsdb=tuple(rows), flows=tuple(flows)), parts, nodes)


def parts_reusing(installed: Installed | None, config: Config, pod_mtu: int | None,
                  ofports: Mapping[str, int]) -> Parts:
    """`desired.build_parts`, but a peer whose inputs are the very objects its recorded
    part was built from (same basis, same Node object, same ofport) keeps that part:
    `peer_part` is pure, so it would return an equal value.  This makes the periodic
    full pass cost the observation and the diff, not a rebuild of every peer."""
    if blocker(installed, config) is not None:
        return build_parts(config, pod_mtu, ofports)
    assert installed is not None   # blocker() said there is a record
    nodes, peers = installed.nodes, installed.peers

    def part(cfg: Config, node: Node, ofport: int | None) -> OvsState:
        old = peers.get(node.name)
        if old is not None and nodes.get(node.name) is node and (
                not old.ports or old.ports[0].ofport_request == ofport):
            return old
        return peer_part(cfg, node, ofport)
    return build_parts(config, pod_mtu, ofports, part)


def _ports(parts: list[OvsState]) -> OvsState:
    ports: list[PortSpec] = [p for part in parts for p in part.ports]
    return OvsState(ports=tuple(ports))
