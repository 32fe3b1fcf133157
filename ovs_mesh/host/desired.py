"""What the host should hold: a pure function of the config, the pod MTU and
what was observed (the underlay's addresses and routes move as found; saved
settings are restored only where they still exist).  No I/O."""
from __future__ import annotations

import dataclasses

from topology.config import ConfigError
from topology.errors import NotOurs, Problem
from topology.model import Config

from .. import cni
from ..netlink import SCOPE_LINK, Route
from ..state import BRIDGE
from ..underlay import desired_ovs
from .model import (KBR, ROUTE_PROTO, Address, AntiSpoof, CniFile, Enslaved, HostObject, HostRoute,
                    HostState, Kbr, LinkUp, Masquerade, Offload, Setting, Sysctl, UnderlayBridge,
                    UnderlayPort)


def wanted_sysctls() -> tuple[Sysctl, ...]:
    """Forwarding on; no ICMP redirects from kbr0 (the kernel ORs kbr0 with `all`)."""
    return (Sysctl("net.ipv4.ip_forward", "1"), Sysctl("net.ipv4.conf.all.send_redirects", "0"),
            Sysctl(f"net.ipv4.conf.{KBR}.send_redirects", "0"))


def gateway_mac(gw) -> str:
    """A stable MAC for kbr0 (0a:58 + the gateway IP, as ovn-kubernetes does),
    so the bridge keeps its address when pods (ports) come and go."""
    return "0a:58:" + ":".join(f"{b:02x}" for b in gw.packed)


def desired_host(config: Config, pod_mtu: int, observed: HostState, teardown: bool = False) -> HostState:
    """The host objects this node should have, in apply order.  Raises
    ConfigError (an InputError) for a missing underlay interface and NotOurs
    when something we must write is not ours; teardown wants only what moves
    back (the underlay's addresses and routes) and the saved settings."""
    facts = observed.facts
    u = facts.underlay
    if not teardown:
        if u is not None and facts.underlay_mtu is None:
            raise ConfigError([Problem("local.underlay_interface", u.interface, "no such network interface")])
        if facts.foreign:
            raise NotOurs("; ".join(facts.foreign))
    want: list[HostObject] = []
    if u is not None and not teardown:
        ovs = desired_ovs(u.bridge, u.interface, facts.underlay_mtu)
        want += [UnderlayBridge(ovs.bridge), *(UnderlayPort(p) for p in ovs.ports)]
    node = config.local_node
    gw = node.gateway
    if not teardown:
        want.append(Kbr(pod_mtu, gateway_mac(gw)))
        if config.local.datapath != "dummy":  # dummy: obr0 has no kernel device
            want.append(Enslaved(BRIDGE))
        if u is not None:
            want.append(LinkUp(u.bridge))
        want.append(Address(f"{gw}/{config.cluster.node_prefix}", KBR))
    want += _moved_addresses(observed, teardown)
    if not teardown:
        want.append(HostRoute(Route(dst=str(config.cluster.cidr), dev=KBR, src=str(gw), scope=SCOPE_LINK,
                                    proto=ROUTE_PROTO)))
    want += _moved_routes(observed, teardown, {w.key for w in want if isinstance(w, HostRoute)})
    want += _settings(observed, teardown)
    if not teardown:
        cidr = str(config.cluster.cidr)
        if config.cluster.masquerade:
            want.append(Masquerade(cidr))
        want.append(AntiSpoof(str(node.subnet), str(gw), BRIDGE))
        want.append(CniFile(config.local.cni_conf, cni.render(node.subnet, pod_mtu)))
    return HostState(tuple(want), facts)


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


def _settings(observed: HostState, teardown: bool) -> list[Setting]:
    """Ours while applied; on teardown the saved values of those that still exist."""
    if teardown:
        present = {(s.kind, s.key) for s in observed.of(Sysctl, Offload)}
        return [s for s in observed.facts.saved if (s.kind, s.key) in present]
    out: list[Setting] = list(wanted_sysctls())
    u = observed.facts.underlay
    if u is not None and any(o.interface == u.interface for o in observed.of(Offload)):
        out.append(Offload(u.interface, "off"))
    return out
