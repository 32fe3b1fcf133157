"""plan, apply, teardown and their guarantees (ownership, idempotence, exit codes) against a real
ovsdb-server + ovs-vswitchd (dummy datapath)."""
import json
import os
import re

import pytest

from ovs_mesh.ovs.desired import peer_port_name
from tests.helpers import need, run_cli, sandbox_config, wait_for, write_config


def cli(ovs, data, *args):
    path = write_config(os.path.join(ovs.rundir, "config.yaml"), data)
    return run_cli("--config", path, *args)


def apply_ok(ovs, data, *extra):
    r = cli(ovs, data, "apply", "--json", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def ofport(ovs, name):
    return int(ovs.vsctl("get", "Interface", name, "ofport").strip())


def trace(ovs, flow):
    return ovs.appctl("ofproto/trace", "obr0", flow)


def snapshot(ovs):
    """What a user would compare: the OVSDB layout and every flow (no stats)."""
    show = re.sub(r"ovs_version: .*", "", ovs.vsctl("show"))
    ext = ovs.vsctl("--columns=name,external_ids", "list", "Bridge") + ovs.vsctl(
        "--columns=name,external_ids", "list", "Port")
    flows = {}
    for br in ovs.vsctl("list-br").split():
        flows[br] = sorted(ovs.ofctl("--no-stats", "dump-flows", br).splitlines())
    return show, ext, flows


MODES = [(m, t) for m in ("flow", "port", "stp") for t in ("vxlan", "gre", "geneve")]


@pytest.mark.parametrize("mode,tunnel", MODES, ids=[f"{m}-{t}" for m, t in MODES])
def test_apply_builds_mesh(underlay, mode, tunnel):
    ovs = underlay
    data = sandbox_config(ovs, 3, tunnel=tunnel, mode=mode)
    result = apply_ok(ovs, data)
    assert result["ovsdb_transactions"] == 1 and not result["problems"]
    assert ovs.vsctl("get", "Bridge", "obr0", "fail_mode").strip() == "secure"
    ports = set(ovs.vsctl("list-ports", "obr0").split())
    dst = "10.244.3.7"
    if mode == "flow":
        assert ports == {f"obr0-{tunnel}"}
        assert ovs.vsctl("get", "Interface", f"obr0-{tunnel}", "type").strip() == tunnel
        out = trace(ovs, f"in_port=LOCAL,icmp,nw_src=10.244.1.5,nw_dst={dst}")
        assert "set_field:192.168.56.13->tun_dst" in out
        assert "tnl_push" in out and "dst=192.168.56.13" in out.split("Datapath actions:")[1]
        # from a known peer, to the local subnet: delivered to LOCAL (kbr0)
        ok = trace(ovs, "in_port=10,tun_src=192.168.56.12,icmp,nw_src=10.244.2.5,nw_dst=10.244.1.5")
        assert "30. ip,nw_dst=10.244.1.0/24" in ok
        assert not ok.rstrip().endswith("Datapath actions: drop")
        # from an unknown tunnel source: dropped
        bad = trace(ovs, "in_port=10,tun_src=192.168.56.99,icmp,nw_src=10.244.2.5,nw_dst=10.244.1.5")
        assert bad.rstrip().endswith("Datapath actions: drop")
    elif mode == "port":
        p3 = peer_port_name(tunnel, "node-3")
        assert ports == {peer_port_name(tunnel, "node-2"), p3}
        assert ovs.vsctl("get", "Interface", p3, "bfd:enable").strip().strip('"') == "true"
        assert ovs.vsctl("get", "Interface", p3, "options:remote_ip").strip().strip('"') == "192.168.56.13"
        out = trace(ovs, f"in_port=LOCAL,icmp,nw_src=10.244.1.5,nw_dst={dst}")
        assert f"output:{ofport(ovs, p3)}" in out
        assert "dst=192.168.56.13" in out.split("Datapath actions:")[1]
        # from node-2's port but addressed to node-3's subnet: not ours to deliver
        bad = trace(ovs, f"in_port={ofport(ovs, peer_port_name(tunnel, 'node-2'))},icmp,nw_src=10.244.2.5,nw_dst={dst}")
        assert bad.rstrip().endswith("Datapath actions: drop")
        # from a port that is not a peer's: dropped
        ovs.vsctl("add-port", "obr0", "stray0", "--", "set", "interface", "stray0", "type=dummy")
        bad = trace(ovs, f"in_port={ofport(ovs, 'stray0')},icmp,nw_src=10.244.2.5,nw_dst=10.244.1.5")
        assert bad.rstrip().endswith("Datapath actions: drop")
    else:
        assert len(ports) == 2
        assert ovs.vsctl("get", "Bridge", "obr0", "rstp_enable").strip() == "true"
        assert "NORMAL" in ovs.ofctl("dump-flows", "obr0")
    # converged: plan and a second apply change nothing
    assert cli(ovs, data, "plan").stdout.strip() == "plan: no changes (converged)"
    assert apply_ok(ovs, data)["changes"] == []


def durations(ovs):
    out = {}
    for line in ovs.ofctl("dump-flows", "obr0").splitlines():
        m = re.search(r"duration=([\d.]+)s,.*?(table=\d+, )?n_packets.*?(priority=\S+) actions", line)
        if m:
            out[(m.group(2), m.group(3))] = float(m.group(1))
    return out


@pytest.mark.parametrize("mode", ["flow", "port"])
def test_second_apply_changes_nothing(underlay, mode):
    ovs = underlay
    data = sandbox_config(ovs, 3, mode=mode)
    apply_ok(ovs, data)
    before = durations(ovs)
    assert len(before) > 10
    again = apply_ok(ovs, data)
    assert again["changes"] == [] and again["ovsdb_transactions"] == 0 and again["flow_changes"] == 0
    plan = json.loads(cli(ovs, data, "plan", "--json").stdout)
    assert plan["changes"] == []
    after = durations(ovs)
    assert after.keys() == before.keys()
    assert all(after[k] >= before[k] for k in before), "a flow was re-added (duration reset)"
    assert sum(after[k] > before[k] for k in before) == len(before)


@pytest.mark.parametrize("mode", ["flow", "port"])
def test_membership_changes_touch_only_that_node(underlay, mode):
    ovs = underlay
    data = sandbox_config(ovs, 4, mode=mode)
    apply_ok(ovs, data)
    flows0 = set(ovs.ofctl("--no-stats", "dump-flows", "obr0").splitlines())
    # remove node-3
    removed = dict(data, nodes=[n for n in data["nodes"] if n["name"] != "node-3"])
    r = apply_ok(ovs, removed)
    kinds = {(c["action"], c["kind"]) for c in r["changes"]}
    assert all(a == "delete" for a, _ in kinds)
    flows1 = set(ovs.ofctl("--no-stats", "dump-flows", "obr0").splitlines())
    gone = flows0 - flows1
    assert flows1 <= flows0 and gone and all("192.168.56.13" in f or "10.244.3.0" in f or "in_port=" in f for f in gone)
    assert not any("192.168.56.13" in f or "10.244.3.0/24" in f for f in flows1)
    if mode == "port":
        assert peer_port_name("vxlan", "node-3") not in ovs.vsctl("list-ports", "obr0").split()
        assert [c["name"] for c in r["changes"] if c["kind"] == "port"] == [peer_port_name("vxlan", "node-3")]
    else:
        assert len(gone) == 4
    # change node-4's IP: its tunnel moves
    moved = dict(removed, nodes=[dict(n, ip="192.168.56.20") if n["name"] == "node-4" else n
                                 for n in removed["nodes"]])
    r = apply_ok(ovs, moved)
    got = sorted((c["action"], c["kind"]) for c in r["changes"])
    if mode == "flow":   # out flows rewritten in place, the two tun_src filters replaced
        assert got == [("add", "flow")] * 2 + [("delete", "flow")] * 2 + [("modify", "flow")] * 2
    else:                # the port's remote_ip changes; its ofport and so every flow stay
        assert got == [("modify", "port")]
    flows2 = ovs.ofctl("--no-stats", "dump-flows", "obr0")
    assert "192.168.56.14" not in flows2
    if mode == "flow":
        assert "set_field:192.168.56.20->tun_dst" in flows2 and "tun_src=192.168.56.20" in flows2
    else:
        port = peer_port_name("vxlan", "node-4")
        assert ovs.vsctl("get", "Interface", port, "options:remote_ip").strip().strip('"') == "192.168.56.20"
    # add node-5: only its state is added
    added = dict(moved, nodes=moved["nodes"] + [{"name": "node-5", "ip": "192.168.56.15", "subnet": "10.244.5.0/24"}])
    before = set(ovs.ofctl("--no-stats", "dump-flows", "obr0").splitlines())
    r = apply_ok(ovs, added)
    assert all(c["action"] == "add" for c in r["changes"])
    after = set(ovs.ofctl("--no-stats", "dump-flows", "obr0").splitlines())
    assert before <= after
    assert r["flow_changes"] == 4
    assert r["ovsdb_transactions"] == (0 if mode == "flow" else 1)


def test_foreign_state_untouched_by_apply_and_teardown(underlay):
    ovs = underlay
    ovs.vsctl("add-br", "br-foreign", "--", "set", "bridge", "br-foreign", "datapath_type=dummy",
              "external_ids:owner=someone")
    ovs.ofctl("add-flow", "br-foreign", "cookie=0x42,priority=7,udp,actions=drop")
    data = sandbox_config(ovs, 3)
    apply_ok(ovs, data)
    # someone else's port, flow and external_ids key on our bridge
    ovs.vsctl("add-port", "obr0", "theirs0", "--", "set", "interface", "theirs0", "type=dummy",
              "--", "set", "port", "theirs0", "external_ids:owner=someone")
    ovs.vsctl("set", "Bridge", "obr0", "external_ids:note=keep-me")
    ovs.ofctl("add-flow", "obr0", "cookie=0x42,table=5,priority=9,tcp,actions=drop")
    foreign_before = snapshot(ovs)[2]["br-foreign"]
    assert apply_ok(ovs, data)["changes"] == []
    r = run_cli("--config", os.path.join(ovs.rundir, "config.yaml"), "teardown")
    assert r.returncode == 0, r.stderr
    assert snapshot(ovs)[2]["br-foreign"] == foreign_before
    assert ovs.vsctl("get", "Bridge", "br-foreign", "external_ids:owner").strip().strip('"') == "someone"
    # obr0 is kept for its other users, with only their things on it
    assert ovs.vsctl("list-ports", "obr0").split() == ["theirs0"]
    flows = ovs.ofctl("--no-stats", "dump-flows", "obr0")
    assert "cookie=0x42" in flows and "0x6f76736d" not in flows
    # not ours any more: only the mark that we created it and left it to them
    eids = ovs.vsctl("--columns=external_ids", "list", "Bridge", "obr0")
    assert "ovs-mesh" not in eids.replace("ovs-mesh-left=bridge", "")
    assert ovs.vsctl("get", "Bridge", "obr0", "external_ids:note").strip().strip('"') == "keep-me"


@pytest.mark.parametrize("mode", ["flow", "port"])
def test_teardown_leaves_nothing(underlay, mode):
    ovs = underlay
    data = sandbox_config(ovs, 3, mode=mode)
    apply_ok(ovs, data)
    r = cli(ovs, data, "teardown")
    assert r.returncode == 0, r.stderr
    assert "obr0" not in ovs.vsctl("list-br").split()
    for table in ("Bridge", "Port", "Interface"):
        assert "ovs-mesh" not in ovs.vsctl("--columns=external_ids", "list", table)
    assert ovs.vsctl("list-br").split() == ["br-phy"]
    # idempotent
    assert cli(ovs, data, "teardown").returncode == 0


def test_refuses_foreign_bridge_named_obr0(underlay):
    ovs = underlay
    ovs.vsctl("add-br", "obr0", "--", "set", "bridge", "obr0", "datapath_type=dummy")
    before = snapshot(ovs)
    r = cli(ovs, sandbox_config(ovs, 3), "apply")
    assert r.returncode == 1 and "not created by ovs-mesh" in r.stderr
    assert snapshot(ovs) == before


def test_status_and_trace_cli(underlay):
    ovs = underlay
    data = sandbox_config(ovs, 3, mode="port")
    apply_ok(ovs, data)
    r = cli(ovs, data, "status", "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["converged"] and [p["name"] for p in st["peers"]] == ["node-2", "node-3"]
    assert all(p["ofport"] >= 100 for p in st["peers"]) and st["flows"] > 0
    r = cli(ovs, data, "trace", "10.244.1.5", "10.244.2.9")
    assert r.returncode == 0 and "192.168.56.12" in r.stdout
    r = cli(ovs, data, "trace", "10.244.1.5", "not-an-ip")
    assert r.returncode == 2 and "DST: not-an-ip" in r.stderr


def test_failed_interface_is_reported(underlay):
    """A tunnel OVS cannot create (another bridge already has a flow-based VXLAN port) is an error."""
    ovs = underlay
    ovs.vsctl("add-br", "br-other", "--", "set", "bridge", "br-other", "datapath_type=dummy",
              "--", "add-port", "br-other", "vx-other", "--", "set", "interface", "vx-other", "type=vxlan",
              "options:remote_ip=flow", "options:key=flow")
    data = sandbox_config(ovs, 3)
    for _ in range(2):  # the first apply and a later no-change apply both say so
        r = cli(ovs, data, "apply")
        assert r.returncode == 1
        assert "interface obr0-vxlan: OVS failed to create it: could not add network device obr0-vxlan" in r.stderr
    st = json.loads(cli(ovs, data, "status", "--json").stdout)
    assert {p["health"] for p in st["peers"]} == {"error"} and not st["converged"]


def test_tcp_remote(ovs):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ovs.run("ovs-appctl", "-t", os.path.join(ovs.rundir, f"ovsdb-server.{ovs.pid('ovsdb-server')}.ctl"),
            "ovsdb-server/add-remote", f"ptcp:{port}:127.0.0.1")
    data = sandbox_config(ovs, 3)
    data["local"]["ovsdb"] = f"tcp:127.0.0.1:{port}"
    data["local"]["ovs_rundir"] = ovs.rundir
    assert apply_ok(ovs, data)["ovsdb_transactions"] == 1
    assert ovs.vsctl("list-ports", "obr0").split() == ["obr0-vxlan"]
    assert apply_ok(ovs, data)["changes"] == []


@pytest.mark.parametrize("mode", ["flow", "port"])
def test_ssl_remote(tmp_path, mode):
    """ssl: remotes with client certificates (keys made by ovs-pki); in port mode `trace`
    reads the peer's ofport over the same remote, with the configured SSL files."""
    import socket
    import subprocess

    from ovs_mesh.lab.daemons import OvsDaemons

    need("ovs-pki")
    pki = tmp_path / "pki"
    for args in (["init"], ["req+sign", "server", "switch"], ["req+sign", "client", "switch"]):
        subprocess.run(["ovs-pki", f"--dir={pki}", "--force", *args], cwd=tmp_path, check=True,
                       capture_output=True)
    ovs = OvsDaemons(str(tmp_path / "ovs"), dummy=True, ovsdb_args=(
        "--private-key=db:Open_vSwitch,SSL,private_key", "--certificate=db:Open_vSwitch,SSL,certificate",
        "--ca-cert=db:Open_vSwitch,SSL,ca_cert", "--remote=db:Open_vSwitch,Open_vSwitch,manager_options"))
    try:
        ovs.start()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ca = pki / "switchca" / "cacert.pem"
        ovs.vsctl("set-ssl", str(tmp_path / "server-privkey.pem"), str(tmp_path / "server-cert.pem"), str(ca))
        ovs.vsctl("set-manager", f"pssl:{port}:127.0.0.1")
        data = sandbox_config(ovs, 3, mode=mode)
        data["local"].update(ovsdb=f"ssl:127.0.0.1:{port}", ovs_rundir=ovs.rundir,
                             ssl_key=str(tmp_path / "client-privkey.pem"),
                             ssl_cert=str(tmp_path / "client-cert.pem"), ssl_ca=str(ca))
        tries = []   # ovsdb-server picks up the manager from the database asynchronously
        try:
            wait_for(lambda: tries.append(cli(ovs, data, "apply", "--json")) or tries[-1].returncode == 0, 10,
                     "apply over SSL", interval=0.1)
        except AssertionError as e:
            raise AssertionError(f"{e}: {tries[-1].stderr}") from None
        r = tries[-1]
        if mode == "flow":
            assert ovs.vsctl("list-ports", "obr0").split() == ["obr0-vxlan"]
        else:
            peer = peer_port_name("vxlan", "node-2")
            assert peer in ovs.vsctl("list-ports", "obr0").split()
            r = cli(ovs, data, "trace", "10.244.2.5", "10.244.1.5")
            assert r.returncode == 0, r.stderr
            assert r.stdout.startswith(f"trace: in_port={ofport(ovs, peer)},icmp,"), r.stdout
            assert "30. ip,nw_dst=10.244.1.0/24" in r.stdout
            assert "\n    LOCAL\n" in r.stdout   # delivered to the local pods, not dropped
    finally:
        ovs.stop()


def test_flow_mode_tunnel_type_changes_with_one_apply(underlay):
    """Switching cluster.tunnel on a live node: the new tunnel port takes ofport 10 from the old one in
    the same apply (were it given another number, apply would exit 1 with 'ofport 1 is not the requested
    10' and the flows would output to a port that does not exist until a second apply)."""
    ovs = underlay
    for tunnel in ("vxlan", "gre", "geneve", "vxlan"):
        result = apply_ok(ovs, sandbox_config(ovs, 3, tunnel=tunnel, mode="flow"))
        assert result["problems"] == [], result
        assert set(ovs.vsctl("list-ports", "obr0").split()) == {f"obr0-{tunnel}"}
        assert ofport(ovs, f"obr0-{tunnel}") == 10
        out = trace(ovs, "in_port=LOCAL,icmp,nw_src=10.244.1.5,nw_dst=10.244.3.7")
        assert "dst=192.168.56.13" in out.split("Datapath actions:")[1], out
        ok = trace(ovs, "in_port=10,tun_src=192.168.56.12,icmp,nw_src=10.244.2.5,nw_dst=10.244.1.5")
        assert not ok.rstrip().endswith("Datapath actions: drop"), ok
        assert cli(ovs, sandbox_config(ovs, 3, tunnel=tunnel, mode="flow"), "plan").stdout.strip() \
            == "plan: no changes (converged)"
