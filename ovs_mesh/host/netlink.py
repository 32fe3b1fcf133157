"""The small netlink client the host layer depends on (pyroute2, current netns).

Reads return plain frozen values; writes are idempotent ensures and deletes
(`replace` for addresses and routes, "already gone" is not an error), so the
host layer can re-run any change set.  Nothing here decides what is ours:
callers pass names and check tags (the link alias, the route protocol).
"""
from __future__ import annotations

import dataclasses
import errno
import socket
import struct
import time
from ipaddress import ip_address, ip_interface

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

IFF_UP = 0x1
MAIN_TABLE = 254
SCOPE_UNIVERSE, SCOPE_LINK = 0, 253
IFA_F_NODAD, IFA_F_PERMANENT = 0x02, 0x80
FAMILIES = (socket.AF_INET, socket.AF_INET6)
IPV6_DEFAULT_METRIC = 1024   # what the kernel gives an IPv6 route added without one


def family_of(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


@dataclasses.dataclass(frozen=True)
class Link:
    name: str
    index: int
    kind: str | None
    mtu: int
    up: bool
    alias: str | None
    master: str | None
    mac: str | None


@dataclasses.dataclass(frozen=True, order=True)
class Route:
    """A route in the main table, as much of it as we set or move.  IPv4 or
    IPv6 by `dst` (an IPv6 default route is "::/0", an IPv4 one "default")."""
    dst: str                 # "10.244.0.0/16", "fd00:10:244::/56", "default" or "::/0"
    dev: str
    gateway: str | None = None
    src: str | None = None
    scope: int = SCOPE_UNIVERSE
    proto: int = 4           # RTPROT_STATIC
    metric: int | None = None

    def __str__(self) -> str:
        s = self.dst + (f" via {self.gateway}" if self.gateway else "") + f" dev {self.dev}"
        if self.scope == SCOPE_LINK and not self.gateway:
            s += " scope link"
        return s + (f" src {self.src}" if self.src else "")

    @property
    def family(self) -> int:
        return family_of(self.dst)


def _gone(e: NetlinkError) -> bool:
    return e.code in (errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL)


class Netlink:
    def __init__(self):
        self.ipr = IPRoute()

    def close(self) -> None:
        self.ipr.close()

    # --- reads -----------------------------------------------------------
    def _index(self, name: str) -> int | None:
        found = self.ipr.link_lookup(ifname=name)
        return found[0] if found else None

    def _names(self) -> dict[int, str]:
        return {m["index"]: m.get("IFLA_IFNAME") for m in self.ipr.get_links()}

    def link(self, name: str) -> Link | None:
        idx = self._index(name)
        if idx is None:
            return None
        try:
            m = self.ipr.get_links(idx)[0]
        except NetlinkError as e:
            if _gone(e):
                return None
            raise
        info = m.get("IFLA_LINKINFO")
        master = m.get("IFLA_MASTER")
        return Link(name=name, index=idx, kind=info.get("IFLA_INFO_KIND") if info else None,
                    mtu=m.get("IFLA_MTU"), up=bool(m["flags"] & IFF_UP),
                    alias=m.get("IFLA_IFALIAS") or None,
                    master=self._names().get(master) if master else None,
                    mac=m.get("IFLA_ADDRESS"))

    def addresses(self, name: str) -> tuple[str, ...]:
        """The addresses of a link as "ip/prefix", sorted: every IPv4 one and
        the permanent global IPv6 ones (not the kernel's link-local fe80::,
        not SLAAC/temporary addresses, which the kernel manages)."""
        idx = self._index(name)
        if idx is None:
            return ()
        out = [f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}" for a in self.ipr.get_addr(family=socket.AF_INET, index=idx)]
        out += [f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}" for a in self.ipr.get_addr(family=socket.AF_INET6, index=idx)
                if a["scope"] == SCOPE_UNIVERSE and (a.get("IFA_FLAGS") or a["flags"]) & IFA_F_PERMANENT]
        return tuple(sorted(out))

    def link_with_address(self, ip: str) -> str | None:
        want = ip_address(ip)
        for a in self.ipr.get_addr(family=family_of(ip)):
            if ip_address(a.get("IFA_ADDRESS")) == want:
                return self._names().get(a["index"])
        return None

    def routes(self, proto: int | None = None, dev: str | None = None) -> list[Route]:
        """IPv4 and IPv6 unicast routes of the main table, optionally filtered."""
        names = self._names()
        out = []
        for family in FAMILIES:
            for r in self.ipr.get_routes(family=family, table=MAIN_TABLE):
                if r["type"] != 1 or (proto is not None and r["proto"] != proto):
                    continue
                oif = names.get(r.get("RTA_OIF"))
                if oif is None or (dev is not None and oif != dev):
                    continue
                default = "default" if family == socket.AF_INET else "::/0"
                dst = f"{r.get('RTA_DST')}/{r['dst_len']}" if r["dst_len"] else default
                out.append(Route(dst=dst, dev=oif, gateway=r.get("RTA_GATEWAY"), src=r.get("RTA_PREFSRC"),
                                 scope=r["scope"], proto=r["proto"], metric=r.get("RTA_PRIORITY")))
        return sorted(out)

    # --- writes ----------------------------------------------------------
    def create_bridge(self, name: str, alias: str) -> None:
        self.create_link(name, "bridge", alias)

    def create_link(self, name: str, kind: str, alias: str) -> None:
        """A link of `kind` (bridge, wireguard) tagged with `alias` (IFLA_IFALIAS).  The alias can
        only be set after creation; if that fails the link is removed again."""
        self.ipr.link("add", ifname=name, kind=kind)
        try:
            self.ipr.link("set", index=self._index(name), ifalias=alias)
        except Exception:
            self.delete_link(name)
            raise

    def set_link(self, name: str, mtu: int | None = None, mac: str | None = None,
                 master: str | None = None, up: bool | None = None) -> None:
        idx = self._index(name)
        if idx is None:
            raise LookupError(f"link {name} does not exist")
        kw: dict[str, object] = {}
        if mtu is not None:
            kw["mtu"] = mtu
        if mac is not None:
            kw["address"] = mac
        if master is not None:
            kw["master"] = self._index(master)
        if kw:
            self.ipr.link("set", index=idx, **kw)
        if up is not None:
            self.ipr.link("set", index=idx, state="up" if up else "down")

    def delete_link(self, name: str) -> None:
        idx = self._index(name)
        if idx is None:
            return
        try:
            self.ipr.link("del", index=idx)
        except NetlinkError as e:
            if not _gone(e):
                raise

    def add_address(self, name: str, cidr: str) -> None:
        """IPv6 addresses are added with IFA_F_NODAD: usable at once (no
        "tentative" second of duplicate detection); they are unique by
        construction (a node's gateway6, or an address moving between links)."""
        i = ip_interface(cidr)
        kw = {"flags": IFA_F_NODAD} if i.version == 6 else {}
        self.ipr.addr("replace", index=self._index(name), address=str(i.ip), prefixlen=i.network.prefixlen, **kw)

    def del_address(self, name: str, cidr: str) -> None:
        idx = self._index(name)
        if idx is None:
            return
        i = ip_interface(cidr)
        try:
            self.ipr.addr("del", index=idx, address=str(i.ip), prefixlen=i.network.prefixlen)
        except NetlinkError as e:
            if not _gone(e):
                raise

    def _route_kw(self, r: Route) -> dict:
        kw = {"dst": "0.0.0.0/0" if r.dst == "default" else r.dst, "oif": self._index(r.dev),
              "table": MAIN_TABLE, "proto": r.proto, "scope": r.scope, "family": r.family}
        if r.gateway:
            kw["gateway"] = r.gateway
        if r.src:
            kw["prefsrc"] = r.src
        if r.metric is not None:
            kw["priority"] = r.metric
        return kw

    def replace_route(self, r: Route) -> None:
        self.ipr.route("replace", **self._route_kw(r))

    def del_route(self, r: Route) -> None:
        if self._index(r.dev) is None:
            return
        try:
            self.ipr.route("del", **self._route_kw(r))
        except NetlinkError as e:
            if not _gone(e):
                raise

    def announce(self, name: str, ip: str) -> None:
        """Send a gratuitous ARP (IPv4) or an unsolicited neighbour
        advertisement (IPv6) for `ip` from link `name`, so that neighbours
        re-learn the MAC after an address moved between links."""
        link = self.link(name)
        if link is None or not link.mac:
            return
        mac = bytes.fromhex(link.mac.replace(":", ""))
        if family_of(ip) == socket.AF_INET6:
            _unsolicited_na(name, link.index, ip, mac)
            return
        addr = socket.inet_aton(ip)
        frame = (b"\xff" * 6 + mac + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
                 + mac + addr + b"\x00" * 6 + addr)
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((name, 0))
            s.send(frame)

    def wait_link(self, name: str, timeout: float = 5.0) -> Link | None:
        deadline = time.monotonic() + timeout
        while True:
            link = self.link(name)
            if link is not None or time.monotonic() > deadline:
                return link
            time.sleep(0.05)


def _unsolicited_na(name: str, index: int, ip: str, mac: bytes) -> None:
    """RFC 4861 7.2.6: an NA to all-nodes, Override set, with the target
    link-layer address option; the kernel fills in the ICMPv6 checksum."""
    na = (struct.pack("!BBHI", 136, 0, 0, 0x20000000) + ip_address(ip).packed
          + struct.pack("!BB", 2, 1) + mac)
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, name.encode())
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        s.bind((ip, 0, 0, 0))
        s.sendto(na, ("ff02::1", 0, 0, index))
