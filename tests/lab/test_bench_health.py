"""The peer health benchmark's driver runs end to end at a tiny size (namespaces, the prober,
an idle agent on a sandbox OVS), so that it cannot rot between two runs of the real thing."""
import subprocess
import sys

from tests.helpers import REPO, need


def test_bench_health_smallest_case():
    need("ip", "ovs-vswitchd", "ovsdb-server", root=True)
    p = subprocess.run([sys.executable, "-m", "bench.health", "--sizes", "10", "--seconds", "2", "--no-write"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "10 peers: probing" in p.stdout and "'reachable'" in p.stdout and "'unreachable'" not in p.stdout
