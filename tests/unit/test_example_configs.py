"""The shipped example configs (deploy/systemd/config.yaml, the ConfigMap of
deploy/kubernetes/ovs-mesh.yaml) pass `ovs-mesh validate` and name every key of the option
table: with its default where it has one, commented out where it has none."""
import pathlib
import re

import pytest
import yaml

from ovs_mesh.cli.main import main
from topology.options import OPTIONS

REPO = pathlib.Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "deploy/systemd/config.yaml"
MANIFESTS = REPO / "deploy/kubernetes/ovs-mesh.yaml"
# A commented-out key: "# key: value" or "#   - {name: ...}" at the key's own indentation.
COMMENTED_KEY = re.compile(r"^(\s*)# ?(\s*(?:- \{|[a-z_]+:(?:\s|$)).*)$")


def configmap_text() -> str:
    docs = [d for d in yaml.safe_load_all(MANIFESTS.read_text()) if d]
    return next(d for d in docs if d["kind"] == "ConfigMap")["data"]["config.yaml"]


# (name, text, --node, the keys whose value deliberately is not the default)
EXAMPLES = [("deploy/systemd/config.yaml", SYSTEMD.read_text(), "node-1", {"nodes"}),
            ("ConfigMap in deploy/kubernetes/ovs-mesh.yaml", configmap_text(), "worker-1",
             {"source", "local.metrics", "local.pod_guard"})]


def keys_in(data, prefix: str = "") -> set[str]:
    """The option keys a decoded config names ("nodes[].ip" for a key of an entry)."""
    out = set()
    if isinstance(data, dict):
        for k, v in data.items():
            key = f"{prefix}{k}"
            out.add(key)
            if k == "nodes" and not prefix:
                for entry in v or []:
                    out |= keys_in(entry, "nodes[].")
            elif isinstance(v, dict):
                out |= keys_in(v, f"{key}.")
    return out


def value_at(data: dict, key: str):
    for part in key.split("."):
        data = data[part]
    return data


def uncommented(text: str) -> str:
    return "\n".join(COMMENTED_KEY.sub(r"\1\2", line) for line in text.splitlines())


@pytest.mark.parametrize("name, text, node, _", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_example_config_validates(name, text, node, _, tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert main(["--config", str(path), "--node", node, "validate"]) == 0
    assert f"{path}: valid:" in capsys.readouterr().out


@pytest.mark.parametrize("name, text, node, differs", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_example_config_names_every_key_with_its_default(name, text, node, differs):
    active = yaml.safe_load(text)
    named = keys_in(yaml.safe_load(uncommented(text)))
    assert {o.key for o in OPTIONS} - named == set(), f"{name} lacks these keys"
    for o in OPTIONS:
        if o.key in differs or "[]" in o.key:
            continue
        if o.default is None:
            assert o.key not in keys_in(active), f"{name}: {o.key} has no fixed default: comment it out"
        elif o.key != "nodes":   # nodes: listed, or commented out where the source is kubernetes
            assert o.key in keys_in(active), f"{name}: {o.key} has a default: write it, not commented out"
            assert value_at(active, o.key) == o.default, f"{name}: {o.key} is not its default {o.default!r}"


@pytest.mark.parametrize("name", ["config.yaml", "ovs-mesh.service"])
def test_deploy_systemd_files_are_the_packaged_ones(name):
    """deploy/systemd/ holds links to what `install-service` installs (ovs_mesh/agent/data/): one
    copy, so an edit of either is an edit of both."""
    shipped = REPO / "deploy/systemd" / name
    assert shipped.is_symlink() and shipped.resolve() == (REPO / "ovs_mesh/agent/data" / name).resolve()
