"""Dual-stack (IPv6 pods over the IPv4 underlay) on the kernel datapath, switched on as an operator
would (`cluster.cidr` and the nodes' subnets edited in every VM's config, with the fast probes of
test_30_health): check.sh for both families, every peer answering the probes of both, and with the
tunnelled IPv6 packets between node-1 and node-3 dropped, only IPv6 reported unreachable for that
pair.  Back to IPv4-only at the end, also on failure."""
from __future__ import annotations

from ipaddress import IPv6Network

from tests.helpers import wait_for
from tests.vm.test_30_health import (
    INTERVAL,
    V6_CIDR,
    WRITE,
    all_reachable,
    blocked_pair_reported,
    fast_probes,  # noqa: F401 (the module's fixture, used by name)
)
from tests.vm.vmlab import timed


def test_3_dual_stack(fast_probes):  # noqa: F811
    """IPv6 pods over the IPv4 underlay on the kernel datapath: check.sh for both families and
    the probes of each family."""
    lab = fast_probes
    before = lab.read_config("node-1")
    cluster = before["cluster"]
    dual = []
    for k, n in enumerate(before["nodes"]):
        v4 = n["subnet"] if isinstance(n["subnet"], str) else n["subnet"][0]
        dual.append({**n, "subnet": [v4, str(IPv6Network(f"fd00:10:244:{k}::/64"))]})   # canonical, as ip -6 prints
    try:
        with timed("35. dual-stack: cluster.cidr and the nodes' subnets edited -> every agent converged"):
            lab.wait_converged(lab.set_config({"cluster.cidr": f"{cluster['cidr']},{V6_CIDR}", "nodes": dual}))
        with timed("35. check.sh (dual-stack: IPv4 and IPv6 pods)"):
            out = lab.check().stdout
        assert "summary IPv4:" in out and "summary IPv6:" in out and "IPv4+IPv6 pods" in out, out[-3000:]
        with timed("35. dual-stack: every peer reachable in both families"):
            wait_for(lambda: all_reachable(lab, ["ipv4", "ipv6"]), timeout=3 * INTERVAL + WRITE + 30, interval=1,
                     what="every peer reachable in both families")
        with timed("35. dual-stack: IPv6 between node-1 and node-3 blocked -> reported -> reachable"):
            # The inner Ethernet type, 28 bytes into the VXLAN packet's UDP header (UDP 8, VXLAN 8, MACs 12).
            blocked_pair_reported(lab, ["ipv4", "ipv6"], ["ipv6"], "udp dport 4789 @th,224,16 0x86dd")
    finally:
        with timed("35. IPv4-only again -> every agent converged"):
            lab.wait_converged(lab.set_config({"cluster.cidr": cluster["cidr"], "nodes": before["nodes"]}))
    for node, p in lab.on_all("ip -6 -o addr show dev kbr0 scope global").items():
        assert p.stdout.strip() == "", f"{node}: kbr0 keeps an IPv6 address: {p.stdout}"
