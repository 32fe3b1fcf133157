"""Sandbox helpers; the `ovs` fixture (a private OVS per test) is in tests/conftest.py.

The underlay for dummy tunnels: bridge br-phy with the node IP, a route to
the underlay subnet and static neighbours for the peers, so that
`ofproto/trace` of a tunnelled packet ends in tnl_push.
"""
import pytest

from ovs_mesh.lab.daemons import OvsDaemons

# The peers of tests.helpers.sandbox_config's nodes (node-2 ... node-N).
PEER_IPS = [f"192.168.56.{10 + i}" for i in range(2, 8)]


def setup_underlay(ovs: OvsDaemons, local_ip: str, peer_ips, prefix: int = 24):
    ovs.vsctl("add-br", "br-phy", "--", "set", "bridge", "br-phy", "datapath_type=dummy",
              "--", "add-port", "br-phy", "phy0", "--", "set", "interface", "phy0", "type=dummy")
    ovs.appctl("netdev-dummy/ip4addr", "br-phy", f"{local_ip}/{prefix}")
    net = ".".join(local_ip.split(".")[:3]) + f".0/{prefix}"
    ovs.appctl("ovs/route/add", net, "br-phy")
    for i, ip in enumerate(peer_ips):
        ovs.appctl("tnl/neigh/set", "br-phy", ip, f"aa:55:aa:55:{i >> 8 & 0xff:02x}:{i & 0xff:02x}")


@pytest.fixture
def underlay(ovs):
    """The sandbox OVS with the underlay of node-1 (192.168.56.11) and its peers."""
    setup_underlay(ovs, "192.168.56.11", PEER_IPS)
    return ovs
