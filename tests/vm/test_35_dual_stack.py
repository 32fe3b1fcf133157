"""Dual-stack (IPv6 pods over the IPv4 underlay) on the kernel datapath, switched on as an operator
would: `cluster.cidr` and the nodes' subnets edited in every VM's config (with `health.interval`
lowered in the same edit), then check.sh for both families, every peer answering the probes of both,
and with the tunnelled IPv6 packets between node-1 and node-3 dropped, only IPv6 reported unreachable
for that pair.  One edit back to IPv4-only and the shipped health settings, also on failure."""
from __future__ import annotations

from ipaddress import IPv6Network

import pytest

from tests.helpers import wait_for
from tests.vm.test_30_health import (
    FAILURES,
    INTERVAL,
    V6_CIDR,
    WRITE,
    all_reachable,
    blocked_pair_reported,
    probed_since,
    unblock,
)
from tests.vm.vmlab import timed


@pytest.fixture(scope="module")
def dual_stack(vm_lab):
    """Every VM dual-stack with fast probes (one edit of the config); IPv4-only with the health
    settings it had again at the end (one edit), also on failure.  Yields (lab, node -> the VM's
    clock at the edit)."""
    lab = vm_lab
    before = lab.read_config("node-1")
    cluster = before["cluster"]
    dual = []
    for k, n in enumerate(before["nodes"]):
        v4 = n["subnet"] if isinstance(n["subnet"], str) else n["subnet"][0]
        dual.append({**n, "subnet": [v4, str(IPv6Network(f"fd00:10:244:{k}::/64"))]})   # canonical, as ip -6 prints
    try:
        with timed("35. dual-stack (cluster.cidr, the nodes' subnets) and health.interval 2 edited -> converged"):
            since = lab.set_config({"cluster.cidr": f"{cluster['cidr']},{V6_CIDR}", "nodes": dual,
                                    "health.interval": INTERVAL, "health.failures": FAILURES})
            lab.wait_converged(since)
        yield lab, since
    finally:
        unblock(lab)
        with timed("35. IPv4-only and the health settings back -> every agent converged"):
            lab.wait_converged(lab.set_config({"cluster.cidr": cluster["cidr"], "nodes": before["nodes"],
                                               "health": before.get("health")}))
        for node, p in lab.on_all("ip -6 -o addr show dev kbr0 scope global").items():
            assert p.stdout.strip() == "", f"{node}: kbr0 keeps an IPv6 address: {p.stdout}"


def test_dual_stack_on_the_kernel_datapath(dual_stack):
    """check.sh for IPv4 and IPv6 pods; the probes of both families; IPv6 alone blocked, reported."""
    lab, since = dual_stack
    with timed("35. check.sh (dual-stack: IPv4 and IPv6 pods)"):
        out = lab.check().stdout
    assert "summary IPv4:" in out and "summary IPv6:" in out and "IPv4+IPv6 pods" in out, out[-3000:]
    with timed("35. every peer reachable in both families, probed every 2 s"):
        wait_for(lambda: all(probed_since(lab, n, since[n]) for n in lab.nodes)
                 and all_reachable(lab, ["ipv4", "ipv6"]), timeout=3 * INTERVAL + WRITE + 60, interval=1,
                 what="every peer probed since the edit and reachable in both families")
    with timed("35. IPv6 between node-1 and node-3 blocked -> reported -> reachable"):
        # The inner Ethernet type, 28 bytes into the VXLAN packet's UDP header (UDP 8, VXLAN 8, MACs 12).
        blocked_pair_reported(lab, ["ipv4", "ipv6"], ["ipv6"], "udp dport 4789 @th,224,16 0x86dd")
