"""The watcher benchmark (bench/watcher.py) in its smallest run, so that it cannot rot: 100 peers,
the flow monitor on and off, a few seconds idle."""
import subprocess
import sys

from tests.helpers import REPO, need


def test_the_watcher_benchmark_measures_the_monitor():
    need("ovs-vswitchd", "ovsdb-server", "ovsdb-client")
    p = subprocess.run([sys.executable, "-m", "bench.watcher", "--sizes", "100", "--seconds", "2", "--no-write"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    rows = [line.split() for line in p.stdout.splitlines() if line.lstrip().startswith("100 ")]
    assert [r[1] for r in rows] == ["on", "off"], p.stdout + p.stderr
    on, off = rows
    assert on[5] != "-" and float(on[5]) < 1.0, p.stdout   # a rewritten flow repaired within a second
    assert off[5] == "-", p.stdout                         # without the monitor: not before the resync
