"""Sandbox helpers; the `ovs` fixture (a private OVS per test) is in tests/conftest.py.

The underlay for dummy tunnels: bridge br-phy with the node IP, a route to
the underlay subnet and static neighbours for the peers, so that
`ofproto/trace` of a tunnelled packet ends in tnl_push.
"""
from ovs_mesh.daemons import OvsDaemons
from tests.conftest import ovs  # noqa: F401  alias: the fixture moved to tests/conftest.py; older imports still work


def setup_underlay(ovs: OvsDaemons, local_ip: str, peer_ips, prefix: int = 24):
    ovs.vsctl("add-br", "br-phy", "--", "set", "bridge", "br-phy", "datapath_type=dummy",
              "--", "add-port", "br-phy", "phy0", "--", "set", "interface", "phy0", "type=dummy")
    ovs.appctl("netdev-dummy/ip4addr", "br-phy", f"{local_ip}/{prefix}")
    net = ".".join(local_ip.split(".")[:3]) + f".0/{prefix}"
    ovs.appctl("ovs/route/add", net, "br-phy")
    for i, ip in enumerate(peer_ips):
        ovs.appctl("tnl/neigh/set", "br-phy", ip, f"aa:55:aa:55:{i >> 8 & 0xff:02x}:{i & 0xff:02x}")
