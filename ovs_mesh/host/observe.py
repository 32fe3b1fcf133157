"""The one place that reads the host: netlink, sysctls, ethtool, nftables, the
CNI file, the state file and the underlay bridge's OVSDB rows.  Reads only
what is ours (by tag) and the settings we change; whatever we would have to
write but is not ours is reported in `facts.foreign`, not returned."""
from __future__ import annotations

import glob
import os
import shutil

from topology.model import Config

from ..encryption import wg_device, wg_keys, wireguard
from ..ovs.model import BRIDGE
from ..pod_guard import observe as guard_observe
from ..pod_guard import table as guard_table
from . import cni, nft, services, strongswan
from . import saved as saved_mod
from .desired import accept_ra, wanted_sysctls
from .model import (
    ALIAS,
    KBR,
    ROUTE_PROTO,
    Address,
    AntiSpoof,
    CniFile,
    Enslaved,
    HostFacts,
    HostObject,
    HostRoute,
    HostState,
    Kbr,
    LegacyMasquerade,
    LinkUp,
    Masquerade,
    Offload,
    PodGuard,
    Service,
    StrongswanConf,
    Sysctl,
    Underlay,
    UnderlayBridge,
    UnderlayPort,
    WgDevice,
    WgFilter,
    WgKey,
)
from .netlink import Netlink
from .underlay import tx_checksum

# Where the sysctls are read and written.  A container that is not privileged has /proc/sys
# read-only; the DaemonSet mounts the host's /proc/sys/net writable elsewhere and points this
# there (OVS_MESH_SYSCTL_DIR=/host/proc/sys: docs/install.md).  With hostNetwork, /proc/sys/net
# shows the network namespace of the process that reads it, wherever it is mounted.
SYSCTL_ROOT = os.environ.get("OVS_MESH_SYSCTL_DIR") or "/proc/sys"
DEFAULT_MTU = 1500
RTPROT_KERNEL, RTPROT_RA = 2, 9


def sysctl_path(name: str) -> str:
    return os.path.join(SYSCTL_ROOT, *name.split("."))


def read_sysctl(name: str) -> str | None:
    try:
        with open(sysctl_path(name)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def underlay_of(config: Config, saved: saved_mod.Saved) -> Underlay | None:
    """The netdev underlay from the config, else the one we recorded (teardown after an edit)."""
    l = config.local
    if l.datapath == "netdev" and l.underlay_bridge and l.underlay_interface:
        return Underlay(l.underlay_bridge, l.underlay_interface)
    return saved.underlay


def underlay_mtu(config: Config, nl: Netlink) -> int:
    """The MTU of the interface that carries the node IP (1500 if unknown)."""
    name = config.local.underlay_interface or nl.link_with_address(str(config.local_node.ip))
    link = nl.link(name) if name else None
    return link.mtu if link is not None else DEFAULT_MTU


def read_setting(s: Sysctl | Offload, nl: Netlink) -> str | None:
    """The current value of a setting, None if it does not exist (yet)."""
    if isinstance(s, Sysctl):
        return read_sysctl(s.name)
    return tx_checksum(s.interface) if nl.link(s.interface) is not None else None


def read_underlay_ovs(ovsdb, bridge: str) -> list[HostObject]:
    owned = ovsdb.read(bridge)
    if owned.refusal is not None:
        raise owned.refusal
    out: list[HostObject] = [UnderlayBridge(owned.bridge)] if owned.bridge is not None else []
    return out + [UnderlayPort(p) for p in owned.ports]


def observe_host(config: Config, nl: Netlink, ovsdb) -> HostState:
    """What is ours on this host now, in the order the diff deletes it in reverse."""
    saved = saved_mod.load(config.local.rundir)
    u = underlay_of(config, saved)
    objects: list[HostObject] = []
    foreign: list[str] = []
    ulink = None
    if u is not None:
        if ovsdb is None:
            raise RuntimeError("the netdev underlay needs an OVSDB client")
        objects += read_underlay_ovs(ovsdb, u.bridge)
        ulink = nl.link(u.interface)

    kbr = nl.link(KBR)
    if kbr is not None and kbr.alias != ALIAS:
        foreign.append(f"link {KBR} exists but was not created by ovs-mesh (no alias {ALIAS!r}); "
                       "refusing to touch it")
        kbr = None
    if kbr is not None:
        objects.append(Kbr(kbr.mtu, kbr.mac, kbr.up))
    obr = nl.link(BRIDGE)
    if obr is not None and obr.master == KBR:
        objects.append(Enslaved(BRIDGE, obr.master, obr.up))
    blink = nl.link(u.bridge) if u is not None else None
    if u is not None and blink is not None and blink.up:
        objects.append(LinkUp(u.bridge))

    if kbr is not None:
        objects += [Address(a, KBR) for a in nl.addresses(KBR)]
    underlay_devs = (u.interface, u.bridge) if u is not None else ()
    for dev in underlay_devs:
        objects += [Address(a, dev) for a in nl.addresses(dev)]
    objects += [HostRoute(r) for r in nl.routes(proto=ROUTE_PROTO)]
    for dev in underlay_devs:   # RA-learned routes stay where the kernel keeps them
        objects += [HostRoute(r) for r in nl.routes(dev=dev) if r.proto not in (RTPROT_KERNEL, RTPROT_RA, ROUTE_PROTO)]
    ra_links = tuple(sorted({r.dev for r in nl.routes(proto=RTPROT_RA)})) if "ipv6" in config.cluster.families else ()

    wanted = (*wanted_sysctls(config.cluster.families), *(Sysctl(accept_ra(l), "") for l in ra_links))
    settings: dict = {(s.kind, s.key): s for s in (*wanted, *saved.restore)}
    if u is not None:
        settings.setdefault(("offload", u.interface), Offload(u.interface, ""))
    for s in settings.values():
        cur = read_setting(s, nl)
        if cur is not None:
            objects.append(type(s)(s.key, cur))

    legacy = nft.observe_legacy_masquerade()
    if legacy is not None:
        objects.append(LegacyMasquerade(legacy))
    masq = nft.observe_masquerade()
    if masq is not None:
        objects.append(Masquerade(*masq))
    spoof = nft.observe_antispoof()
    if spoof is not None:
        objects.append(AntiSpoof(*spoof))
    guard = guard_table.read()
    guarded: tuple = ()
    if guard is not None:
        params, guarded = guard
        objects.append(PodGuard(*(params or ("", "", False)), guarded))
    ports, learned = _pods(config, kbr is not None, {p.port for p in guarded})

    path = config.local.cni_conf
    content = cni.read(path)
    if content is not None and not cni.is_ours(content):
        foreign.append(f"local.cni_conf: {path}: exists and was not written by ovs-mesh; "
                       "refusing to overwrite it")
    elif content is not None:
        objects.append(CniFile(path, content))
    wg_public = _observe_wireguard(config, nl, objects, foreign)
    systemd = services.systemd_running()
    strongswan_d = os.path.isdir(os.path.dirname(strongswan.PATH))
    if systemd and strongswan_d:
        conf = strongswan.read(strongswan.PATH)
        if conf is not None and strongswan.is_ours(conf):
            objects.append(StrongswanConf(strongswan.PATH, conf))
        elif conf is not None and config.cluster.encryption == "ipsec":
            foreign.append(f"{strongswan.PATH}: exists and was not written by ovs-mesh; refusing to overwrite it")
    if systemd:
        for unit in (services.IPSEC_UNIT,):
            wanted_unit = config.cluster.encryption == "ipsec"
            if (wanted_unit or unit in saved.started) and services.active(unit):
                objects.append(Service(unit))
    facts = HostFacts(underlay=u, underlay_mtu=ulink.mtu if ulink is not None else None,
                      saved=saved.restore, foreign=tuple(foreign), ra_links=ra_links,
                      ipv6=os.path.isdir(sysctl_path("net.ipv6")), pod_ports=ports, learned_pods=learned,
                      bridge_scoped=nft.bridge_meta_supported(), systemd=systemd,
                      xfrm=os.path.exists(services.XFRM_STAT), ipsec_monitor=os.path.exists(services.MONITOR_SCRIPT),
                      strongswan_d=strongswan_d,
                      ipsec_names=not (systemd and config.cluster.encryption == "ipsec")
                      or services.monitor_reads_names(),
                      wireguard=kernel_has_wireguard(), wg_tools=shutil.which(wg_device.WG) is not None,
                      wg_public_key=wg_public)
    return HostState(tuple(objects), facts)


def kernel_has_wireguard() -> bool:
    """Loaded or built in (/sys/module/wireguard), or installed as a module the kernel loads when
    the first device is made.  Where the modules cannot be seen (the unit's ProtectKernelModules
    hides /lib/modules) the device's creation tells (apply.py)."""
    if os.path.isdir("/sys/module/wireguard"):
        return True
    modules = f"/lib/modules/{os.uname().release}"
    if not os.access(modules, os.R_OK | os.X_OK):
        return True
    return bool(glob.glob(f"{modules}/kernel/drivers/net/wireguard/wireguard.ko*"))


def _observe_wireguard(config: Config, nl: Netlink, objects: list[HostObject], foreign: list[str]) -> str | None:
    """The key file (its public key is returned; a file that is not a key is a ConfigError), the
    device if it is ours (tagged with ALIAS) with its addresses, and the filter table."""
    path = config.local.wireguard_key
    public = None
    if config.cluster.encryption == "wireguard" or os.path.lexists(path):
        public = wg_keys.read_public_key(path)
        if public is not None:
            objects.append(WgKey(path))
    link = nl.link(wireguard.DEVICE)
    if link is not None and link.alias != ALIAS:
        if config.cluster.encryption == "wireguard":
            foreign.append(f"link {wireguard.DEVICE} exists but was not created by ovs-mesh (no alias {ALIAS!r}); "
                           "refusing to touch it")
    elif link is not None:
        try:
            view = wg_device.read(wireguard.DEVICE)
            objects.append(WgDevice(wireguard.DEVICE, view.port, view.public_key, link.mtu, view.peers))
        except wg_device.WgError:   # a device wg cannot read: made again
            objects.append(WgDevice(wireguard.DEVICE, 0, None, link.mtu))
        objects += [Address(a, wireguard.DEVICE) for a in nl.addresses(wireguard.DEVICE)]
    found = nft.observe_wg_filter()
    if found is not None:
        objects.append(WgFilter(*found))
    return public


def _pods(config: Config, have_kbr: bool, guarded: set[str]) -> tuple[tuple[str, ...], tuple]:
    """The veths on kbr0 (one per pod) and, for those the guard's sets lack, the pods learned
    from their namespaces (ovs_mesh.pod_guard.observe)."""
    me = config.node(config.local.node)
    if not have_kbr or me is None or not config.local.pod_guard:
        return (), ()
    ports = guard_observe.pod_ports(KBR, BRIDGE)
    learned = guard_observe.learn([p for p in ports if p["ifname"] not in guarded], me.subnets)
    return tuple(sorted(p["ifname"] for p in ports)), tuple(learned)
