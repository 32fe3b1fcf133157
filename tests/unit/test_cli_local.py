"""--local FILE: one shared topology file, per-node local settings beside it."""
from tests.helpers import base_config, run_cli, write_config


def test_local_file_overrides_local_section(tmp_path):
    topo = base_config(3)
    del topo["local"]
    write_config(str(tmp_path / "topology.yaml"), topo)
    (tmp_path / "local.yaml").write_text("node: node-2\nhost: false\ndatapath: dummy\n")
    r = run_cli("--config", str(tmp_path / "topology.yaml"), "--local", str(tmp_path / "local.yaml"),
                "plan", "--json")
    # node-2 is the local node: it reaches OVSDB (absent here): a runtime failure, not bad input
    assert r.returncode == 1 and "OVSDB" in r.stderr
    r = run_cli("--config", str(tmp_path / "topology.yaml"), "--local", str(tmp_path / "local.yaml"), "validate")
    assert r.returncode == 0, r.stderr
    (tmp_path / "local.yaml").write_text("local: {node: node-9}\n")
    r = run_cli("--config", str(tmp_path / "topology.yaml"), "--local", str(tmp_path / "local.yaml"), "validate")
    assert r.returncode == 2 and "local.node: node-9: not in nodes" in r.stderr
    # --node beats the file
    r = run_cli("--config", str(tmp_path / "topology.yaml"), "--local", str(tmp_path / "local.yaml"),
                "--node", "node-3", "validate")
    assert r.returncode == 0, r.stderr


def test_local_file_errors(tmp_path):
    topo = write_config(str(tmp_path / "t.yaml"), base_config(2))
    (tmp_path / "l.yaml").write_text("nodee: node-2\n")
    r = run_cli("--config", topo, "--local", str(tmp_path / "l.yaml"), "validate")
    assert r.returncode == 2 and "local.nodee: unknown key" in r.stderr
    r = run_cli("--config", topo, "--local", str(tmp_path / "missing.yaml"), "validate")
    assert r.returncode == 2 and "--local:" in r.stderr and "missing.yaml" in r.stderr
    (tmp_path / "l.yaml").write_text("datapath: kernel\n")
    r = run_cli("--config", topo, "--local", str(tmp_path / "l.yaml"), "validate")
    assert r.returncode == 2 and "local.datapath: kernel" in r.stderr
