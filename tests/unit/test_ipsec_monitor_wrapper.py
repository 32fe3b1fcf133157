"""ovs-mesh's start of ovs-monitor-ipsec (ovs_mesh/agent/data/ovs-monitor-ipsec): strongSwan's
connection names read back to the right OVSDB interface for GRE, VXLAN and Geneve (Open vSwitch
3.1's monitor read `<port>-in` / `<port>-out` for VXLAN and Geneve and tore those connections down),
in the shape and with the version number the monitor's refresh expects; and the fix applied only to
a monitor that still has the greedy pattern."""
import importlib.machinery
import importlib.util
import pathlib
import re

import pytest

from ovs_mesh.ovs.desired import peer_port_name

WRAPPER = pathlib.Path(__file__).resolve().parents[2] / "ovs_mesh/agent/data/ovs-monitor-ipsec"
VX, GNV, GRE = (peer_port_name(t, "node-2") for t in ("vxlan", "geneve", "gre"))
DIGITS = "vx-0123456789"   # a port name of hex digits only (a hash can be)


def wrapper():
    loader = importlib.machinery.SourceFileLoader("ovs_mesh_monitor_wrapper", str(WRAPPER))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


W = wrapper()

# `ipsec status` of a node with a VXLAN, a Geneve and a GRE tunnel (strongSwan 5.9, as the monitor runs it).
STATUS = f"""\
Shunted Connections:
prevent_unencrypted_gre:  dynamic[gre] === dynamic[gre] DROP
prevent_unencrypted_vxlan:  dynamic[udp/4789] === dynamic DROP
Routed Connections:
{VX}-out-1{{4}}:  ROUTED, TRANSPORT, reqid 4
{VX}-out-1{{4}}:   192.168.121.11/32[udp] === 192.168.121.12/32[udp/4789]
{VX}-in-1{{3}}:  ROUTED, TRANSPORT, reqid 3
{VX}-in-1{{3}}:   192.168.121.11/32[udp/4789] === 192.168.121.12/32[udp]
{GNV}-in-2{{5}}:  ROUTED, TRANSPORT, reqid 5
{GRE}-3{{1}}:  ROUTED, TRANSPORT, reqid 1
{DIGITS}-in-12{{9}}:  ROUTED, TRANSPORT, reqid 9
Security Associations (2 up, 0 connecting):
{VX}-out-1[2]: ESTABLISHED 4 seconds ago, 192.168.121.11[node-1]...192.168.121.12[node-2]
{VX}-out-1{{7}}:  INSTALLED, TRANSPORT, reqid 4, ESP SPIs: c1a2b3c4_i c5d6e7f8_o
{GRE}-3[1]: ESTABLISHED 9 seconds ago, 192.168.121.11[node-1]...192.168.121.13[node-3]
"""


@pytest.mark.parametrize("conn, port", [
    (f"{VX}-in-1", VX), (f"{VX}-out-1{{4}}", VX), (f"{VX}-out-12[2]", VX), (f"{GNV}-in-2{{5}}", GNV),
    (f"{GRE}-3", GRE), (f"{GRE}-3{{1}}", GRE), (f"{DIGITS}-in-12{{9}}", DIGITS), ("gre-123-4", "gre-123"),
    ("prevent_unencrypted_vxlan", None), ("Security Associations (2 up, 0 connecting)", None),
    ("-in-1", None), ("Routed Connections", None)])
def test_connection_name_to_interface(conn, port):
    assert W.interface_of(conn) == port


def test_the_greedy_pattern_of_ovs_3_1_reads_vxlan_names_wrong():
    """What the fix is for: Open vSwitch 3.1's pattern takes `<port>-in` for the interface."""
    buggy = re.match(r"(.*)(-in-\d+|-out-\d+|-\d+).*", f"{VX}-in-1{{3}}")
    assert buggy and buggy.group(1) == f"{VX}-in"
    assert W.interface_of(f"{VX}-in-1{{3}}") == VX


def test_status_grouped_by_interface_with_the_version_the_refresh_reads():
    conns = W.parse_status(STATUS)
    assert set(conns) == {VX, GNV, GRE, DIGITS}
    assert set(conns[VX]) == {f"{VX}-out-1{{4}}", f"{VX}-in-1{{3}}", f"{VX}-out-1[2]", f"{VX}-out-1{{7}}"}
    assert conns[GRE][f"{GRE}-3[1]"].startswith(f"{GRE}-3[1]: ESTABLISHED")
    # The monitor's refresh: the connection must start with the interface name, and the first
    # integer after it is the tunnel's version (a connection of another version is torn down).
    versions = {ifname: {int(re.findall(r"\d+", c[len(ifname):])[0]) for c in cs} for ifname, cs in conns.items()}
    assert versions == {VX: {1}, GNV: {2}, GRE: {3}, DIGITS: {12}}
    assert all(c.startswith(ifname) for ifname, cs in conns.items() for c in cs)


MONITOR = '''\
import re
class StrongSwanHelper(object):
    def get_active_conns(self):
        tunnel_name = ["x"]
        {line}
        return "original"
def main():
    return "ran"
'''


@pytest.mark.parametrize("line, fixed", [
    ('m = re.match(r"(.*)(-in-\\d+|-out-\\d+|-\\d+).*", tunnel_name[0])', True),
    ('m = re.match(r"(.*)(-in-\\d+|-out-\\d+)", conn)', False)])
def test_fix_applied_only_to_a_monitor_with_the_greedy_pattern(tmp_path, line, fixed):
    script = tmp_path / "ovs-monitor-ipsec"
    script.write_text(MONITOR.replace("{line}", line))
    module, applied = W.prepare(str(script))
    assert applied is fixed
    assert (module.StrongSwanHelper.get_active_conns is W.get_active_conns) is fixed
    assert module.main() == "ran"   # loaded as a module: its main() runs only when called


def test_fixed_method_reads_ipsec_status(tmp_path):
    ipsec = tmp_path / "ipsec"
    (tmp_path / "status.txt").write_text(STATUS)
    ipsec.write_text(f"#!/bin/sh\n[ \"$1\" = status ] && cat {tmp_path / 'status.txt'}\n")
    ipsec.chmod(0o755)

    class Helper:
        IPSEC = str(ipsec)
    assert W.get_active_conns(Helper()) == W.parse_status(STATUS)
