"""Port numbers and bridge ownership across edits and teardown.

- A peer replaced by another in one edit (port mode): the new port must get the
  number its flows output to, and `plan` must notice when a port is not where
  the flows expect it.
- `teardown` that leaves obr0 to someone else's port: a later `apply` takes the
  bridge back (we created it); a bridge we never created is still refused.
"""
import json

from ovs_mesh.ovs.desired import peer_port_name
from tests.sandbox.test_apply import apply_ok, cli, ofport, sandbox_config, snapshot


def _flows(ovs):
    return ovs.ofctl("--no-stats", "--no-names", "dump-flows", "obr0")


def _output_of(ovs, subnet):
    """The port number table 10 sends `subnet` to."""
    for line in _flows(ovs).splitlines():
        if f"ip,nw_dst={subnet}" in line:
            return int(line.rsplit("output:", 1)[1])
    raise AssertionError(f"no flow to {subnet}:\n{_flows(ovs)}")


def test_replaced_peer_keeps_the_requested_ofport(underlay):
    ovs = underlay
    data = sandbox_config(ovs, 3, mode="port")
    apply_ok(ovs, data)
    old = peer_port_name("vxlan", "node-2")
    assert ofport(ovs, old) == _output_of(ovs, "10.244.2.0/24")
    # one edit: node-2 leaves, node-9 joins (with node-2's old subnet)
    data["nodes"] = [n for n in data["nodes"] if n["name"] != "node-2"] + [
        {"name": "node-9", "ip": "192.168.56.15", "subnet": "10.244.2.0/24"}]
    r = cli(ovs, data, "apply", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    new = peer_port_name("vxlan", "node-9")
    assert old not in ovs.vsctl("list-ports", "obr0").split()
    # the flows send node-9's subnet exactly where node-9's port is
    assert ofport(ovs, new) == _output_of(ovs, "10.244.2.0/24")
    assert ofport(ovs, new) >= 100
    out = ovs.appctl("ofproto/trace", "obr0", "in_port=LOCAL,icmp,nw_src=10.244.1.5,nw_dst=10.244.2.7")
    assert "dst=192.168.56.15" in out.split("Datapath actions:")[1]
    assert cli(ovs, data, "plan").stdout.strip() == "plan: no changes (converged)"
    assert json.loads(cli(ovs, data, "apply", "--json").stdout)["changes"] == []


def _plan_changes(ovs, data):
    r = cli(ovs, data, "plan", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["changes"]


def test_plan_sees_a_port_left_off_its_number(underlay):
    """A port off its requested number (node-9's port requested 100 in the transaction that
    deleted node-2's port 100, so OVS gave it another number) is planned as a modify."""
    ovs = underlay
    data = sandbox_config(ovs, 3, mode="port")
    apply_ok(ovs, data)
    old, new = peer_port_name("vxlan", "node-2"), peer_port_name("vxlan", "node-9")
    assert ofport(ovs, old) == 100
    ovs.vsctl("del-port", old, "--", "add-port", "obr0", new, "--", "set", "interface", new, "type=vxlan",
              "options:remote_ip=192.168.56.15", "bfd:enable=true", "ofport_request=100",
              "--", "set", "port", new, "external_ids:ovs-mesh=tunnel", "external_ids:ovs-mesh-peer=node-9")
    assert ofport(ovs, new) != 100
    data["nodes"] = [n for n in data["nodes"] if n["name"] != "node-2"] + [
        {"name": "node-9", "ip": "192.168.56.15", "subnet": "10.244.2.0/24"}]
    assert {"action": "modify", "kind": "port", "name": new} in _plan_changes(ovs, data)
    r = apply_ok(ovs, data)
    assert not r["problems"]
    assert ofport(ovs, new) == 100 == _output_of(ovs, "10.244.2.0/24")
    assert _plan_changes(ovs, data) == []


def test_plan_sees_flows_that_output_to_someone_elses_port(underlay):
    """Our port could not get its number back because someone else's port holds it:
    the flows must follow our port, never send node-3's traffic to their port."""
    ovs = underlay
    data = sandbox_config(ovs, 3, mode="port")
    apply_ok(ovs, data)
    ours = peer_port_name("vxlan", "node-3")
    was = ofport(ovs, ours)
    ovs.vsctl("set", "Interface", ours, "ofport_request=7")
    ovs.vsctl("add-port", "obr0", "theirs0", "--", "set", "interface", "theirs0", "type=dummy",
              f"ofport_request={was}", "--", "set", "port", "theirs0", "external_ids:owner=someone")
    ovs.vsctl("set", "Interface", ours, f"ofport_request={was}")   # taken: OVS leaves it at 7
    assert ofport(ovs, ours) == 7 and ofport(ovs, "theirs0") == was
    changes = _plan_changes(ovs, data)
    assert {"action": "modify", "kind": "port", "name": ours} in changes
    assert any(c["kind"] == "flow" and c["action"] == "modify" for c in changes), changes
    r = apply_ok(ovs, data)
    assert not r["problems"]
    now = ofport(ovs, ours)
    assert now >= 100 and now != was and _output_of(ovs, "10.244.3.0/24") == now
    assert ofport(ovs, "theirs0") == was
    assert _plan_changes(ovs, data) == []


def test_apply_after_teardown_takes_back_the_bridge_it_left(underlay):
    ovs = underlay
    data = sandbox_config(ovs, 3)
    apply_ok(ovs, data)
    ovs.vsctl("add-port", "obr0", "theirs0", "--", "set", "interface", "theirs0", "type=dummy",
              "--", "set", "port", "theirs0", "external_ids:owner=someone")
    r = cli(ovs, data, "teardown")
    assert r.returncode == 0, r.stderr
    assert ovs.vsctl("list-ports", "obr0").split() == ["theirs0"]
    assert "0x6f76736d" not in _flows(ovs)
    # the bridge no longer says it is in use by ovs-mesh ...
    assert ovs.vsctl("get", "Bridge", "obr0", "external_ids:ovs-mesh", check=False).strip() == ""
    # ... but a later apply takes it back, and their port stays
    r = cli(ovs, data, "apply", "--json")
    assert r.returncode == 0, r.stderr
    assert set(ovs.vsctl("list-ports", "obr0").split()) == {"theirs0", "obr0-vxlan"}
    assert ovs.vsctl("get", "Bridge", "obr0", "external_ids:ovs-mesh").strip().strip('"') == "bridge"
    assert cli(ovs, data, "plan").stdout.strip() == "plan: no changes (converged)"
    # and a teardown once their port is gone removes the bridge
    ovs.vsctl("del-port", "obr0", "theirs0")
    assert cli(ovs, data, "teardown").returncode == 0
    assert "obr0" not in ovs.vsctl("list-br").split()


def test_someone_elses_bridge_is_still_refused_after_our_teardown(underlay):
    """The tag teardown leaves is on our bridge row, not on the name obr0."""
    ovs = underlay
    data = sandbox_config(ovs, 3)
    apply_ok(ovs, data)
    ovs.vsctl("add-port", "obr0", "theirs0", "--", "set", "interface", "theirs0", "type=dummy")
    assert cli(ovs, data, "teardown").returncode == 0
    # they remove the bridge we left them and make an obr0 of their own
    ovs.vsctl("del-br", "obr0", "--", "add-br", "obr0", "--", "set", "bridge", "obr0", "datapath_type=dummy",
              "external_ids:owner=someone")
    before = snapshot(ovs)
    for cmd in ("apply", "teardown"):
        r = cli(ovs, data, cmd)
        assert r.returncode == 1 and "not created by ovs-mesh" in r.stderr, (cmd, r.stderr)
        assert snapshot(ovs) == before
