"""`trace`, `status`, `plan` and `apply` of dual-stack and IPv6-only nodes through the CLI,
against a real sandbox OVS.

One sandbox OVS for the module (node-1, peers node-2 and node-3) with an underlay of
both families on br-phy; each case applies a config, checks what a user would read,
and tears it down.  The trace cases are what a user runs: `ovs-mesh trace
fd00:10:244:3::5` (from this node's gateway6) ends with the tunnel destination
(`tun_ipv6_dst`/`tun_dst`) or the peer's port; a packet from node-2's pod is
delivered; an address no node has is dropped.
"""
import json
import os

import pytest

from ovs_mesh.ovs.desired import peer_port_name
from tests.helpers import base_config_v6, run_cli, sandbox_ovs, write_config
from tests.sandbox.conftest import PEER_IPS, setup_underlay

V6 = {"node-2": "fd00:56::12", "node-3": "fd00:56::13"}
V4 = {"node-2": "192.168.56.12", "node-3": "192.168.56.13"}
CASES = [("dual", "ipv4", "flow"), ("dual", "ipv4", "port"), ("ipv6", "ipv6", "flow"), ("ipv6", "ipv6", "port")]


@pytest.fixture(scope="module")
def node1():
    with sandbox_ovs(prefix="v6k-sb-") as ovs:
        setup_underlay(ovs, "192.168.56.11", PEER_IPS)
        ovs.appctl("netdev-dummy/ip6addr", "br-phy", "fd00:56::11/64")
        ovs.appctl("ovs/route/add", "fd00:56::/64", "br-phy")
        for i, ip in enumerate(V6.values()):
            ovs.appctl("tnl/neigh/set", "br-phy", ip, f"aa:55:aa:55:01:{i:02x}")
        yield ovs


@pytest.fixture(params=CASES, ids=[f"{f}-{u}-underlay-{m}" for f, u, m in CASES])
def applied(request, node1):
    family, underlay, mode = request.param
    data = base_config_v6(3, family=family, underlay=underlay, mode=mode)
    data["local"]["ovsdb"] = node1.remote
    path = write_config(os.path.join(node1.rundir, "v6k-config.yaml"), data)

    def cli(*args):
        return run_cli("--config", path, *args)

    r = cli("apply", "--json")
    try:
        assert r.returncode == 0, r.stderr
        yield cli, json.loads(r.stdout), request.param, node1
    finally:
        run_cli("--config", path, "teardown")


def result_line(r) -> str:
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.rstrip().splitlines()[-1]


def to_peer(cli, mode, underlay, ovs, peer, *args):
    """`trace ARGS` leaves for `peer`: its tunnel destination (flow mode) or port (port mode)."""
    r = cli("trace", *args)
    line = result_line(r)
    addr = (V6 if underlay == "ipv6" else V4)[peer]
    if mode == "flow":
        field = "tun_ipv6_dst" if underlay == "ipv6" else "tun_dst"
        assert line == f"result: tunnel to {peer}, {field}={addr}", r.stdout
    else:
        name = peer_port_name("vxlan", peer)
        port = int(ovs.vsctl("get", "Interface", name, "ofport"))
        assert line == f"result: tunnel to {peer} through port {name} (ofport {port}, remote_ip {addr})", r.stdout
    assert "tnl_push" in r.stdout and f"dst={addr}," in r.stdout.split("Datapath actions:")[1], r.stdout
    return r


def test_trace_ipv6(applied):
    cli, _, (family, underlay, mode), ovs = applied
    r = to_peer(cli, mode, underlay, ovs, "node-3", "fd00:10:244:3::5")   # from this node's gateway6
    assert r.stdout.startswith("trace: in_port=LOCAL,icmp6,ipv6_src=fd00:10:244:1::1,ipv6_dst=fd00:10:244:3::5\n")
    to_peer(cli, mode, underlay, ovs, "node-2", "--proto", "tcp", "fd00:10:244:1::5", "fd00:10:244:2::9")
    r = to_peer(cli, mode, underlay, ovs, "node-2", "--proto", "nd", "fd00:10:244:1::5", "fd00:10:244:2::9")
    assert "nd_target=fd00:10:244:2::9" in r.stdout.splitlines()[0]
    r = cli("trace", "fd00:10:244:2::5", "fd00:10:244:1::7")   # from node-2's pod, through its tunnel
    assert result_line(r) == "result: delivered to this node (LOCAL, kbr0)"
    if mode == "flow":
        tun = "tun_ipv6_src=fd00:56::12" if underlay == "ipv6" else "tun_src=192.168.56.12"
        assert tun in r.stdout.splitlines()[0]
    assert result_line(cli("trace", "fd00:10:244:1::5", "fd00:10:244:9::1")) == "result: dropped in table 10"
    if family == "dual":   # IPv4 too, over the same underlay
        to_peer(cli, mode, underlay, ovs, "node-3", "10.244.3.5")
    else:
        r = cli("trace", "10.244.3.5")
        assert r.returncode == 2 and "DST: 10.244.3.5: an IPv4 address, but node node-1 has no IPv4 pod subnet" \
            in r.stderr


def test_status_plan_and_apply_show_both_families(applied):
    cli, first_apply, (family, underlay, mode), _ = applied
    fams = {c.get("family") for c in first_apply["changes"]}
    assert "ipv6" in fams and ("ipv4" in fams) == (family == "dual"), first_apply["changes"]
    assert first_apply["families"] == (["ipv4", "ipv6"] if family == "dual" else ["ipv6"])
    assert first_apply["underlay_family"] == underlay
    assert cli("plan").stdout.strip() == "plan: no changes (converged)"
    st = json.loads(cli("status", "--json").stdout)
    assert st["converged"] and st["underlay_family"] == underlay
    assert st["subnet6"] == "fd00:10:244:1::/64"
    assert [p["subnets"] for p in st["peers"]] == [
        ([f"10.244.{i}.0/24"] if family == "dual" else []) + [f"fd00:10:244:{i}::/64"] for i in (2, 3)]
    text = cli("status").stdout
    pods = "ipv4 + ipv6: 10.244.1.0/24, fd00:10:244:1::/64" if family == "dual" else "ipv6: fd00:10:244:1::/64"
    ip = "fd00:56::11" if underlay == "ipv6" else "192.168.56.11"
    assert f"pods {pods}; underlay {underlay}: {ip}" in text, text
