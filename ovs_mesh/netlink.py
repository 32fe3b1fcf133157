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
from ipaddress import IPv4Interface

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

IFF_UP = 0x1
MAIN_TABLE = 254
SCOPE_UNIVERSE, SCOPE_LINK = 0, 253


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
    """An IPv4 route in the main table, as much of it as we set or move."""
    dst: str                 # "10.244.0.0/16" or "default"
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
        """IPv4 addresses of a link as "ip/prefix", sorted."""
        idx = self._index(name)
        if idx is None:
            return ()
        return tuple(sorted(f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}"
                            for a in self.ipr.get_addr(family=socket.AF_INET, index=idx)))

    def link_with_address(self, ip: str) -> str | None:
        for a in self.ipr.get_addr(family=socket.AF_INET):
            if a.get("IFA_ADDRESS") == ip:
                return self._names().get(a["index"])
        return None

    def routes(self, proto: int | None = None, dev: str | None = None) -> list[Route]:
        """IPv4 unicast routes of the main table, optionally filtered."""
        names = self._names()
        out = []
        for r in self.ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE):
            if r["type"] != 1 or (proto is not None and r["proto"] != proto):
                continue
            oif = names.get(r.get("RTA_OIF"))
            if oif is None or (dev is not None and oif != dev):
                continue
            dst = f"{r.get('RTA_DST')}/{r['dst_len']}" if r["dst_len"] else "default"
            out.append(Route(dst=dst, dev=oif, gateway=r.get("RTA_GATEWAY"), src=r.get("RTA_PREFSRC"),
                             scope=r["scope"], proto=r["proto"], metric=r.get("RTA_PRIORITY")))
        return sorted(out)

    # --- writes ----------------------------------------------------------
    def create_bridge(self, name: str, alias: str) -> None:
        """A Linux bridge tagged with `alias` (IFLA_IFALIAS).  The alias can
        only be set after creation; if that fails the link is removed again."""
        self.ipr.link("add", ifname=name, kind="bridge")
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
        kw = {}
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
        i = IPv4Interface(cidr)
        self.ipr.addr("replace", index=self._index(name), address=str(i.ip), prefixlen=i.network.prefixlen)

    def del_address(self, name: str, cidr: str) -> None:
        idx = self._index(name)
        if idx is None:
            return
        i = IPv4Interface(cidr)
        try:
            self.ipr.addr("del", index=idx, address=str(i.ip), prefixlen=i.network.prefixlen)
        except NetlinkError as e:
            if not _gone(e):
                raise

    def _route_kw(self, r: Route) -> dict:
        kw = {"dst": "0.0.0.0/0" if r.dst == "default" else r.dst, "oif": self._index(r.dev),
              "table": MAIN_TABLE, "proto": r.proto, "scope": r.scope}
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
        """Send a gratuitous ARP for `ip` from link `name`, so that neighbours
        re-learn the MAC after an address moved between links."""
        link = self.link(name)
        if link is None or not link.mac:
            return
        mac = bytes.fromhex(link.mac.replace(":", ""))
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
