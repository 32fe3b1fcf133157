"""No file can hang, crash or bloat a config reader: the adversarial corpus (tests/config_corpus.py).

Each file goes through every way ovs-mesh reads a config: `validate` (a real
process: it must not segfault, hang or print megabytes), and in-process the
fast loader, the round-trip path of `allocate` and `--local`.  Each answer is a
ConfigError (exit 2) of a few short `path: value: reason` lines within a second.
"""
from __future__ import annotations

import re
import resource
import subprocess
import sys
import time

import pytest

from ovs_mesh.config import file as config_file
from ovs_mesh.config.file import allocate_file, load_config, read_local_file
from tests import config_corpus
from tests.helpers import REPO, base_config, write_config
from topology.config import ConfigError

MAX_OUTPUT = 16_000   # bytes a refusal may print (the longest: 100 problems + a count)
MAX_LINE = 600        # characters of one problem line


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return config_corpus.build(str(tmp_path_factory.mktemp("ovsm-corpus")))


@pytest.fixture(scope="module")
def startup_seconds(tmp_path_factory):
    """CPU seconds `validate` of a good file costs (interpreter + imports): the 1 s budget comes on top."""
    path = write_config(str(tmp_path_factory.mktemp("ovsm-good") / "c.yaml"), base_config())
    best = min(_validate(path)[1] for _ in range(2))
    return best


def _cpu_children() -> float:
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def _validate(path: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run `validate`; (result, CPU seconds it used).  CPU time, not wall time: the
    budget is what the file costs, not how busy the machine is (a hang hits the timeout)."""
    before = _cpu_children()
    r = subprocess.run([sys.executable, "-m", "ovs_mesh", "--config", path, "validate"], cwd=REPO,
                       capture_output=True, text=True, errors="replace", timeout=30)
    return r, _cpu_children() - before


def _assert_short(lines: list[str]) -> None:
    assert lines, "no problem reported"
    assert sum(len(x) + 1 for x in lines) <= MAX_OUTPUT, f"{sum(map(len, lines))} characters"
    for line in lines:
        assert len(line) <= MAX_LINE, line[:200]
        assert line.count(": ") >= 2, f"not `path: value: reason`: {line[:200]}"


CORPUS_NAMES = sorted(config_corpus._texts()) + ["fifo", "dev-zero", "dev-urandom", "directory",
                                                 "symlink-loop"]


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_validate_refuses_within_a_second(corpus, startup_seconds, name):
    r, seconds = _validate(corpus[name])
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert all(x.startswith("error: ") for x in lines), r.stderr[:2000]
    _assert_short([x[len("error: "):] for x in lines])
    assert seconds < startup_seconds + 1.0, f"{seconds:.2f}s (startup {startup_seconds:.2f}s)"


@pytest.mark.parametrize("reader", ["load_config", "allocate", "local"])
def test_every_reader_refuses_every_file_quickly_and_small(corpus, reader):
    read = {"load_config": lambda p: load_config(p, default_node="node-1"),
            "allocate": lambda p: allocate_file(p, dry_run=True),
            "local": read_local_file}[reader]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    slow = []
    for name in CORPUS_NAMES:
        t0, cpu0 = time.monotonic(), time.process_time()
        with pytest.raises(ConfigError) as e:
            read(corpus[name])
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
        if cpu >= 1.0 or wall >= 10:  # CPU seconds of work; wall time only against a hang
            slow.append((name, round(cpu, 2), round(wall, 2)))
        _assert_short(e.value.errors)
    assert not slow, slow
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mb < 100, f"peak RSS grew by {grown_mb:.0f} MB"


def _problems(corpus, name) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config(corpus[name], default_node="node-1")
    return e.value.errors


DEEP = [n for n in CORPUS_NAMES if n.startswith(("flow-", "block-", "in-nodes-"))]


@pytest.mark.parametrize("name", DEEP)
def test_deep_nesting_is_refused_naming_the_file_and_line(corpus, name):
    """What the user sees of a deeply nested file, whichever layer refuses it first (libyaml's own
    nesting limit, which newer PyYAML wheels apply while scanning, or the reader's MAX_DEPTH): one
    short line naming the file and the line.  The wording of libyaml's reason is libyaml's."""
    problems = _problems(corpus, name)
    assert len(problems) == 1, problems
    assert re.fullmatch(rf"{re.escape(corpus[name])}: line [0-9]+: .{{1,200}}", problems[0]), problems[0]


@pytest.mark.parametrize("name", ["flow-closed-65", "flow-map-65", "block-seq-65", "block-map-65"])
def test_the_readers_own_depth_limit(corpus, name):
    """One level past MAX_DEPTH, far below any YAML library's limit: the reader refuses it itself."""
    assert f"nested deeper than {config_file.MAX_DEPTH} levels" in "\n".join(_problems(corpus, name))


def test_the_depth_limit_itself_is_allowed(tmp_path):
    """MAX_DEPTH levels are read (and then refused as a config for what they hold, not for depth)."""
    path = tmp_path / "deep.yaml"
    path.write_text("cluster: " + "[" * (config_file.MAX_DEPTH - 1) + "]" * (config_file.MAX_DEPTH - 1) + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(path), default_node="node-1")
    assert "nested deeper" not in "\n".join(e.value.errors)


def test_specific_messages(corpus):
    def problems(name):
        return "\n".join(_problems(corpus, name))

    assert f"more than {config_file.MAX_ALIAS_NODES} nodes" in problems("alias-bomb")
    assert "not a regular file (a FIFO)" in problems("fifo")
    assert "not a regular file (a character device)" in problems("dev-zero")
    assert "not a regular file (a directory)" in problems("directory")
    assert "Too many levels of symbolic links" in problems("symlink-loop")   # the C library's ELOOP text
    assert f"larger than {config_file.MAX_BYTES} bytes" in problems("too-big")
    assert problems("latin-1").endswith("latin-1.yaml: byte 22: not UTF-8")
    assert "local.ovsdb: tcp:127.0.0.1:99999: port must be between 1 and 65535" in problems("tcp-port-99999")
    assert "local.metrics: 127.0.0.1:99999: port must be between 1 and 65535" in problems("metrics-port-99999")
    huge = problems("huge-scalar")
    assert huge.startswith("cluster.cidr: xxxxxxxx") and "... (3000000 characters): not an IPv4 CIDR" in huge
    many = problems("many-bad-nodes").splitlines()
    assert len(many) == 101 and many[-1].startswith("...: ") and many[-1].endswith("more: not shown")


def test_a_5000_node_file_loads_and_fits_the_limits(tmp_path):
    """The limits are generous: 5000 nodes (block style) load, well under the size limit."""
    data = base_config(0)
    data["cluster"].update(cidr="10.0.0.0/8")
    data["nodes"] = [{"name": f"node-{i:05d}", "ip": f"100.64.{i // 250}.{i % 250 + 1}",
                      "subnet": f"10.{(i + 1) // 256}.{(i + 1) % 256}.0/24"} for i in range(5000)]
    data["local"]["node"] = "node-00000"
    path = write_config(str(tmp_path / "c.yaml"), data)
    size = (tmp_path / "c.yaml").stat().st_size
    assert size * 4 < config_file.MAX_BYTES
    t0 = time.monotonic()
    config = load_config(path)
    print(f"5000 nodes, {size} bytes: loaded in {time.monotonic() - t0:.3f}s")
    assert len(config.nodes) == 5000


def test_local_holding_a_list_names_the_right_field(tmp_path):
    path = tmp_path / "l.yaml"
    path.write_text("local: [1, 2]\n")
    with pytest.raises(ConfigError) as e:
        read_local_file(str(path))
    assert e.value.errors == [f"{path}: local: [1, 2]: must be a mapping of local settings"]


def test_anchors_and_aliases_within_the_bound_still_work(tmp_path):
    data = (
        "cluster: &c {cidr: 10.244.0.0/16}\n"
        "nodes:\n"
        "  - &n1 {name: node-1, ip: 192.168.56.11, subnet: 10.244.1.0/24}\n"
        "  - {<<: *n1, name: node-2, ip: 192.168.56.12, subnet: 10.244.2.0/24}\n"
        "local: {node: node-1, datapath: dummy, host: false}\n")
    (tmp_path / "c.yaml").write_text(data)
    config = load_config(str(tmp_path / "c.yaml"))
    assert [n.name for n in config.nodes] == ["node-1", "node-2"]
