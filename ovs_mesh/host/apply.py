"""Executes host changes: one applier per kind, run in an order that keeps the
node reachable: the underlay bridge's rows and links first, settings (the
previous value saved before the first write; kbr0's disable_ipv6=0 before its
IPv6 address), addresses and routes (a route moves before the address it
leaves), nftables (a new table before the old one goes) and the CNI file, then
kbr0's deletion and the underlay rows' deletion last.  Every step is an idempotent
ensure or delete, so an interrupted apply is finished by the next one."""
from __future__ import annotations

import dataclasses
import errno
import logging

from pyroute2.netlink.exceptions import NetlinkError

from ovsdb_client.rows import BridgeChange, PortChange
from topology.config import ConfigError
from topology.errors import Problem, Transient
from topology.model import Config

from ..encryption import wg_device, wg_keys
from ..pod_guard import table as guard_table
from . import cni, nft, services, strongswan
from . import saved as saved_mod
from .model import (
    ALIAS,
    KBR,
    Address,
    AntiSpoof,
    CniFile,
    Enslaved,
    HostChange,
    HostRoute,
    Kbr,
    LegacyMasquerade,
    LinkUp,
    Masquerade,
    Offload,
    PodGuard,
    Service,
    StrongswanConf,
    Sysctl,
    UnderlayBridge,
    UnderlayPort,
    WgDevice,
    WgFilter,
    WgKey,
)
from .netlink import Netlink
from .observe import read_setting, sysctl_path, underlay_of
from .underlay import set_tx_checksum

LOG = logging.getLogger(__name__)


def write_sysctl(name: str, value: str) -> None:
    with open(sysctl_path(name), "w") as f:
        f.write(value)


def _pick(changes: list[HostChange], types, *actions: str) -> list[HostChange]:
    return [c for c in changes if isinstance(c.obj, types) and c.action in actions]


class HostApplier:
    def __init__(self, config: Config, nl: Netlink, ovsdb):
        self.config, self.nl, self.ovsdb = config, nl, ovsdb
        self.rundir = config.local.rundir

    def apply(self, changes: list[HostChange], teardown: bool) -> None:
        saved = saved_mod.load(self.rundir)
        u = underlay_of(self.config, saved)
        underlay = (UnderlayBridge, UnderlayPort)
        self.underlay_ovs(u.bridge if u else None, _pick(changes, underlay, "add", "modify"))
        if u is not None and not teardown and saved.underlay != u:
            saved = dataclasses.replace(saved, underlay=u)
            saved_mod.save(self.rundir, saved)
        for c in _pick(changes, (Kbr, Enslaved, LinkUp), "add", "modify"):
            self.link(c.new)
        for c in _pick(changes, WgKey, "add"):
            wg_keys.ensure_private_key(c.new.path)
        for c in _pick(changes, WgDevice, "add", "modify"):
            self.wireguard(c)
        saved = self.settings(_pick(changes, (Sysctl, Offload), "add", "modify"), saved, teardown)
        self.addresses_and_routes(_pick(changes, Address, "add", "modify", "delete"),
                                  _pick(changes, HostRoute, "add", "modify", "delete"))
        for c in changes:
            if isinstance(c.obj, (Masquerade, LegacyMasquerade, AntiSpoof)):
                self.nft(c)
            elif isinstance(c.obj, WgFilter):
                nft.remove(nft.WG_FAMILY, nft.WG_TABLE) if c.action == "delete" else \
                    nft.replace(nft.WG_FAMILY, nft.wg_filter_ruleset(c.new.device, c.new.tunnel), nft.WG_TABLE)
            elif isinstance(c.obj, PodGuard):
                self.pod_guard(c)
            elif isinstance(c.obj, CniFile):
                cni.remove(c.old.path) if c.action == "delete" else cni.write(c.new.path, c.new.content)
            elif isinstance(c.obj, StrongswanConf):
                strongswan.remove(c.old.path) if c.action == "delete" else strongswan.write(c.new.path, c.new.content)
        self.services(_pick(changes, Service, "add", "delete"))
        if _pick(changes, Kbr, "delete") and self._own_kbr0():
            self.nl.delete_link(KBR)
        for c in _pick(changes, WgDevice, "delete"):
            if self._own(c.old.name):
                self.nl.delete_link(c.old.name)
        for c in _pick(changes, WgKey, "delete"):
            wg_keys.remove_private_key(c.old.path)
        self.underlay_ovs(u.bridge if u else None, _pick(changes, underlay, "delete"))
        if teardown and u is not None and self.nl.link(u.bridge) is None:
            saved_mod.save(self.rundir, dataclasses.replace(saved_mod.load(self.rundir), underlay=None))

    # --- one applier per kind ---------------------------------------------
    def services(self, changes: list[HostChange]) -> None:
        """Start a wanted unit (recorded as ours first: a crash between the two leaves it to
        stop later, never a unit of ours unrecorded); stop one we started, then forget it."""
        for c in changes:
            saved = saved_mod.load(self.rundir)
            unit = c.obj.name
            if c.action == "add":
                saved_mod.save(self.rundir, dataclasses.replace(saved, started=tuple({*saved.started, unit})))
                services.start(unit)
            else:
                services.stop(unit, self.config.local.rundir)
                saved_mod.save(self.rundir, dataclasses.replace(
                    saved, started=tuple(u for u in saved.started if u != unit)))

    def underlay_ovs(self, bridge: str | None, changes: list[HostChange]) -> None:
        """The underlay bridge's rows, in one transaction of the OVSDB client we were given."""
        if not changes:
            return
        rows = [(BridgeChange if isinstance(c.obj, UnderlayBridge) else PortChange)(
                    c.action, c.obj.spec.name, old=c.old.spec if c.old else None, new=c.new.spec if c.new else None)
                for c in changes]
        self.ovsdb.apply(bridge, rows)

    def link(self, obj: Kbr | Enslaved | LinkUp) -> None:
        if isinstance(obj, Kbr):
            if not self._own_kbr0():
                self.nl.create_bridge(KBR, ALIAS)
            self.nl.set_link(KBR, mtu=obj.mtu, mac=obj.mac, up=obj.up)
            return
        # obr0 / the underlay bridge: OVS internal devices; wait for vswitchd.
        if self.nl.wait_link(obj.name) is None:
            raise Transient(f"OVS internal device {obj.name} did not appear")
        if isinstance(obj, Enslaved):
            self.nl.set_link(obj.name, master=obj.master, up=obj.up)
        else:
            self.nl.set_link(obj.name, up=True)

    def addresses_and_routes(self, addresses: list[HostChange], routes: list[HostChange]) -> None:
        """New addresses, then routes (they may need the address as source), then
        the old addresses: a moved route is in place before its address leaves."""
        for c in addresses:
            if c.new is not None:
                self.nl.add_address(c.new.dev, c.new.cidr)
        for c in routes:
            self.nl.replace_route(c.new.route) if c.new is not None else self.nl.del_route(c.old.route)
        for c in addresses:
            if c.old is not None:
                self.nl.del_address(c.old.dev, c.old.cidr)
        for c in addresses:
            if c.action == "modify":  # moved: tell the neighbours the new MAC
                self.nl.announce(c.new.dev, c.new.cidr.split("/")[0])

    def settings(self, changes: list[HostChange], saved: saved_mod.Saved, teardown: bool) -> saved_mod.Saved:
        """Write settings; record each previous value before the first write of
        it, and on teardown forget those that are back at their saved value."""
        restore = {(s.kind, s.key): s for s in saved.restore}
        for c in changes:
            key = (c.kind, c.new.key)
            if teardown:
                self._write(c.new)
                restore.pop(key, None)
                continue
            if c.old is not None and c.old.restorable:
                restore.setdefault(key, c.old)
            saved_mod.save(self.rundir, saved.with_restore(restore.values()))  # record before changing
            self._write(c.new)
        if teardown:
            restore = {k: s for k, s in restore.items() if read_setting(s, self.nl) not in (None, s.value)}
        saved = saved.with_restore(restore.values())
        saved_mod.save(self.rundir, saved)
        return saved

    def _write(self, s: Sysctl | Offload) -> None:
        if isinstance(s, Sysctl):
            write_sysctl(s.name, s.value)
        else:
            set_tx_checksum(s.interface, s.value)

    def nft(self, c: HostChange) -> None:
        if isinstance(c.obj, LegacyMasquerade):   # only ever deleted
            family, ruleset = nft.LEGACY_MASQ_FAMILY, None
        elif isinstance(c.obj, Masquerade):
            family = nft.MASQ_FAMILY
            ruleset = c.new and nft.masquerade_ruleset(c.new.cidrs.split(), KBR if c.new.redirects_off else None)
        else:
            family = nft.ANTISPOOF_FAMILY
            scoped = nft.bridge_meta_supported()
            if c.new and not scoped:
                LOG.warning("the kernel cannot match a frame's bridge (nft_meta_bridge): the anti-spoofing "
                            "rules hold for every Linux bridge's ports here, not only %s's", KBR)
            ruleset = c.new and nft.antispoof_ruleset(c.new.subnet, c.new.gateway, c.new.gateway_port, KBR,
                                                      scoped=scoped)
        nft.remove(family) if c.action == "delete" else nft.replace(family, ruleset)

    def pod_guard(self, c: HostChange) -> None:
        """The guard's table: replaced whole when it is new or its parameters change (with
        every pod in the same transaction), else only the pods that differ."""
        old, new = c.old, c.new
        if new is None:
            guard_table.remove()
        elif old is None or (old.bridge, old.gateway_port, old.scoped) != (new.bridge, new.gateway_port, new.scoped):
            guard_table.replace(new.bridge, new.gateway_port, new.scoped, new.pods)
        else:
            guard_table.update(old.pods, new.pods)

    def wireguard(self, c: HostChange) -> None:
        """The device made (tagged) if missing, then its port, private key (by the file's path:
        the key never passes through ovs-mesh here) and peers set in one `wg set`, its MTU, up."""
        new = c.new
        if not self._own(new.name):
            try:
                self.nl.create_link(new.name, "wireguard", ALIAS)
            except NetlinkError as e:
                if e.code != errno.EOPNOTSUPP:
                    raise
                raise ConfigError([Problem("cluster.encryption", "wireguard", "this kernel cannot make a "
                                           "WireGuard device (no wireguard module)")]) from None
        have = c.old.peers if c.old is not None else ()
        wg_device.configure(new.name, new.port, self.config.local.wireguard_key, new.peers, have)
        self.nl.set_link(new.name, mtu=new.mtu, up=True)

    def _own(self, name: str) -> bool:
        link = self.nl.link(name)
        return link is not None and link.alias == ALIAS

    def _own_kbr0(self) -> bool:
        return self._own(KBR)

