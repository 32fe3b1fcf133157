"""The values the host stage is made of: one frozen type per kind of host object.

Objects that are only a state of something not ours (obr0 enslaved, a device
up, a setting's value) have `deletable = False`: the diff never deletes them.

Desired state (`desired.py`) and observed state (`observe.py`) use the same
types, so the diff compares whole values.  Every object answers three things:
`kind` (what `plan --json` calls it), `key` (what identifies it: two objects
with the same kind and key are the same thing, possibly with another value)
and `label` (how `plan` prints it).  Only what ovs-mesh owns is represented,
plus the settings it changed (sysctls, offloads), which it restores.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from ..ovs.model import BridgeSpec, PortSpec
from .netlink import Route

KBR = "kbr0"                 # the Linux bridge pods attach to (cni.BRIDGE_NAME)
ALIAS = "ovs-mesh"           # kbr0's IFLA_IFALIAS: the tag that makes it ours
ROUTE_PROTO = 109            # route protocol of our routes (unused in rt_protos)
NFT_TABLE = "ovs_mesh"       # our nftables tables: `inet ovs_mesh`, `bridge ovs_mesh`


class _Obj:
    """`key` is the field named by KEY, else the constant KEY_VALUE, else the
    label; `label` is LABEL formatted with the fields."""
    kind: ClassVar[str]
    KEY: ClassVar[str] = ""
    KEY_VALUE: ClassVar[str] = ""
    LABEL: ClassVar[str]
    deletable: ClassVar[bool] = True

    @property
    def key(self):
        return getattr(self, self.KEY) if self.KEY else (self.KEY_VALUE or self.label)

    @property
    def label(self) -> str:
        return self.LABEL.format(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})


@dataclasses.dataclass(frozen=True)
class Kbr(_Obj):
    """kbr0 itself: a Linux bridge tagged with ALIAS."""
    kind, KEY_VALUE, LABEL = "link", KBR, KBR + " (bridge, mtu {mtu})"
    mtu: int
    mac: str | None
    up: bool = True


@dataclasses.dataclass(frozen=True)
class Enslaved(_Obj):
    """An OVS internal device (obr0) attached to kbr0 and up; not ours: never deleted."""
    kind, KEY, LABEL, deletable = "link", "name", "{name} master {master}", False
    name: str
    master: str = KBR
    up: bool = True


@dataclasses.dataclass(frozen=True)
class LinkUp(_Obj):
    """An OVS internal device (the underlay bridge) that must be up; not ours: never deleted."""
    kind, KEY, LABEL, deletable = "link", "name", "{name} up", False
    name: str


@dataclasses.dataclass(frozen=True)
class Address(_Obj):
    """An IPv4 or IPv6 address ("ip/prefix") on a link; keyed by the address, so a move is a modify."""
    kind, KEY, LABEL = "address", "cidr", "{cidr} dev {dev}"
    cidr: str
    dev: str


@dataclasses.dataclass(frozen=True)
class HostRoute(_Obj):
    """A route of ours (protocol ROUTE_PROTO) or one of the underlay's, moved."""
    kind, LABEL = "route", "{route}"
    route: Route

    @property
    def key(self) -> tuple:
        return (self.route.dst, self.route.gateway, self.route.metric)


@dataclasses.dataclass(frozen=True)
class Sysctl(_Obj):
    """A sysctl we set (dotted name); its previous value is saved and restored
    by teardown: restored, never deleted."""
    kind, KEY, LABEL, deletable = "sysctl", "name", "{name}={value}", False
    name: str
    value: str

    @property
    def restorable(self) -> bool:
        """Settings on links we create and delete are not worth restoring."""
        return f".{KBR}." not in self.name


@dataclasses.dataclass(frozen=True)
class Offload(_Obj):
    """tx-checksumming of an interface ("on"/"off"), saved and restored like a sysctl."""
    kind, KEY, LABEL, deletable = "offload", "interface", "{interface} tx-checksumming {value}", False
    restorable: ClassVar[bool] = True
    interface: str
    value: str


Setting = Sysctl | Offload


@dataclasses.dataclass(frozen=True)
class Masquerade(_Obj):
    """nftables table `inet ovs_mesh`: masquerade each of `cidrs` (one per
    family, space-separated; "" with cluster.masquerade off) leaving the
    cluster range, and (`redirects_off`, an IPv6 cluster) drop the ICMPv6
    redirects the node would send to pods through kbr0 ("?" fields when
    observed without our rule)."""
    kind, KEY_VALUE = "masquerade", f"inet {NFT_TABLE}"
    cidrs: str
    redirects_off: bool = False

    @property
    def label(self) -> str:
        what = self.cidrs or "no masquerade"
        return what + (", no ICMPv6 redirects" if self.redirects_off else "") + f" (nft table inet {NFT_TABLE})"


@dataclasses.dataclass(frozen=True)
class LegacyMasquerade(_Obj):
    """The IPv4-only `ip ovs_mesh` table older versions wrote: ours by its
    name, never desired, so the diff deletes it (`inet ovs_mesh` replaces it)."""
    kind, KEY_VALUE = "masquerade", f"ip {NFT_TABLE}"
    cidr: str

    @property
    def label(self) -> str:
        return f"{self.cidr or '?'} (nft table ip {NFT_TABLE})"


@dataclasses.dataclass(frozen=True)
class AntiSpoof(_Obj):
    """nftables table `bridge ovs_mesh`: frames from kbr0's pod ports (all but
    `gateway_port`) with an IPv4/ARP or IPv6/ND sender outside the node's
    subnets or claiming one of the gateway's addresses are dropped.  `subnet`
    and `gateway` are comma-separated, IPv4 first (gateway: kbr0's address of
    each family and its IPv6 link-local one); "" fields when observed without
    our rule."""
    kind, KEY_VALUE = "antispoof", NFT_TABLE
    subnet: str
    gateway: str
    gateway_port: str

    @property
    def label(self) -> str:
        return f"{self.subnet or '?'} (nft table bridge {NFT_TABLE})"


@dataclasses.dataclass(frozen=True)
class PodGuard(_Obj):
    """nftables table `bridge ovs_mesh_guard` (ovs_mesh.pod_guard): each pod's frames leave
    its veth only with its own MAC and addresses.  `pods` are the guarded pods
    (`GuardedPod`, by veth); the CNI plugin adds and removes them as pods come and go,
    the agent keeps them equal to the veths on `bridge` (all but `gateway_port`);
    `scoped`: the rules are limited to `bridge`'s ports (nft_meta_bridge)."""
    kind, KEY_VALUE = "pod-guard", f"bridge {NFT_TABLE}_guard"
    bridge: str
    gateway_port: str
    scoped: bool
    pods: tuple = ()

    @property
    def label(self) -> str:
        return f"{len(self.pods)} pods (nft table bridge {NFT_TABLE}_guard)"


@dataclasses.dataclass(frozen=True)
class CniFile(_Obj):
    """The CNI conflist ovs-mesh writes (ours when its "name" is ovs-mesh)."""
    kind, KEY, LABEL = "cni", "path", "{path}"
    path: str
    content: str


@dataclasses.dataclass(frozen=True)
class UnderlayBridge(_Obj):
    """netdev datapath: the OVS bridge that carries the node IP (external_ids ovs-mesh=underlay)."""
    kind, LABEL = "underlay", "bridge {spec.name}"
    spec: BridgeSpec


@dataclasses.dataclass(frozen=True)
class UnderlayPort(_Obj):
    """netdev datapath: the underlay interface as the underlay bridge's port."""
    kind, LABEL = "underlay", "port {spec.name}"
    spec: PortSpec


@dataclasses.dataclass(frozen=True)
class Service(_Obj):
    """A systemd unit an encryption mode needs, running (host/services.py).  Observed only
    when it runs and either is wanted or was started by ovs-mesh (the state file says so), so
    the diff stops only a service ovs-mesh started."""
    kind, KEY, LABEL = "service", "name", "{name} running"
    name: str


@dataclasses.dataclass(frozen=True)
class StrongswanConf(_Obj):
    """strongSwan's settings file of ours (host/strongswan.py: the kernel's ACQUIRE lifetime that
    ovs-monitor-ipsec means to set), ours by its first line; wanted with IPsec where the agent
    starts the monitor, written before it starts."""
    kind, KEY, LABEL = "strongswan-conf", "path", "{path}"
    path: str
    content: str


@dataclasses.dataclass(frozen=True)
class WgKey(_Obj):
    """This node's WireGuard private key file (encryption/wg_keys.py makes it, 0600): ours by its
    path, kept while the agent runs whatever the encryption, deleted only by teardown.  Never
    holds the key."""
    kind, KEY, LABEL = "wireguard-key", "path", "{path}"
    path: str


@dataclasses.dataclass(frozen=True)
class WgDevice(_Obj):
    """The WireGuard device (encryption/wireguard.py DEVICE), tagged with ALIAS: its port, the
    public key of the private key it holds (None: the key file is not made yet), its MTU and
    its peers (encryption.wireguard.WgPeer, sorted)."""
    kind = "wireguard"
    name: str
    port: int
    public_key: str | None
    mtu: int
    peers: tuple = ()

    @property
    def key(self) -> str:
        return self.name

    @property
    def label(self) -> str:
        return f"{self.name} (port {self.port}, mtu {self.mtu}, {len(self.peers)} peers)"


@dataclasses.dataclass(frozen=True)
class WgFilter(_Obj):
    """nftables table `inet ovs_mesh_wg`: packets of our tunnel (`tunnel`: "udp PORT" for VXLAN
    and Geneve, "gre") that did not arrive through `device` are dropped and counted, so that no
    plaintext tunnel packet from the underlay reaches Open vSwitch ("" fields when observed
    without our rule)."""
    kind, KEY_VALUE = "wireguard-filter", f"inet {NFT_TABLE}_wg"
    device: str
    tunnel: str

    @property
    def label(self) -> str:
        return f"tunnel packets only through {self.device or '?'} (nft table inet {NFT_TABLE}_wg)"


HostObject = (Kbr | Enslaved | LinkUp | Address | HostRoute | Sysctl | Offload | Masquerade | LegacyMasquerade
              | AntiSpoof | PodGuard | CniFile | UnderlayBridge | UnderlayPort | Service | StrongswanConf | WgKey
              | WgDevice | WgFilter)


@dataclasses.dataclass(frozen=True)
class Underlay:
    """netdev datapath: the node IP moves from `interface` onto OVS bridge `bridge`."""
    bridge: str
    interface: str


@dataclasses.dataclass(frozen=True)
class HostFacts:
    """What desired_host needs to know about the node beyond the config."""
    underlay: Underlay | None = None          # from the config, else from the state file (teardown)
    underlay_mtu: int | None = None           # the underlay interface's MTU; None: it does not exist
    saved: tuple[Setting, ...] = ()           # previous values of the settings we changed
    foreign: tuple[str, ...] = ()             # what we would have to write but is not ours
    ra_links: tuple[str, ...] = ()            # links with IPv6 routes learned from router advertisements
    ipv6: bool = True                         # the kernel has IPv6 (not booted with ipv6.disable=1)
    pod_ports: tuple[str, ...] = ()           # the veths on kbr0 but obr0's: one per pod
    learned_pods: tuple = ()                  # GuardedPod of each such veth the guard's sets lack
    bridge_scoped: bool = True                # nft can match a frame's bridge (nft_meta_bridge)
    systemd: bool = False                     # systemd runs this host (services can be started)
    xfrm: bool = True                         # the kernel has XFRM (IPsec): /proc/net/xfrm_stat
    ipsec_monitor: bool = True                # ovs-monitor-ipsec is installed (Debian's openvswitch-ipsec)
    strongswan_d: bool = True                 # /etc/strongswan.d exists (strongSwan reads our file there)
    ipsec_names: bool = True                  # the monitor reads VXLAN/Geneve connection names right
    wireguard: bool = True                    # the kernel has WireGuard (built in, loaded or installed)
    wg_tools: bool = True                     # wireguard-tools' `wg` is installed
    wg_public_key: str | None = None          # the public key of local.wireguard_key (None: no file yet)


@dataclasses.dataclass(frozen=True)
class HostState:
    """Host objects in apply order (desired), or as found (observed), plus facts."""
    objects: tuple[HostObject, ...] = ()
    facts: HostFacts = HostFacts()

    def of(self, *types) -> list:
        return [o for o in self.objects if isinstance(o, types)]


@dataclasses.dataclass(frozen=True)
class HostChange:
    """One host change: `new` for add/modify, `old` for modify/delete."""
    action: str                      # add | modify | delete
    old: HostObject | None = None
    new: HostObject | None = None

    @property
    def obj(self) -> HostObject:
        return self.new if self.new is not None else self.old

    @property
    def kind(self) -> str:
        return self.obj.kind

    @property
    def name(self) -> str:
        if self.action == "modify" and self.old.label != self.new.label:
            return f"{self.old.label} -> {self.new.label}"
        return self.obj.label

    def as_dict(self) -> dict:
        return {"action": self.action, "kind": self.kind, "name": self.name}

    def __str__(self) -> str:
        sign = {"add": "+", "delete": "-", "modify": "~"}[self.action]
        return f"{sign} {self.kind} {self.name}"
