"""The python-ovs parser benchmark (bench/ovs_json.py) in its smallest run, so that it cannot rot:
both variants really parse with the parser they name, and every apply converges."""
import json
import subprocess
import sys

from tests.helpers import REPO, need


def test_the_parser_benchmark_compares_both_parsers(tmp_path):
    need("ovs-vswitchd", "ovsdb-server", "ovsdb-client")
    out = tmp_path / "ovs-json.json"
    p = subprocess.run([sys.executable, "-m", "bench.ovs_json", "--modes", "port", "--sizes", "10", "--repeat", "1",
                        "--output", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    result = json.load(open(out))["results"][0]
    for variant in ("c", "pure"):
        run = result["runs"][variant][0]
        assert run["cold"]["changes"] > 0 and run["noop"]["changes"] == 0, run
        assert run["cold"]["plan_changes_after"] == run["noop"]["plan_changes_after"] == 0, run
    assert "| port | 10 | noop | connect |" in p.stdout
