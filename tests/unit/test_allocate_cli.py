"""`ovs-mesh allocate` writes subnets back, keeps comments, never moves one."""
from tests.helpers import allocate_cli, run_cli

CONFIG = """# our lab
cluster:
  cidr: 10.244.0.0/16   # pod range
nodes:
  - {name: node-1, ip: 192.168.56.11, subnet: 10.244.0.0/24}
  - {name: node-2, ip: 192.168.56.12}
  # a comment between nodes
  - {name: node-3, ip: 192.168.56.13, subnet: 10.244.2.0/24}
  - name: node-4
    ip: 192.168.56.14
local: {node: node-1, host: false, datapath: dummy}
"""


def test_allocate_fills_lowest_free_and_keeps_layout(tmp_path):
    path = tmp_path / "c.yaml"
    out, text = allocate_cli(path, CONFIG, ("# our lab", "# a comment between nodes", "# pod range"))
    assert "allocated node-2: 10.244.1.0/24" in out and "allocated node-4: 10.244.3.0/24" in out
    assert "subnet: 10.244.0.0/24" in text and "subnet: 10.244.2.0/24" in text
    assert run_cli("--config", str(path), "validate").returncode == 0


def test_allocate_rejects_bad_file_without_writing(tmp_path):
    path = tmp_path / "c.yaml"
    bad = CONFIG.replace("192.168.56.13", "10.244.9.9")
    path.write_text(bad)
    r = run_cli("--config", str(path), "allocate")
    assert r.returncode == 2 and "nodes[2].ip: 10.244.9.9" in r.stderr
    assert path.read_text() == bad


def test_allocate_full_range(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.replace("10.244.0.0/16", "10.244.0.0/22"))
    assert run_cli("--config", str(path), "allocate").returncode == 0
    full = CONFIG.replace("10.244.0.0/16", "10.244.0.0/22").replace(
        "local:", "  - {name: node-5, ip: 192.168.56.15}\nlocal:")
    path.write_text(full)
    r = run_cli("--config", str(path), "allocate")
    assert r.returncode == 2 and "nodes" in r.stderr and "5 nodes" in r.stderr
