"""IPv6 and dual-stack labs with real packets.

Two labs, each built once (`lab up` from the command line, 2 nodes, 1 pod each) and
used by both tests: dual-stack pods over an IPv4 underlay (flow mode, VXLAN) and
IPv6-only pods over an IPv6 underlay (port mode, Geneve).  `lab check` must pass for
every family the lab has (ping, no NAT, unfragmented full-MTU packets, TCP); the
agents restarted under a 0.1 s IPv6 ping between pods on different nodes lose
nothing.  Figures are printed (pytest -s shows them).
"""
import json
import secrets
import time
from ipaddress import ip_address

import pytest

from ovs_mesh.lab import build
from ovs_mesh.lab.record import LabState
from tests.helpers import run_cli
from tests.lab.conftest import need_lab_tools
from tests.lab.ping import ns, restart_agents_under_ping
from topology.model import IPV6_UNDERLAY_EXTRA, OVERHEAD

UNDERLAY_MTU = 1500      # the lab's veths
HEADER = {"ipv4": 28, "ipv6": 48}
LABS = [  # (mode, tunnel, --ip-family, --underlay, families the pods get)
    ("flow", "vxlan", "dual", "ipv4", ("ipv4", "ipv6")),
    ("port", "geneve", "ipv6", "ipv6", ("ipv6",)),
]


@pytest.fixture(scope="module", params=LABS, ids=[f"{m}-{t}-{f}-over-{u}" for m, t, f, u, _ in LABS])
def lab(request):
    need_lab_tools()
    mode, tunnel, family, underlay, families = request.param
    name = "s" + secrets.token_hex(2)
    try:
        t0 = time.monotonic()
        args = ["--mode", mode, "--tunnel", tunnel, "--ip-family", family]
        if family != "ipv6":      # the IPv6-only lab relies on the default: an IPv6 underlay
            args += ["--underlay", underlay]
        run_cli("lab", "up", "--name", name, "--nodes", "2", "--pods-per-node", "1", *args,
                check=True, timeout=300)
        print(f"\n{mode}+{tunnel} {family} pods over an {underlay} underlay: lab up {time.monotonic() - t0:.1f}s")
        yield LabState.load(name), request.param
    finally:
        build.down(name, progress=lambda s: None)


def _version(family):
    return 4 if family == "ipv4" else 6


def test_check_proves_every_family(lab):
    st, (mode, tunnel, _, underlay, families) = lab
    assert {ip_address(n.ip).version for n in st.nodes} == {_version(underlay)}
    if underlay == "ipv6":   # no IPv4 address on the nodes at all: the tunnels can only be IPv6
        for n in st.nodes:
            assert ns(n.ns, "ip", "-4", "-o", "addr", "show", "scope", "global").stdout == ""
    t0 = time.monotonic()
    p = run_cli("lab", "check", "--name", st.name, "--json", timeout=300)
    report = json.loads(p.stdout)
    print(f"lab check {time.monotonic() - t0:.1f}s")
    bad = [c for c in report["pod_to_pod"] + report["node_to_pod"] + report["tcp"] if not c["ok"]]
    assert p.returncode == 0 and report["summary"]["ok"], bad
    assert tuple(report["families"]) == families
    pod_mtu = UNDERLAY_MTU - OVERHEAD[tunnel] - (IPV6_UNDERLAY_EXTRA if underlay == "ipv6" else 0)
    for pod in st.pods:
        assert ns(pod["ns"], "cat", "/sys/class/net/eth0/mtu").stdout.strip() == str(pod_mtu)
        assert sorted(ip_address(ip).version for ip in pod["ips"]) == [_version(f) for f in families]
    for family in families:
        s = report["families"][family]
        print(f"{family}: {s['checks'] - s['failed']}/{s['checks']} ({s['pod_to_pod']} pod->pod, "
              f"{s['node_to_pod']} node->pod, {s['tcp_transfers']} TCP), unfragmented {s['df_size']}-byte "
              f"pings at pod MTU {pod_mtu}: {'PASS' if s['ok'] else 'FAIL'}")
        assert s["ok"] and (s["pod_to_pod"], s["node_to_pod"], s["tcp_transfers"]) == (2, 2, 2)
        assert s["df_size"] == pod_mtu - HEADER[family]
        for c in [c for c in report["pod_to_pod"] if c["family"] == family]:
            assert ip_address(c["dst_ip"]).version == _version(family)
            assert c["source_seen"] == c["src_ip"]            # the receiver saw the sender's own address
            assert c["df"] and c["over_refused"], c            # full size through, one byte more refused
        for t in [t for t in report["tcp"] if t["family"] == family]:
            print(f"  tcp {t['src']} -> {t['dst']} ({t['dst_ip']}): {t['received']} bytes, {t['mbit_s']} Mbit/s")
            assert t["received"] >= 10 * 1024 * 1024


def test_agent_restarts_under_ipv6_ping_lose_nothing(lab):
    st, _ = lab
    a, b = [next(p for p in st.pods if p["node"] == n.name) for n in st.nodes[:2]]
    b6 = next(ip for ip in b["ips"] if ip_address(ip).version == 6)
    sent, received = restart_agents_under_ping(st, a, b6)
    assert received == sent
