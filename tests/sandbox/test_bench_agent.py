"""The agent benchmark (bench/agent.py) in its smallest run, so that it cannot rot:
100 peers, flow mode, the file source, one join, next to its floor."""
import re
import subprocess
import sys

from tests.helpers import REPO, need


def test_the_agent_benchmark_measures_a_join():
    need("ovs-vswitchd", "ovsdb-server", "ovsdb-client")
    p = subprocess.run([sys.executable, "-m", "bench.agent", "--sizes", "100", "--modes", "flow",
                        "--sources", "file", "--events", "join", "--repeat", "1", "--only-events",
                        "--output", ""], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    row = next((line for line in p.stdout.splitlines() if line.startswith("file   flow   100 |")), None)
    assert row is not None, p.stdout
    agent, floor = (float(x) for x in re.match(r"file\s+flow\s+100 \|\s+([\d.]+)\s+([\d.]+)", row).groups())
    assert 0 < agent < 60 and 0 < floor < 60, row
