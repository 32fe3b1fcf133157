"""The layering docs/architecture.md describes, checked on the source: imports only go down."""
import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def imports(path: pathlib.Path) -> set[str]:
    """Absolute names of every module a file imports (relative imports resolved)."""
    pkg = path.relative_to(REPO).with_suffix("").parts[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(pkg[:len(pkg) - node.level + 1]) if node.level else ""
            mod = ".".join(p for p in (base, node.module or "") if p)
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def files(package: str):
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("package, forbidden", [("ovsdb_client", "ovs_mesh"), ("topology", "ovs_mesh"),
                                                ("topology", "ovsdb_client")])
def test_lower_layers_do_not_import_upper(package, forbidden):
    bad = {str(f.relative_to(REPO)): sorted(m for m in imports(f) if m.split(".")[0] == forbidden)
           for f in files(package)}
    assert {f: m for f, m in bad.items() if m} == {}


def test_only_main_imports_the_cli():
    users = [str(f.relative_to(REPO)) for f in files("ovs_mesh")
             if "ovs_mesh.cli.main" in imports(f) and f.name != "cli.py"]
    assert users == ["ovs_mesh/__main__.py"]


def test_topology_does_no_network_or_process_io():
    io_modules = {"subprocess", "socketserver", "threading", "inotify_simple", "kubernetes", "urllib3", "pyroute2"}
    bad = {str(f.relative_to(REPO)): sorted(m for m in imports(f) if m.split(".")[0] in io_modules)
           for f in files("topology")}
    assert {f: m for f, m in bad.items() if m} == {}


def test_the_ovsdb_client_is_constructed_in_one_place():
    places = [str(f.relative_to(REPO)) for f in files("ovs_mesh") + files("bench")
              if "OvsdbClient(" in f.read_text()]
    assert places == ["ovs_mesh/reconcile/node.py"]


def test_no_module_over_400_lines():
    long = {str(f.relative_to(REPO)): n for p in ("ovs_mesh", "ovsdb_client", "topology") for f in files(p)
            if (n := len(f.read_text().splitlines())) > 400}
    assert long == {}
