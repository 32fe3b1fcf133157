"""The file source's incremental parse (`ovs_mesh.config.items`) says exactly what the full parse says.

For random sequences of edits of a topology file (well-formed ones, bad values,
broken YAML, anchors, indentation), one `ConfigItems` re-reading every version
must give the same Config, or a ConfigError with the same problems in the same
order, as `config_from_bytes` on that version alone; and where both the version
before and this one are good, its `delta` names exactly the nodes that differ.
"""
from __future__ import annotations

import logging
import os

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ovs_mesh.config import file as config_file
from ovs_mesh.config.file import MAX_ALIAS_NODES, MAX_DEPTH, config_from_bytes
from ovs_mesh.config.items import ConfigItems, split
from topology.config import ConfigError

HEADER = ["cluster:", "  cidr: 10.244.0.0/16", "  node_prefix: 24", "  mode: flow"]
DUAL = ["cluster:", "  cidr: 10.244.0.0/16,fd00:10:244::/56", "  node_prefix: 24", "  mode: flow"]
LOCAL = ["local:", "  node: node-1", "  datapath: dummy", "  host: false"]


def entry(i: int, indent: str = "", ip: int | None = None, dual: bool = False) -> list[str]:
    subnet = f"10.244.{i}.0/24,fd00:10:244:{i:x}::/64" if dual else f"10.244.{i}.0/24"
    return [f"{indent}- name: node-{i}", f"{indent}  ip: 192.168.56.{ip if ip is not None else i}",
            f"{indent}  subnet: {subnet}"]


def document(n: int, indent: str = "", dual: bool = False) -> list[str]:
    return ((DUAL if dual else HEADER) + ["nodes:"]
            + [line for i in range(1, n + 1) for line in entry(i, indent, dual=dual)] + LOCAL)


# Lines an edit may put anywhere: plausible entry lines (so that many versions are
# good) and everything that breaks the simple shape or the YAML.
LINES = st.sampled_from([
    "- name: node-9", "  ip: 192.168.56.9", "  subnet: 10.244.9.0/24", "- name: node-2", "  ip: 192.168.56.3",
    "  subnet: 10.244.3.0/24", "  subnet: 10.244.3.0/25", "  subnet: 10.245.0.0/24", "  subnet: 10.244.3.1/24",
    "  ip: 10.244.7.7", "  ip: 127.0.0.1", "  ip: nope", "  ip: 7", "  ip:", "  name: UPPER", "  zone: a",
    "- {name: node-8, ip: 192.168.56.8, subnet: 10.244.8.0/24}", "- just-a-scalar", "-", "- - nested",
    "- &a {name: node-6, ip: 192.168.56.6}", "- *a", "  extra: *a", "- !!str tagged", "  ip: \"192.168.56.5",
    "  \"", "  ip: [1,", "  2]", "# a comment", "  # an indented comment", "", "   ", "\t- name: tab",
    "---", "...", "nodes:", "nodes: []", "local:", "  node: node-3", "cluster:", "  node_prefix: 25",
    "  - name: node-5", "    ip: 192.168.56.5", "    subnet: 10.244.5.0/24", "  cidr: 10.0.0.0/8",
    "source: kubernetes", "  mode: port", "- name: node-1", "  subnet: null", "  name: node-4",
    "nodes: # the peers", "- name: n\u2028x", "- name: 'quoted",
    # IPv6 and dual-stack: per-family subnets, an IPv6 underlay among IPv4 ones, spellings
    "  cidr: 10.244.0.0/16,fd00:10:244::/56", "  cidr: fd00:10:244::/56", "  node_prefix_ipv6: 96",
    "  subnet: 10.244.9.0/24,fd00:10:244:9::/64", "  subnet: [10.244.4.0/24, fd00:10:244:4::/64]",
    "  subnet: fd00:10:244:3::/64", "  subnet: fd00:10:244:3:0::/64", "  subnet: fd00:10:245::/64",
    "  subnet: 10.244.3.0/24,10.244.4.0/24", "  ip: fd00:56::9", "  ip: fd00:56::3", "  ip: FD00:56::4",
    "  ip: fe80::1", "- {name: node-7, ip: 'fd00:56::7', subnet: 'fd00:10:244:7::/64'}",
])

EDIT = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 200), LINES),
    st.tuples(st.just("replace"), st.integers(0, 200), LINES),
    st.tuples(st.just("delete"), st.integers(0, 200), st.none()),
    st.tuples(st.just("append_entry"), st.integers(10, 60), st.booleans()),
    st.tuples(st.just("move_ip"), st.integers(1, 5), st.integers(1, 250)),
)


def edit(lines: list[str], op) -> list[str]:
    kind, i, arg = op
    lines = list(lines)
    at = i % (len(lines) + 1)
    if kind == "insert":
        lines.insert(at, arg)
    elif kind == "replace" and lines:
        lines[at % len(lines)] = arg
    elif kind == "delete" and lines:
        del lines[at % len(lines)]
    elif kind == "append_entry":   # a new node just before `local:` (or at the end)
        where = lines.index("local:") if "local:" in lines else len(lines)
        dual = any(line.startswith("  cidr:") and "," in line for line in lines)
        lines[where:where] = entry(i, ip=i + 100 if arg else i, dual=dual)
    elif kind == "move_ip":        # an IP change of node-i
        target = f"- name: node-{i}"
        if target in lines:
            k = lines.index(target) + 1
            if k < len(lines) and lines[k].startswith("  ip: "):
                lines[k] = f"  ip: 192.168.{arg % 250}.{i}"
    return lines


def outcome(fn):
    try:
        return "ok", fn()
    except ConfigError as e:
        return "error", e.errors


def by_name(config) -> dict:
    return {n.name: n for n in config.nodes}


def check_sequence(items: ConfigItems, versions: list[str]) -> list[bool]:
    """Every version through one ConfigItems == the full parse; returns which took the fast path."""
    fast, good = [], None
    for text in versions:
        data = text.encode()
        full = outcome(lambda: config_from_bytes(data, "t.yaml", default_node="node-1"))
        mine = outcome(lambda: items.parse(data, "t.yaml", default_node="node-1"))
        assert mine == full, text
        fast.append(items.fast)
        if mine[0] == "ok":
            if good is not None and items.delta is not None:
                old, new = by_name(good), by_name(mine[1])
                d = items.delta
                assert {n.name for n in d.added} == new.keys() - old.keys()
                assert {n.name for n in d.removed} == old.keys() - new.keys()
                assert {b.name for a, b in d.changed} == {k for k in old.keys() & new.keys() if old[k] != new[k]}
            good = mine[1]
    return fast


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 8), indent=st.sampled_from(["", "  "]), dual=st.booleans(),
       edits=st.lists(EDIT, max_size=8))
def test_random_edits_parse_as_the_full_parse(n, indent, dual, edits):
    lines = document(n, indent, dual)
    versions = ["\n".join(lines) + "\n"]
    for op in edits:
        lines = edit(lines, op)
        versions.append("\n".join(lines) + "\n")
    check_sequence(ConfigItems(), versions)


def test_common_edits_take_the_fast_path_and_reuse_unchanged_nodes():
    lines = document(50)
    joined = edit(lines, ("append_entry", 51, False))
    moved = edit(joined, ("move_ip", 7, 99))
    left = [l for l in moved if l not in entry(3)]
    bad = edit(left, ("replace", left.index("  ip: 192.168.56.9"), "  ip: 192.168.56.10"))   # a duplicate IP
    versions = ["\n".join(v) + "\n" for v in (lines, joined, moved, left, bad, left)]
    items = ConfigItems()
    assert check_sequence(items, versions) == [True] * 6
    first = items.parse(versions[0].encode(), "t.yaml", default_node="node-1")
    again = items.parse(versions[1].encode(), "t.yaml", default_node="node-1")
    assert all(a is b for a, b in zip(first.nodes[:40], again.nodes[:40]))   # Node objects kept
    assert [n.name for n in items.delta.added] == ["node-51"]
    assert outcome(lambda: items.parse(versions[4].encode(), "t.yaml", default_node="node-1")) == (
        "error", ["nodes[8].ip: 192.168.56.10: duplicate of nodes[7].ip"])


def test_the_bounds_hold_across_entries():
    """Each entry within the limits, the document over them: the full parse's error."""
    laughs = ['- &a{k} [{", ".join(["x"] * 60)}]'.replace("{k}", str(k)) for k in range(3)]
    per_entry = MAX_ALIAS_NODES // 2 // 60 + 1
    alias_lines = [f"- [{', '.join([f'*a{k}'] * per_entry)}]" for k in range(3)]
    deep = "- " + "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2)
    deeper = "- " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    base = document(3)
    k = base.index("local:")
    docs = [base[:k] + laughs + alias_lines[:1] + base[k:],
            base[:k] + laughs + alias_lines + base[k:],
            base[:k] + [deep] + base[k:], base[:k] + [deeper] + base[k:]]
    check_sequence(ConfigItems(), ["\n".join(d) + "\n" for d in docs])


def test_too_many_yaml_nodes_in_all(monkeypatch):
    monkeypatch.setattr(config_file, "MAX_NODES", 60)
    monkeypatch.setattr("ovs_mesh.config.items.MAX_NODES", 60)
    versions = ["\n".join(document(n)) + "\n" for n in (4, 5, 6, 5)]   # 7 YAML nodes an entry
    check_sequence(ConfigItems(), versions)


def test_split_shapes():
    assert split("nodes:\n- a\n- b\nlocal: {}\n") == ("nodes:\nlocal: {}\n", ["- a\n", "- b\n"])
    assert split("nodes:\n  - a\n    b: 1\n  - c\nx: 1\n") == ("nodes:\nx: 1\n", ["- a\n  b: 1\n", "- c\n"])
    assert split("nodes: []\n") is None
    assert split("nodes:\r\n- a\r\n") is None
    assert split("nodes:\n# c\n- a\n") is None


def test_dual_stack_edits_take_the_fast_path_with_the_full_parse_messages():
    lines = document(6, dual=True)
    joined = edit(lines, ("append_entry", 7, False))
    v6ip = [l if l != "  ip: 192.168.56.3" else "  ip: fd00:56::3" for l in joined]   # another underlay family
    overlap = [l if l != "  subnet: 10.244.5.0/24,fd00:10:244:5::/64" else "  subnet: 10.244.5.0/24,fd00:10:244:4::/64"
               for l in joined]
    versions = ["\n".join(v) + "\n" for v in (lines, joined, v6ip, overlap, joined)]
    items = ConfigItems()
    assert check_sequence(items, versions) == [True] * 5
    assert outcome(lambda: items.parse(versions[2].encode(), "t.yaml", default_node="node-1")) == (
        "error", ["nodes[2].ip: fd00:56::3: an IPv6 underlay address, but nodes[0].ip is IPv4: "
                  "every node's ip must be of one family (the tunnels use one)"])
    assert outcome(lambda: items.parse(versions[3].encode(), "t.yaml", default_node="node-1")) == (
        "error", ["nodes[4].subnet: fd00:10:244:4::/64: overlaps nodes[3].subnet fd00:10:244:4::/64"])
    good = items.parse(versions[4].encode(), "t.yaml", default_node="node-1")
    assert str(good.nodes[0].subnet6) == "fd00:10:244:1::/64"


# -- every layout: JSON (compact and indented), flow-style YAML, a block document with a flow
# sequence; edits of the model (joins, leaves, IP changes) and of the text anywhere in it.
def render(layout: str, n: int, extra: list[dict], moved: dict[int, str], dual: bool) -> str:
    import json

    import yaml

    cluster = {"cidr": "10.244.0.0/16,fd00:10:244::/56" if dual else "10.244.0.0/16", "node_prefix": 24,
               "mode": "flow"}
    nodes = [{"name": f"node-{i}", "ip": moved.get(i, f"192.168.56.{i}"),
              "subnet": f"10.244.{i}.0/24,fd00:10:244:{i:x}::/64" if dual else f"10.244.{i}.0/24"}
             for i in range(1, n + 1)] + extra
    doc = {"cluster": cluster, "nodes": nodes, "local": {"node": "node-1", "datapath": "dummy", "host": False}}
    if layout == "json":
        return json.dumps(doc)
    if layout == "json-indent":
        return json.dumps(doc, indent=2) + "\n"
    if layout == "json-first":   # nodes before the other keys, compact separators
        return json.dumps({"nodes": nodes, **{k: v for k, v in doc.items() if k != "nodes"}}, separators=(",", ":"))
    if layout == "flow":
        return yaml.safe_dump(doc, default_flow_style=True, width=1 << 20)
    if layout == "flow-wrapped":
        return yaml.safe_dump(doc, default_flow_style=True)
    if layout == "block-flow":   # a block document whose nodes are one flow sequence
        return yaml.safe_dump({k: v for k, v in doc.items() if k != "nodes"}) + "nodes: " + json.dumps(nodes) + "\n"
    raise ValueError(layout)


LAYOUTS = ("json", "json-indent", "json-first", "flow", "flow-wrapped", "block-flow")
SNIPPETS = st.sampled_from([
    ",", "]", "[", "{", "}", '"', "'", "#", " #", " # c\n", " # x, ", "?, ", ", ?", ", - ", "&a ", "*a", "? ", "?",
    "-", ": ", "\n", "\t", " ", "null",
    "!!str ", '"nodes": [], ', "nodes: [a]", "it's", "a#b", "x: 1, ", '"zone": "a", ', "10.244.3.0/25",
    "fd00:10:244:3::/64", '"\\u00e9"', '\\"', "---\n", "...", "\u2028", "ovs-mesh-nodes-0c5e2a7f", "{}", "[]",
    '{"name": "node-8", "ip": "192.168.56.8", "subnet": "10.244.8.0/24"}',
    ', {"name": "node-2", "ip": "192.168.56.3", "subnet": "10.244.3.0/24"}', "{name: node-9, ip: 192.168.56.9}",
    ', {"name": "node-7", "ip": "fd00:56::7", "subnet": "10.244.7.0/24"}', "&b {name: node-6}", ", *b",
])
TEXT_EDIT = st.one_of(
    st.tuples(st.just("insert"), st.floats(0, 1), SNIPPETS),
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 12)),
)
MODEL_EDIT = st.one_of(
    st.tuples(st.just("join"), st.integers(10, 60), st.booleans()),
    st.tuples(st.just("leave"), st.integers(1, 8), st.none()),
    st.tuples(st.just("move_ip"), st.integers(1, 8), st.integers(1, 250)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layout=st.sampled_from(LAYOUTS), n=st.integers(1, 8), dual=st.booleans(),
       edits=st.lists(st.one_of(TEXT_EDIT, MODEL_EDIT), max_size=8))
# An empty explicit key between two entries: libyaml reads `[?,]` alone but refuses `[..., ?, ...]`.
@example(layout="json", n=2, dual=False, edits=[("insert", 0.53125, "?, ")])
def test_random_edits_of_every_layout_parse_as_the_full_parse(layout, n, dual, edits):
    extra: list[dict] = []
    moved: dict[int, str] = {}
    count = n
    text = render(layout, count, extra, moved, dual)
    versions = [text]
    for kind, at, arg in edits:
        if kind == "insert":
            k = int(at * len(text))
            text = text[:k] + arg + text[k:]
        elif kind == "delete":
            k = int(at * len(text))
            text = text[:k] + text[k + arg:]
        else:
            if kind == "join":
                subnet = f"10.244.{at}.0/24,fd00:10:244:{at:x}::/64" if dual else f"10.244.{at}.0/24"
                extra.append({"name": f"node-{at}", "ip": f"192.168.56.{at + 100 if arg else at}", "subnet": subnet})
            elif kind == "leave":
                count = min(count, at - 1) if at > 1 else count
            else:
                moved[at] = f"192.168.{arg % 250}.{at}"
            text = render(layout, count, extra, moved, dual)
        versions.append(text)
    check_sequence(ConfigItems(), versions)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_takes_the_fast_path_with_the_full_parse_messages(layout):
    versions = [render(layout, 40, [], {}, False),
                render(layout, 40, [{"name": "node-41", "ip": "192.168.56.141", "subnet": "10.244.41.0/24"}], {},
                       False),
                render(layout, 40, [], {7: "192.168.56.9"}, False),   # a duplicate IP
                render(layout, 39, [], {7: "192.168.57.7"}, False)]
    items = ConfigItems()
    assert check_sequence(items, versions) == [True] * 4
    first = items.parse(versions[0].encode(), "t.yaml", default_node="node-1")
    again = items.parse(versions[1].encode(), "t.yaml", default_node="node-1")
    assert all(a is b for a, b in zip(first.nodes[:30], again.nodes[:30]))   # Node objects kept
    assert [n.name for n in items.delta.added] == ["node-41"] and items.fallback is None
    assert outcome(lambda: items.parse(versions[2].encode(), "t.yaml", default_node="node-1")) == (
        "error", ["nodes[8].ip: 192.168.56.9: duplicate of nodes[6].ip"])


def test_a_layout_read_whole_says_why():
    items = ConfigItems()
    items.parse("\n".join(document(3)).encode() + b"\n", "t.yaml", default_node="node-1")
    assert items.fast and items.fallback is None
    text = "{nodes: [{name: node-1, ip: 192.168.56.1, subnet: 10.244.1.0/24}], nodes2: x}"
    assert outcome(lambda: items.parse(text.encode(), "t.yaml", default_node="node-1"))[0] == "error"
    odd = "\n".join(HEADER + ["nodes: !!seq [{name: node-1, ip: 192.168.56.1, subnet: 10.244.1.0/24}]"] + LOCAL)
    items.parse(odd.encode(), "t.yaml", default_node="node-1")
    assert not items.fast and "nodes" in items.fallback


def test_an_alias_after_the_entries_is_read_whole():
    """An anchor an entry redefines, aliased after the entries: only the whole document knows which it is."""
    lines = ["cluster: &x", "  cidr: 10.244.0.0/16", "nodes:", "- name: node-1", "  ip: 192.168.56.1",
             "  subnet: &x 10.244.1.0/24", "local:", "  node: node-1", "  datapath: *x"]
    check_sequence(ConfigItems(), ["\n".join(lines) + "\n"])
    flow = ('{cluster: &x {cidr: 10.244.0.0/16}, nodes: [{name: node-1, ip: 192.168.56.1, subnet: &x 10.244.1.0/24}],'
            ' local: {node: node-1, datapath: *x}}')
    check_sequence(ConfigItems(), [flow])


@pytest.mark.parametrize("nodes", [
    # `#` in a plain scalar is no comment, `'` inside one no quote: the expressions that find the entries
    # take them for one, so two entries land in one piece, which YAML reads as two items
    "[{name: node-1#x, ip: 192.168.56.1, subnet: 10.244.1.0/24}, {name: node-2,\n"
    "  ip: 192.168.56.2, subnet: 10.244.2.0/24}]",
    "[{name: node-1, ip: 192.168.56.1, subnet: 10.244.1.0/24, x: it's}, {name: node-2, ip: 192.168.56.2, y: b's}]",
])
def test_entries_the_expressions_get_wrong_are_read_whole(nodes):
    text = "\n".join(HEADER) + "\nnodes: " + nodes + "\n" + "\n".join(LOCAL) + "\n"
    items = ConfigItems()
    check_sequence(items, [text])
    assert not items.fast


def test_the_file_source_says_once_that_it_reads_a_layout_whole_and_counts_it(tmp_path, caplog):
    from prometheus_client.parser import text_string_to_metric_families

    from ovs_mesh.agent.metrics import AgentMetrics
    from ovs_mesh.sources.file_source import FileSource

    caplog.set_level(logging.INFO)
    path = tmp_path / "c.yaml"
    whole = "\n".join(HEADER + ["nodes: !!seq [{name: node-1, ip: 192.168.56.1, subnet: 10.244.1.0/24}%s]"] + LOCAL)
    source = FileSource(str(path), require_local=False)
    for i, text in enumerate([whole % "", whole % ", {name: node-2, ip: 192.168.56.2, subnet: 10.244.2.0/24}",
                              render("json", 3, [], {}, False), render("json", 4, [], {}, False)]):
        path.write_text(text)
        os.utime(path, ns=(i * 10**9, i * 10**9))   # another identity, whatever the clock's resolution
        assert source._check(raise_errors=True)
    said = [r.getMessage() for r in caplog.records if "incrementally" in r.getMessage()]
    assert len(said) == 2 and "is read whole on every edit" in said[0] and "again" in said[1]
    assert source.reads == {"incremental": 2, "whole": 2}
    m = AgentMetrics(60)
    m.config_reads = source.reads
    samples = {(s.name, tuple(s.labels.values())): s.value
               for f in text_string_to_metric_families(m.render().decode()) for s in f.samples}
    assert samples[("ovs_mesh_config_reads_total", ("whole",))] == 2
    assert samples[("ovs_mesh_config_reads_total", ("incremental",))] == 2
