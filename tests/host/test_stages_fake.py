"""The whole host stage (observe -> desired -> diff -> apply) driven through
HostLayer with in-memory netlink and OVSDB fakes, without root: a netdev node
converges in one apply, a second plan is empty, settings are saved before they
are first written, and teardown puts everything back."""
from __future__ import annotations

import dataclasses
import json
import os

import pytest

from ovs_mesh.host import HostLayer, nft, observe
from ovs_mesh.host.model import ALIAS
from ovs_mesh.host.netlink import Link, Route
from ovs_mesh.pod_guard import observe as guard_observe
from ovs_mesh.pod_guard import table as guard_table
from tests.unit.fakes import FakeOvsdb
from topology.config import parse_config

pytestmark = pytest.mark.unit   # in-memory fakes only: no root, no namespace, no OVS

SYSCTLS = {"net.ipv4.ip_forward": "0", "net.ipv4.conf.all.send_redirects": "1"}


class FakeNetlink:
    """Links, addresses and routes of one imaginary network namespace."""

    def __init__(self):
        self.links: dict[str, Link] = {}
        self.addrs: dict[str, set[str]] = {}
        self.route_set: set[Route] = set()
        self.announced: list[tuple[str, str]] = []

    def add(self, name, mtu=1500, kind=None, alias=None, up=True):
        mac = f"02:00:00:00:00:{len(self.links):02x}"
        self.links[name] = Link(name, len(self.links) + 1, kind, mtu, up, alias, None, mac)
        self.addrs.setdefault(name, set())

    def close(self):
        pass

    def link(self, name):
        return self.links.get(name)

    wait_link = link

    def addresses(self, name):
        return tuple(sorted(self.addrs.get(name, ())))

    def link_with_address(self, ip):
        return next((n for n, a in self.addrs.items() if any(x.split("/")[0] == ip for x in a)), None)

    def routes(self, proto=None, dev=None):
        return sorted(r for r in self.route_set if (proto is None or r.proto == proto)
                      and (dev is None or r.dev == dev))

    def create_bridge(self, name, alias):
        self.add(name, kind="bridge", alias=alias, up=False)

    def set_link(self, name, mtu=None, mac=None, master=None, up=None):
        changes = {k: v for k, v in (("mtu", mtu), ("mac", mac), ("master", master), ("up", up)) if v is not None}
        self.links[name] = dataclasses.replace(self.links[name], **changes)

    def delete_link(self, name):
        self.links.pop(name, None)
        self.addrs.pop(name, None)
        self.route_set = {r for r in self.route_set if r.dev != name}

    def add_address(self, name, cidr):
        self.addrs[name].add(cidr)

    def del_address(self, name, cidr):
        self.addrs.get(name, set()).discard(cidr)

    def replace_route(self, r):
        self.route_set = {x for x in self.route_set if (x.dst, x.metric) != (r.dst, r.metric)} | {r}

    def del_route(self, r):
        self.route_set.discard(r)

    def announce(self, name, ip):
        self.announced.append((name, ip))


@pytest.fixture
def host(tmp_path, monkeypatch):
    root = tmp_path / "proc-sys"
    for name, value in SYSCTLS.items():
        path = root.joinpath(*name.split("."))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    monkeypatch.setattr(observe, "SYSCTL_ROOT", str(root))
    offload = {"eth1": "on"}
    monkeypatch.setattr(observe, "tx_checksum", lambda i: offload.get(i))
    monkeypatch.setattr("ovs_mesh.host.apply.set_tx_checksum", lambda i, v: offload.__setitem__(i, v))
    tables: dict[str, str] = {}
    monkeypatch.setattr(nft, "observe_masquerade", lambda: (tables["inet"], False) if "inet" in tables else None)
    monkeypatch.setattr(nft, "observe_legacy_masquerade", lambda: tables.get("ip"))
    monkeypatch.setattr(nft, "observe_antispoof",
                        lambda: tuple(tables["bridge"].split()) if "bridge" in tables else None)
    monkeypatch.setattr(nft, "bridge_meta_supported", lambda: True)

    def replace(family, ruleset):
        comment = ruleset.split('comment "', 1)[1].split('"', 1)[0]
        tables[family] = comment.split(" ", 2)[2]
    monkeypatch.setattr(nft, "replace", replace)
    monkeypatch.setattr(nft, "remove", lambda family: tables.pop(family, None))
    guard: dict = {}   # the pod guard's table: (parameters, pods); no pods here
    monkeypatch.setattr(guard_table, "read", lambda: guard.get("table"))
    monkeypatch.setattr(guard_table, "replace", lambda b, g, s, pods: guard.__setitem__("table", ((b, g, s), pods)))
    monkeypatch.setattr(guard_table, "update", lambda old, new: guard.__setitem__("table", (guard["table"][0], new)))
    monkeypatch.setattr(guard_table, "remove", lambda: guard.pop("table", None))
    monkeypatch.setattr(guard_observe, "pod_ports", lambda bridge, gateway_port: [])

    nl = FakeNetlink()
    create = nl.create_bridge

    def create_bridge(name, alias):   # the kernel adds the link's sysctls
        create(name, alias)
        conf = root / "net" / "ipv4" / "conf" / name
        conf.mkdir(parents=True)
        (conf / "send_redirects").write_text("1\n")
    nl.create_bridge = create_bridge
    nl.add("lo")
    nl.add("eth1", mtu=9000)
    nl.add_address("eth1", "192.168.56.11/24")
    nl.replace_route(Route("default", "eth1", gateway="192.168.56.1", proto=4))
    nl.replace_route(Route("192.168.56.0/24", "eth1", src="192.168.56.11", scope=253, proto=2))
    nl.add("obr0", up=False)   # made by the Reconciler's OVS side
    cfg = parse_config({
        "cluster": {"cidr": "10.244.0.0/16", "node_prefix": 24},
        "nodes": [{"name": "node-1", "ip": "192.168.56.11", "subnet": "10.244.1.0/24"}],
        "local": {"node": "node-1", "datapath": "netdev", "host": True, "ovsdb": f"unix:{tmp_path}/db.sock",
                  "underlay_bridge": "br-phy", "underlay_interface": "eth1",
                  "cni_conf": str(tmp_path / "cni" / "10-ovs-mesh.conflist")}})
    layer = HostLayer(cfg, FakeOvsdb(netlink=nl), netlink=nl)
    layer.test = {"root": root, "offload": offload, "tables": tables, "tmp": tmp_path}
    yield layer
    layer.close()


def sysctl(host, name):
    return host.test["root"].joinpath(*name.split(".")).read_text().strip()


def test_apply_converges_and_teardown_restores(host):
    nl, t = host.nl, host.test
    mtu = host.config.cluster.pod_mtu(host.underlay_mtu())
    assert mtu == 8950
    changes = host.plan(mtu, teardown=False)
    assert [str(c) for c in changes][:3] == ["+ underlay bridge br-phy", "+ underlay port eth1",
                                              "+ link kbr0 (bridge, mtu 8950)"]
    host.apply(changes, teardown=False)
    assert host.plan(mtu, teardown=False) == []

    assert nl.links["kbr0"].alias == ALIAS and nl.links["kbr0"].mtu == 8950 and nl.links["kbr0"].up
    assert nl.links["obr0"].master == "kbr0" and nl.links["br-phy"].up
    assert nl.addresses("kbr0") == ("10.244.1.1/24",)
    assert nl.addresses("br-phy") == ("192.168.56.11/24",) and nl.addresses("eth1") == ()
    assert nl.announced == [("br-phy", "192.168.56.11")]
    assert [str(r) for r in nl.routes(dev="br-phy")] == ["default via 192.168.56.1 dev br-phy"]
    assert sysctl(host, "net.ipv4.ip_forward") == "1" and sysctl(host, "net.ipv4.conf.kbr0.send_redirects") == "0"
    assert t["offload"] == {"eth1": "off"}
    assert t["tables"] == {"inet": "10.244.0.0/16", "bridge": "10.244.1.0/24 10.244.1.1 obr0"}
    saved = json.loads((t["tmp"] / "ovs-mesh.host.json").read_text())
    assert saved == {"restore": {"sysctl:net.ipv4.ip_forward": "0", "sysctl:net.ipv4.conf.all.send_redirects": "1",
                                 "offload:eth1": "on"},
                     "underlay": {"bridge": "br-phy", "interface": "eth1"}}

    # Someone turns forwarding off and deletes our route: the next plan repairs just that.
    (t["root"] / "net" / "ipv4" / "ip_forward").write_text("0")
    nl.del_route(next(r for r in nl.routes(proto=109)))
    assert [str(c) for c in host.plan(mtu, teardown=False)] == [
        "~ sysctl net.ipv4.ip_forward=0 -> net.ipv4.ip_forward=1",
        "+ route 10.244.0.0/16 dev kbr0 scope link src 10.244.1.1"]
    host.apply(host.plan(mtu, teardown=False), teardown=False)
    assert host.plan(mtu, teardown=False) == []
    assert json.loads((t["tmp"] / "ovs-mesh.host.json").read_text())["restore"]["sysctl:net.ipv4.ip_forward"] == "0"

    host.apply(host.plan(mtu, teardown=True), teardown=True)
    assert host.plan(mtu, teardown=True) == []
    assert "kbr0" not in nl.links and "br-phy" not in nl.links
    assert nl.addresses("eth1") == ("192.168.56.11/24",)
    assert [str(r) for r in nl.routes(dev="eth1", proto=4)] == ["default via 192.168.56.1 dev eth1"]
    assert sysctl(host, "net.ipv4.ip_forward") == "0" and sysctl(host, "net.ipv4.conf.all.send_redirects") == "1"
    assert t["offload"] == {"eth1": "on"} and t["tables"] == {}
    assert not os.path.exists(host.config.local.cni_conf)
    assert not (t["tmp"] / "ovs-mesh.host.json").exists()
