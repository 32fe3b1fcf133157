"""Bad input: exit 2, the message names field and value, OVS state unchanged."""
import os

import pytest

from tests.helpers import run_cli, sandbox_config, sandbox_ovs, write_config
from tests.sandbox.test_apply import apply_ok, snapshot
from tests.unit.test_config import BAD
from tests.unit.test_config_ipv6 import BAD6, bad6_config


@pytest.fixture(scope="module")
def converged():
    with sandbox_ovs(prefix="ovsm-bad-") as ovs:
        good = sandbox_config(ovs, 3)
        apply_ok(ovs, good)
        yield ovs, good, snapshot(ovs)


@pytest.mark.parametrize("desc,fn,expect", BAD, ids=[b[0] for b in BAD])
def test_bad_config_rejected_and_nothing_changes(converged, desc, fn, expect):
    ovs, good, before = converged
    import copy

    data = copy.deepcopy(good)
    fn(data)
    data["local"]["ovsdb"] = ovs.remote if desc != "bad ovsdb" else data["local"]["ovsdb"]
    path = write_config(os.path.join(ovs.rundir, "bad.yaml"), data)
    for cmd in ("validate", "apply"):
        r = run_cli("--config", path, cmd)
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        for part in expect:
            assert part in r.stderr, f"{part!r} not in {r.stderr!r}"
    assert snapshot(ovs) == before


@pytest.mark.parametrize("text,expect", [
    ("cluster: [1, 2\n", ["bad.yaml", "malformed YAML"]),
    ("- just\n- a list\n", ["must be a mapping"]),
])
def test_malformed_files(converged, text, expect):
    ovs, _, before = converged
    path = os.path.join(ovs.rundir, "bad.yaml")
    with open(path, "w") as f:
        f.write(text)
    r = run_cli("--config", path, "apply")
    assert r.returncode == 2
    for part in expect:
        assert part in r.stderr
    assert snapshot(ovs) == before


def test_bad_cli_arguments(converged):
    ovs, good, before = converged
    path = write_config(os.path.join(ovs.rundir, "good.yaml"), good)
    cases = [
        (["--config", "/nonexistent/ovs-mesh.yaml", "apply"], "/nonexistent/ovs-mesh.yaml"),
        (["--config", path, "--ovsdb", "db.sock", "apply"], "local.ovsdb: db.sock"),
        (["--config", path, "--node", "node-77", "apply"], "local.node: node-77"),
        (["--config", path, "trace", "10.1.1.1", "10.244.2.1"], "SRC: 10.1.1.1"),
        (["--config", path, "frobnicate"], "invalid choice: 'frobnicate'"),
    ]
    for args, expect in cases:
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert expect in r.stderr, (expect, r.stderr)
    assert snapshot(ovs) == before


@pytest.mark.parametrize("desc,fn,expect", BAD6, ids=[b[0] for b in BAD6])
def test_bad_ipv6_config_rejected_and_nothing_changes(converged, desc, fn, expect):
    """Every rejected IPv6 input: `apply` (which validates first) exits 2 naming field and
    value, and the converged node is untouched."""
    ovs, _, before = converged
    data = bad6_config(desc, fn)
    data["local"]["ovsdb"] = ovs.remote
    path = write_config(os.path.join(ovs.rundir, "bad6.yaml"), data)
    r = run_cli("--config", path, "apply")
    assert r.returncode == 2, (r.stdout, r.stderr)
    for part in expect:
        assert part in r.stderr, f"{part!r} not in {r.stderr!r}"
    assert snapshot(ovs) == before
