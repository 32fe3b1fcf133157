"""The layering docs/architecture.md describes, checked on the source: imports only go down, and
no import cycle anywhere in ovs_mesh, ovsdb_client and topology."""
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


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_imports() -> dict[str, set[str]]:
    """Each module of the three packages -> the modules of the three packages it imports.

    A name imported from a package (`from ovs_mesh.host import cni`) counts as the
    submodule when there is one, else as the package itself."""
    files_ = [f for p in ("ovs_mesh", "ovsdb_client", "topology") for f in files(p)]
    known = {module_name(f) for f in files_}
    graph = {}
    for f in files_:
        found = set()
        for m in imports(f):
            while m and m not in known:   # a name inside a module: that module
                m = m.rpartition(".")[0]
            if m:
                found.add(m)
        graph[module_name(f)] = found - {module_name(f)}
    return graph


def imported_by(graph: dict[str, set[str]], prefix: str) -> dict[str, list[str]]:
    """Module -> the modules under `prefix` (a package) it imports."""
    return {m: sorted(i for i in deps if i == prefix or i.startswith(prefix + "."))
            for m, deps in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of the graph: each strongly connected component of more than one
    module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_cycles_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    """No two modules of ours import each other, directly or round a loop.  A module's edge to
    the packages that contain it is left out: `from . import saved` names the package, which
    Python has already started importing, so that edge alone never loops."""
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in product_imports().items()}
    assert cycles(graph) == []


# (package, a package it must not import): the layers, bottom up, are topology, ovsdb_client,
# ovs, host (which may use ovs's row vocabulary), reconcile, then the front ends agent and cli;
# lab is a tool on top that nothing in the product imports.
@pytest.mark.parametrize("package, forbidden", [
    ("ovs_mesh.ovs", "ovs_mesh.host"), ("ovs_mesh.ovs", "ovs_mesh.reconcile"),
    ("ovs_mesh.host", "ovs_mesh.reconcile"),
    ("ovs_mesh.ovs", "ovs_mesh.agent"), ("ovs_mesh.host", "ovs_mesh.agent"), ("ovs_mesh.reconcile", "ovs_mesh.agent"),
    ("ovs_mesh.config", "ovs_mesh.ovs"), ("ovs_mesh.config", "ovs_mesh.host"),
    ("ovs_mesh.config", "ovs_mesh.reconcile"),
])
def test_package_layers(package, forbidden):
    bad = {m: i for m, i in imported_by(product_imports(), forbidden).items()
           if (m == package or m.startswith(package + ".")) and i}
    assert bad == {}


def test_nothing_in_the_product_imports_the_lab():
    """The lab is built on the product, never the other way round.  (`ovs-mesh lab`'s parser,
    `ovs_mesh.lab.commands`, is loaded by name in cli/main.py, which no import statement shows.)"""
    bad = {m: i for m, i in imported_by(product_imports(), "ovs_mesh.lab").items()
           if i and not m.startswith("ovs_mesh.lab")}
    assert bad == {}


def test_only_main_imports_the_cli():
    """The command line is the top: only `python -m ovs_mesh` (and the console script) enter it."""
    users = sorted(m for m, i in imported_by(product_imports(), "ovs_mesh.cli").items()
                   if i and not m.startswith("ovs_mesh.cli"))
    assert users == ["ovs_mesh.__main__"]


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
