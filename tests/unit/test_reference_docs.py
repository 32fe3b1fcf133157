"""The generated references in docs/reference/ are what the code gives now (tools/gen_reference.py)."""
import importlib.util
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("gen_reference", REPO / "tools" / "gen_reference.py")
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)


@pytest.mark.parametrize("path", sorted(gen.FILES))
def test_generated_reference_is_current(path):
    committed = REPO / path
    text = committed.read_text() if committed.exists() else None
    if text != gen.FILES[path]():
        pytest.fail(f"{path} is stale: run `{gen.COMMAND}` and commit the result", pytrace=False)


def test_the_references_do_not_depend_on_the_environment(monkeypatch):
    """No terminal width, no $OVS_MESH_CONFIG: everyone generates the same text."""
    before = {path: make() for path, make in gen.FILES.items()}
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setenv("OVS_MESH_CONFIG", "/elsewhere.yaml")
    assert {path: make() for path, make in gen.FILES.items()} == before


def test_every_key_metric_and_command_is_in_its_reference():
    from ovs_mesh.cli.main import build_parser
    from topology.options import OPTIONS

    config = gen.config_md()
    assert all(f"| `{o.key}` |" in config for o in OPTIONS)
    metrics = gen.metrics_md()
    for name in ("ovs_mesh_reconcile_total", "ovs_mesh_reconcile_duration_seconds", "ovs_mesh_tunnel_up",
                 "ovs_mesh_underlay_info", "ovs_mesh_pod_subnet_info"):
        assert f"| `{name}` |" in metrics
    cli = gen.cli_md()
    names = []

    def walk(parser):
        for _name, _, sub in gen._subcommands(parser):
            names.append(sub.prog)
            walk(sub)
    walk(build_parser())
    assert {"ovs-mesh validate", "ovs-mesh lab up", "ovs-mesh agent", "ovs-mesh install-service"} <= set(names)
    assert all(f"## `{n}`" in cli for n in names)
