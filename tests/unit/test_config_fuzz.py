"""Property tests of the config reader (Hypothesis).

Whatever the bytes, reading a config ends in a `Config` or a `ConfigError` of
short `path: value: reason` lines, never another exception; and on ordinary
YAML the iterative reader gives exactly what PyYAML's SafeLoader gives.
"""
from __future__ import annotations

import copy
import os

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ovs_mesh.config.file import decode, load_yaml
from tests.helpers import base_config
from topology.config import ConfigError, parse_config

FAST = settings(max_examples=int(os.environ.get("OVSM_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def read(data: bytes):
    """What `validate` does with a file's bytes; the Config, or the ConfigError's lines."""
    try:
        return parse_config(load_yaml(decode(data, "c.yaml"), "c.yaml"), default_node="node-1")
    except ConfigError as e:
        lines = e.errors
        assert lines and len(lines) <= 101
        for line in lines:
            assert ": " in line and len(line) < 600, line[:300]
        return lines


# Pieces YAML is made of, so that random text is often nearly YAML: structure,
# anchors and aliases, tags, merge keys, quoting, indentation.
TOKENS = st.sampled_from([
    "[", "]", "{", "}", ",", ":", ": ", "- ", "? ", "\n", "  ", "    ", "&a ", "&b ", "*a", "*b", "<<: ",
    "!!str ", "!!int ", "!!binary ", "!!set ", "!!python/object ", "!", "'", '"', "#", "---\n", "...\n",
    "|\n", ">\n", "cluster", "nodes", "local", "name", "ip", "subnet", "cidr", "node-1", "10.244.1.0/24",
    "192.168.56.11", "1", "0x1F", "1e9", "yes", "null", "~", "2001-13-45", "\t", "\x00", "\u00e9", "\ufeff",
])


@FAST
@given(st.binary(max_size=2000))
def test_any_bytes(data):
    read(data)


@FAST
@given(st.lists(TOKENS, max_size=120).map("".join))
def test_yaml_like_text(text):
    read(text.encode("utf-8", "surrogatepass"))


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20),
                    st.floats(allow_nan=False))
DOCS = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                     st.dictionaries(st.text(max_size=8), inner, max_size=5)),
                    max_leaves=40)


@FAST
@given(DOCS, st.booleans())
def test_same_as_safe_loader(doc, flow):
    text = yaml.safe_dump(doc, default_flow_style=flow)
    assert load_yaml(text, "c.yaml") == yaml.safe_load(text)


FIELDS = st.sampled_from([("cluster", "cidr"), ("cluster", "node_prefix"), ("cluster", "tunnel"),
                          ("cluster", "mode"), ("cluster", "vxlan_port"), ("cluster", "mtu"),
                          ("cluster", "mesh_degree"), ("local", "node"), ("local", "ovsdb"),
                          ("local", "metrics"), ("local", "datapath"), ("local", "host")])


@FAST
@given(st.lists(st.tuples(FIELDS, DOCS), max_size=4), st.lists(DOCS, max_size=3))
def test_mutated_config(changes, extra_nodes):
    """A valid config with random values in its fields, and random node entries."""
    data = copy.deepcopy(base_config())
    for (section, key), value in changes:
        data[section][key] = value
    data["nodes"].extend(extra_nodes)
    read(yaml.safe_dump(data).encode())
