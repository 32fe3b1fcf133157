"""Edge-case arguments and values (out of range, of the wrong family or type), refused with exit 2."""
import pytest

from tests.helpers import base_config, run_cli, write_config
from topology.errors import SHOW_MAX, show


@pytest.fixture
def config(tmp_path):
    return write_config(str(tmp_path / "c.yaml"), base_config())


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0", "0.5", "1e9"])
def test_agent_resync_bounds(config, value):
    r = run_cli("--config", config, "agent", "--resync", value)
    assert r.returncode == 2 and f"--resync: {float(value)}: must be a number of seconds between 1 and 86400" \
        in r.stderr, r.stderr


@pytest.mark.parametrize("value", ["127.0.0.1:99999", "127.0.0.1:0", "nohost"])
def test_agent_metrics_port(config, value):
    r = run_cli("--config", config, "agent", "--metrics", value)
    assert r.returncode == 2 and f"--metrics: {value}: " in r.stderr, r.stderr


@pytest.mark.parametrize("remote", ["tcp:127.0.0.1:99999", "ssl:h:0", "tcp:h:" + "9" * 5000])
def test_ovsdb_port(config, remote):
    r = run_cli("--config", config, "--ovsdb", remote, "validate")
    assert r.returncode == 2 and "local.ovsdb: " in r.stderr and (
        "port must be between 1 and 65535" in r.stderr), r.stderr
    assert len(r.stderr) < 400


def test_kubernetes_resync_seconds_checked_by_validate(tmp_path):
    data = base_config()
    data["kubernetes"] = {"resync_seconds": float("inf")}
    r = run_cli("--config", write_config(str(tmp_path / "c.yaml"), data), "validate")
    assert r.returncode == 2 and "kubernetes.resync_seconds: inf: must be a number of seconds" in r.stderr


def test_local_file_holding_a_list(config, tmp_path):
    (tmp_path / "l.yaml").write_text("local: [1, 2]\n")
    r = run_cli("--config", config, "--local", str(tmp_path / "l.yaml"), "validate")
    assert r.returncode == 2 and "local: [1, 2]: must be a mapping of local settings" in r.stderr, r.stderr
    assert "local.local" not in r.stderr


@pytest.mark.parametrize("path", ["relative/ovs-mesh", "/usr/bin/x\nExecStartPre=/bin/sh", "/a b", "/a%n"])
def test_install_service_exec_is_one_absolute_path(tmp_path, path):
    r = run_cli("install-service", "--root", str(tmp_path), "--exec", path, "--dry-run")
    assert r.returncode == 2 and "--exec: " in r.stderr, r.stderr
    assert not (tmp_path / "etc").exists()


def test_show_bounds_containers():
    loop: list = []
    loop.append(loop)
    wide = ["x" * 1000] * 1000
    deep: object = "leaf"
    for _ in range(30):
        deep = [deep] * 9  # 9^30 leaves if str() expanded it
    for value in (loop, wide, deep, {"k": wide}):
        text = show(value)
        assert len(text) <= SHOW_MAX + 3 and text.endswith("..."), text
    assert show([1, "a", {"b": None}]) == "[1, 'a', {'b': None}]" == str([1, "a", {"b": None}])
    assert show((1,)) == "(1,)"


@pytest.mark.parametrize("name", ["node-1\nERROR forged log line", "Node-1", "x-", "a" * 300])
def test_node_name_must_be_a_dns_name(config, name):
    r = run_cli("--config", config, "--node", name, "validate")
    assert r.returncode == 2 and "local.node: " in r.stderr and "must be a DNS name" in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 1
