"""Commands that never touch OVS start without the OVSDB, OpenFlow and netlink libraries.

On a node under software emulation (the Vagrant lab) or a small machine, importing `ovs`,
`ovsdbapp` and `pyroute2` costs seconds; provisioning runs `lab topology`, `validate` and
`install-service` several times, and none of them connects to anything.
The commands of other packages are loaded by name, and one that fails to load is an error.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

HEAVY = ("ovs", "ovsdbapp", "pyroute2", "ruamel", "kubernetes",
         "ovs_mesh.reconcile.node", "ovs_mesh.reconcile.reconciler")
PROBE = """
import json, sys
from ovs_mesh.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules)), file=sys.stderr)
"""


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "PYTHONPATH": REPO}   # this checkout's ovs_mesh, whatever the venv's install points at


def _run(args: list[str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=60)


@pytest.mark.parametrize("args", [
    ["--help"],
    ["validate", "--help"],
    ["VALIDATE"],
    ["lab", "topology", "--node", "a=192.168.56.11", "--node", "b=192.168.56.12", "-o", "topology.yaml"],
    ["install-service", "--help"],
], ids=["help", "validate-help", "validate", "lab-topology", "install-service-help"])
def test_offline_commands_import_no_ovs_netlink_or_kubernetes_library(args, tmp_path):
    if args == ["VALIDATE"]:
        made = _run(["lab", "topology", "--node", "a=192.168.56.11", "--node", "b=192.168.56.12",
                     "--local", "a", "-o", "c.yaml"], tmp_path)
        assert (tmp_path / "c.yaml").exists(), made.stdout + made.stderr
        args = ["--config", "c.yaml", "validate"]
    p = _run(args, tmp_path)
    if "-o" in args:
        assert (tmp_path / "topology.yaml").exists(), p.stdout + p.stderr
    if "validate" in args and "--help" not in args:
        assert ": valid: 2 nodes" in p.stdout, p.stdout + p.stderr
    loaded = set(json.loads(p.stderr.strip().splitlines()[-1]))
    allowed = {"ruamel"} if "-o" in args else set()   # writing YAML back keeps comments: ruamel
    heavy = sorted(m for m in loaded if (m.split(".")[0] in HEAVY or m in HEAVY) and m.split(".")[0] not in allowed)
    assert heavy == [], f"ovs-mesh {' '.join(args)} imported {heavy[:10]}"


def test_a_command_module_that_fails_to_import_is_an_error(monkeypatch):
    """The lab and agent commands are loaded by name: one that fails to import stops the CLI
    with that error instead of leaving the command out of `ovs-mesh --help`."""
    from ovs_mesh.cli import main

    real = importlib.import_module

    def failing(name, *a, **kw):
        if name == "ovs_mesh.agent.commands":
            raise ImportError("No module named 'ovs_mesh.agent.commandz'")
        return real(name, *a, **kw)

    commands = [line.split()[0] for line in main.build_parser().format_help().splitlines()
                if line.startswith("    ") and not line.startswith("     ")]
    assert "lab" in commands and "agent" in commands
    monkeypatch.setattr(importlib, "import_module", failing)
    with pytest.raises(ImportError, match="commandz"):
        main.build_parser()
