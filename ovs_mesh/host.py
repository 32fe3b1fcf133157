"""Host networking for `local.host: true`: kbr0, routes, sysctls, masquerade,
the CNI file and (netdev datapath) the underlay bridge — mirroring the OVS side:
desired items (a function of config, pod MTU and underlay facts), one read of
what exists (only what is ours), a diff into Changes, and an apply that
executes exactly those changes, idempotently.

What is ours, and how we know it:
  kbr0          IFLA_IFALIAS "ovs-mesh" (an untagged kbr0 is refused / left alone)
  routes        route protocol ROUTE_PROTO (109, "ovs-mesh"; unused in rt_protos)
  sysctls       the previous value of every sysctl we changed is kept in
                <ovs rundir>/ovs-mesh.host.json; teardown restores only those
  masquerade    the nftables table `ip ovs_mesh`, whole
  CNI file      its "name": "ovs-mesh"
  underlay      OVS rows tagged external_ids ovs-mesh=underlay; the addresses
                and routes of its internal device move back on teardown
`send_redirects` is set on kbr0 and on `all`: the kernel ORs the two, so kbr0
alone has no effect while all=1 (the default).
"""
from __future__ import annotations

import dataclasses
import json
import os

from topology.config import ConfigError
from ovs_mesh.files import write_atomic
from topology.model import Config

from . import cni, masquerade
from .netlink import SCOPE_LINK, Link, Netlink, Route
from .state import BRIDGE, OvsState
from .state import HostChange as Change
from .underlay import UnderlayOvs, desired_ovs, set_tx_checksum, tx_checksum

KBR = cni.BRIDGE_NAME
ALIAS = "ovs-mesh"
ROUTE_PROTO = 109
STATE_FILE = "ovs-mesh.host.json"
DEFAULT_MTU = 1500
SYSCTL_ROOT = "/proc/sys"


@dataclasses.dataclass(frozen=True)
class Item:
    """One unit of host state: compared by (kind, key) and whole value."""
    kind: str
    key: str
    value: object
    label: str

    @property
    def id(self) -> tuple[str, str]:
        return (self.kind, self.key)


@dataclasses.dataclass(frozen=True)
class KbrSpec:
    mtu: int
    mac: str
    up: bool = True


def gateway_mac(gw) -> str:
    """A stable MAC for kbr0 (0a:58 + the gateway IP, as ovn-kubernetes does),
    so the bridge keeps its address when pods (ports) come and go."""
    return "0a:58:" + ":".join(f"{b:02x}" for b in gw.packed)


def diff_items(want: list[Item], have: list[Item]) -> list[Change]:
    have_by = {i.id: i for i in have}
    want_ids = {i.id for i in want}
    out = []
    for w in want:
        h = have_by.get(w.id)
        if h is None:
            out.append(Change("add", w.kind, w.label, new=w))
        elif h.value != w.value:
            label = w.label if h.label == w.label else f"{h.label} -> {w.label}"
            out.append(Change("modify", w.kind, label, old=h, new=w))
    out += [Change("delete", h.kind, h.label, old=h) for h in reversed(have) if h.id not in want_ids]
    return out


# --- sysctls -----------------------------------------------------------------
def _sysctl_path(name: str) -> str:
    return os.path.join(SYSCTL_ROOT, *name.split("."))


def read_sysctl(name: str) -> str | None:
    try:
        with open(_sysctl_path(name)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def write_sysctl(name: str, value: str) -> None:
    with open(_sysctl_path(name), "w") as f:
        f.write(value)


def wanted_sysctls() -> dict[str, str]:
    return {"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.send_redirects": "0",
            f"net.ipv4.conf.{KBR}.send_redirects": "0"}


def _restorable(setting: str) -> bool:
    """Settings on links we create and delete are not worth restoring."""
    return f".{KBR}." not in setting


class HostLayer:
    def __init__(self, config: Config, ovsdb=None):
        """`ovsdb`: the OvsdbClient to share for the underlay bridge's rows."""
        self.config = config
        self.nl = Netlink()
        self.ovs = UnderlayOvs(ovsdb)

    def close(self) -> None:
        self.ovs.close()
        self.nl.close()

    # --- state file ------------------------------------------------------
    def _state_path(self, config: Config) -> str:
        return os.path.join(config.local.rundir, STATE_FILE)

    def _load_state(self, config: Config) -> dict:
        try:
            with open(self._state_path(config)) as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            return {}

    def _save_state(self, config: Config, data: dict) -> None:
        path = self._state_path(config)
        if not data.get("restore") and not data.get("underlay"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            return
        write_atomic(path, json.dumps(data, indent=1, sort_keys=True))

    # --- facts -------------------------------------------------------------
    def underlay_mtu(self) -> int:
        l = self.config.local
        name = l.underlay_interface
        if not name:
            try:
                name = self.nl.link_with_address(str(self.config.local_node.ip))
            except LookupError:
                name = None
        link = self.nl.link(name) if name else None
        return link.mtu if link is not None else DEFAULT_MTU

    def _underlay(self, config: Config) -> tuple[str, str] | None:
        l = config.local
        if l.datapath == "netdev" and l.underlay_bridge and l.underlay_interface:
            return l.underlay_bridge, l.underlay_interface
        u = self._load_state(config).get("underlay")
        return (u["bridge"], u["interface"]) if u else None

    def _kbr0(self, teardown: bool) -> Link | None:
        link = self.nl.link(KBR)
        if link is not None and link.alias != ALIAS:
            if teardown:
                return None
            raise RuntimeError(f"link {KBR} exists but was not created by ovs-mesh "
                               f"(no alias {ALIAS!r}); refusing to touch it")
        return link

    # --- plan ------------------------------------------------------------
    def plan(self, pod_mtu: int, teardown: bool) -> list[Change]:
        """Host changes that would make this node match its config."""
        config = self.config
        changes: list[Change] = []  # underlay OVS rows first; their deletes last
        late: list[Change] = []
        underlay = self._underlay(config)
        if underlay is not None:
            bridge, iface = underlay
            ulink = self.nl.link(iface)
            if ulink is None and not teardown:
                raise ConfigError([f"local.underlay_interface: {iface}: no such network interface"])
            want = desired_ovs(bridge, iface, ulink.mtu if ulink else None)
            for c in self.ovs.changes(bridge, OvsState() if teardown else want):
                (late if c.action == "delete" else changes).append(c)
        want, have = self._items(config, pod_mtu, teardown, underlay)
        return changes + diff_items(want, have) + late

    def _items(self, config: Config, pod_mtu: int, teardown: bool, underlay) -> tuple[list[Item], list[Item]]:
        want: list[Item] = []
        have: list[Item] = []
        restore = self._load_state(config).get("restore", {})

        # Links.
        kbr = self._kbr0(teardown)
        if kbr is not None:
            have.append(Item("link", KBR, KbrSpec(kbr.mtu, kbr.mac, kbr.up),
                             f"{KBR} (bridge, mtu {kbr.mtu})"))
        if not teardown:
            node = config.local_node
            gw = node.gateway
            want.append(Item("link", KBR, KbrSpec(pod_mtu, gateway_mac(gw)), f"{KBR} (bridge, mtu {pod_mtu})"))
            if config.local.datapath != "dummy":  # dummy: obr0 has no kernel device
                want.append(Item("link", BRIDGE, (KBR, True), f"{BRIDGE} master {KBR}"))
                obr = self.nl.link(BRIDGE)
                if obr is not None and obr.master == KBR:
                    have.append(Item("link", BRIDGE, (obr.master, obr.up), f"{BRIDGE} master {KBR}"))
            if underlay is not None:
                want.append(Item("link", underlay[0], True, f"{underlay[0]} up"))
                blink = self.nl.link(underlay[0])
                if blink is not None and blink.up:
                    have.append(Item("link", underlay[0], True, f"{underlay[0]} up"))

        # Addresses: kbr0's gateway; the underlay's, moved to/from the bridge.
        if kbr is not None:
            have += [Item("address", a, KBR, f"{a} dev {KBR}") for a in self.nl.addresses(KBR)]
        if not teardown:
            a = f"{config.local_node.gateway}/{config.cluster.node_prefix}"
            want.append(Item("address", a, KBR, f"{a} dev {KBR}"))
        moved_routes: list[Route] = []
        if underlay is not None:
            bridge, iface = underlay
            target = iface if teardown else bridge
            for dev in (iface, bridge):
                for a in self.nl.addresses(dev):
                    have.append(Item("address", a, dev, f"{a} dev {dev}"))
                    want.append(Item("address", a, target, f"{a} dev {target}"))
                moved_routes += [r for r in self.nl.routes(dev=dev) if r.proto not in (2, ROUTE_PROTO)]

        # Routes: ours (by protocol), and the underlay's moved ones.
        for r in self.nl.routes(proto=ROUTE_PROTO):
            have.append(Item("route", r.dst, r, str(r)))
        if not teardown:
            gw = str(config.local_node.gateway)
            r = Route(dst=str(config.cluster.cidr), dev=KBR, src=gw, scope=SCOPE_LINK, proto=ROUTE_PROTO)
            want.append(Item("route", r.dst, r, str(r)))
        for r in moved_routes:
            key = f"{r.dst} via {r.gateway} metric {r.metric}"
            target = dataclasses.replace(r, dev=underlay[1] if teardown else underlay[0])
            have.append(Item("route", key, r, str(r)))
            if not any(w.id == ("route", key) for w in want):
                want.append(Item("route", key, target, str(target)))

        # Settings we change and restore: sysctls, the underlay's tx offload.
        settings = {} if teardown else {f"sysctl:{k}": v for k, v in wanted_sysctls().items()}
        if underlay is not None and not teardown and tx_checksum(underlay[1]) is not None:
            settings[f"offload:{underlay[1]}"] = "off"
        if teardown:
            settings = dict(restore)
        for key, value in settings.items():
            kind = key.split(":", 1)[0]  # sysctl | offload
            cur = self._read_setting(key)
            if cur is not None or not teardown:
                want.append(Item(kind, key, value, _setting_label(key, value)))
            if cur is not None:
                have.append(Item(kind, key, cur, _setting_label(key, cur)))

        # Masquerade.
        cidr = str(config.cluster.cidr)
        if not teardown and config.cluster.masquerade:
            want.append(Item("masquerade", masquerade.TABLE, cidr, f"{cidr} (nft table ip {masquerade.TABLE})"))
        cur = masquerade.observe()
        if cur is not None:
            have.append(Item("masquerade", masquerade.TABLE, cur, f"{cur or '?'} (nft table ip {masquerade.TABLE})"))

        # CNI config.
        path = config.local.cni_conf
        content = cni.read(path)
        if content is not None and not cni.is_ours(content):
            if not teardown:
                raise RuntimeError(f"local.cni_conf: {path}: exists and was not written by ovs-mesh; "
                                   "refusing to overwrite it")
            content = None
        if content is not None:
            have.append(Item("cni", path, content, path))
        if not teardown:
            want.append(Item("cni", path, cni.render(config.local_node.subnet, pod_mtu), path))
        return want, have

    def _read_setting(self, key: str) -> str | None:
        kind, name = key.split(":", 1)
        if kind == "sysctl":
            return read_sysctl(name)
        if kind == "offload":
            return tx_checksum(name) if self.nl.link(name) is not None else None
        raise ValueError(key)

    def _write_setting(self, key: str, value: str) -> None:
        kind, name = key.split(":", 1)
        if kind == "sysctl":
            write_sysctl(name, value)
        else:
            set_tx_checksum(name, value)

    # --- apply -------------------------------------------------------------
    def apply(self, changes: list[Change], teardown: bool) -> None:
        """Execute exactly `changes`, in an order that keeps the node reachable:
        create before use, move routes before the addresses they leave, delete last."""
        config = self.config
        by = lambda kind, *actions: [c for c in changes if c.kind == kind and c.action in actions]  # noqa: E731
        state = self._load_state(config)
        underlay = self._underlay(config)
        ovs_add = by("underlay", "add", "modify")
        if ovs_add:
            self.ovs.apply(underlay[0], ovs_add)
        if underlay is not None and not teardown:
            state["underlay"] = {"bridge": underlay[0], "interface": underlay[1]}
            self._save_state(config, state)
        for c in by("link", "add", "modify"):
            self._ensure_link(c.new, config)
        for c in by("address", "add", "modify"):
            self.nl.add_address(c.new.value, c.new.key)
        for c in by("route", "add", "modify"):
            self.nl.replace_route(c.new.value)
        for c in by("route", "delete"):
            self.nl.del_route(c.old.value)
        for c in by("address", "modify", "delete"):
            self.nl.del_address(c.old.value, c.old.key)
        for c in by("address", "modify"):  # moved: tell the neighbours the new MAC
            self.nl.announce(c.new.value, c.new.key.split("/")[0])
        restore = state.setdefault("restore", {})
        for c in by("sysctl", "add", "modify") + by("offload", "add", "modify"):
            key = c.new.key
            if teardown:
                self._write_setting(key, c.new.value)
                restore.pop(key, None)
                continue
            if c.old is not None and _restorable(key):
                restore.setdefault(key, c.old.value)
            self._save_state(config, state)  # record before changing
            self._write_setting(key, c.new.value)
        if teardown:  # settings already back at their old value need no restore
            for key in [k for k in restore if self._read_setting(k) in (None, restore[k])]:
                restore.pop(key)
        self._save_state(config, state)
        for c in changes:
            if c.kind == "masquerade":
                masquerade.remove() if c.action == "delete" else masquerade.ensure(c.new.value)
            elif c.kind == "cni":
                cni.remove(c.old.key) if c.action == "delete" else cni.write(c.new.key, c.new.value)
        for c in by("link", "delete"):
            if c.old.key == KBR and self._kbr0(teardown=True) is not None:
                self.nl.delete_link(KBR)
        ovs_del = by("underlay", "delete")
        if ovs_del:
            self.ovs.apply(underlay[0], ovs_del)
        if teardown and underlay is not None and self.nl.link(underlay[0]) is None:
            state.pop("underlay", None)
            self._save_state(config, state)

    def _ensure_link(self, item: Item, config: Config) -> None:
        if item.key == KBR:
            spec: KbrSpec = item.value
            if self._kbr0(teardown=False) is None:
                self.nl.create_bridge(KBR, ALIAS)
            self.nl.set_link(KBR, mtu=spec.mtu, mac=spec.mac, up=spec.up)
            return
        # obr0 / the underlay bridge: OVS internal devices; wait for vswitchd.
        if self.nl.wait_link(item.key) is None:
            raise RuntimeError(f"OVS internal device {item.key} did not appear")
        if item.key == BRIDGE:
            self.nl.set_link(BRIDGE, master=KBR, up=True)
        else:
            self.nl.set_link(item.key, up=True)


def _setting_label(key: str, value: str) -> str:
    kind, name = key.split(":", 1)
    return f"{name}={value}" if kind == "sysctl" else f"{name} tx-checksumming {value}"
