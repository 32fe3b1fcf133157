"""bench.pod_guard in its smallest run, so that the driver cannot rot: both chains really run, every
"with" pod is in the guard's sets and no "without" pod is (the benchmark checks it), nothing written."""
import subprocess
import sys

from tests.helpers import REPO
from tests.lab.conftest import need_lab_tools


def test_pod_guard_benchmark_smallest_run():
    need_lab_tools()
    p = subprocess.run([sys.executable, "-m", "bench.pod_guard", "--rounds", "2", "--no-output"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "the guard adds" in p.stdout and "wrote" not in p.stdout
