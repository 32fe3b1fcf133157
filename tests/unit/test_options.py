"""The option table (topology/options.py) says what the config reader does: its keys, defaults,
ranges and choices are the ones a user meets when a key is absent or wrong."""

import pytest

from topology.config import ConfigError, parse_config
from topology.model import Kubernetes
from topology.options import OPTIONS, keys_of, option

MINIMAL = {"nodes": [{"name": "node-1", "ip": "192.168.56.11", "subnet": "10.244.1.0/24"}]}


def errors_of(data) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(data, default_node="node-1")
    return [str(p) for p in e.value.errors]


def with_key(key: str, value) -> dict:
    """MINIMAL with `key` (section.name) set to `value`."""
    section, _, name = key.rpartition(".")
    data = {"nodes": MINIMAL["nodes"]}
    if section:
        data[section] = {name: value}
    else:
        data[name] = value
    return data


def _value(config, key: str):
    """What the parsed config holds for an option, spelled as the table spells its default."""
    section, _, name = key.rpartition(".")
    if key in ("cluster.cidr", "cluster.wireguard_cidr"):
        return str(getattr(config.cluster, name))
    if key == "cluster.node_prefix_ipv6":
        return config.cluster.node_prefix6
    if key == "cluster.mtu":
        return "auto" if config.cluster.mtu is None else config.cluster.mtu
    if key == "source":
        return config.source
    if section in ("cluster", "local"):
        return getattr(getattr(config, section), name)
    raise KeyError(key)


FIXED = [o.key for o in OPTIONS if o.default is not None and o.key != "nodes" and o.section in ("", "cluster", "local")]


@pytest.mark.parametrize("key", FIXED)
def test_each_default_is_what_the_reader_gives_when_the_key_is_absent(key):
    config = parse_config({"nodes": MINIMAL["nodes"]}, default_node="node-1")
    assert _value(config, key) == option(key).default


def test_defaults_without_a_fixed_value():
    config = parse_config({"nodes": MINIMAL["nodes"]}, default_node="node-1")
    assert config.local.node == "node-1"            # the hostname the caller passes
    assert config.local.ovs_rundir is None and config.local.rundir == "/var/run/openvswitch"
    assert config.local.underlay_bridge is None and config.local.underlay_interface is None
    assert config.kubernetes == Kubernetes() and config.nodes[0].name == "node-1"
    assert parse_config({"nodes": []}, require_local=False).nodes == ()
    assert option("nodes").default == []


def test_the_kubernetes_section_has_the_tables_default_and_range():
    """The reader gives the Kubernetes source a typed section with the table's default,
    and refuses a value outside the table's range."""
    doc = {"source": "kubernetes", "local": {"node": "node-1"}}
    assert parse_config(doc).kubernetes == Kubernetes(resync_seconds=option("kubernetes.resync_seconds").default)
    lo, hi = option("kubernetes.resync_seconds").range
    assert parse_config({**doc, "kubernetes": {"resync_seconds": lo}}).kubernetes.resync_seconds == lo
    for bad in (lo - 0.5, hi + 1):
        with pytest.raises(ConfigError, match=f"between {lo} and {hi}"):
            parse_config({**doc, "kubernetes": {"resync_seconds": bad}})


RANGED = [o.key for o in OPTIONS if o.range is not None]


@pytest.mark.parametrize("key", RANGED)
def test_each_range_is_what_the_reader_refuses_outside(key):
    lo, hi = option(key).range
    for bad in (lo - 1, hi + 1):
        problems = errors_of(with_key(key, bad))
        assert len(problems) == 1 and problems[0].startswith(f"{key}: {bad}: ")
        assert f"between {lo} and {hi}" in problems[0]


CHOICES = [o.key for o in OPTIONS if o.choices]


@pytest.mark.parametrize("key", CHOICES)
def test_each_choice_list_is_what_the_reader_offers(key):
    problems = errors_of(with_key(key, "bogus"))
    assert problems == [f"{key}: bogus: must be one of {', '.join(option(key).choices)}"]
    for value in option(key).choices:
        if key == "source" and value == "kubernetes":
            continue   # refuses the nodes of MINIMAL
        if key == "cluster.encryption" and value in ("ipsec", "wireguard"):
            continue   # need the kernel datapath and credentials (tests/unit/test_config_encryption.py)
        parse_config(with_key(key, value), default_node="node-1")


@pytest.mark.parametrize("section", ["", "cluster", "local", "kubernetes", "nodes[]"])
def test_each_section_accepts_exactly_the_tables_keys(section):
    allowed = ", ".join(sorted(keys_of(section)))
    if section == "nodes[]":
        data = {"nodes": [dict(MINIMAL["nodes"][0], bogus=1)]}
        path = "nodes[0].bogus"
    elif section:
        data, path = with_key(f"{section}.bogus", 1), f"{section}.bogus"
    else:
        data, path = dict(MINIMAL, bogus=1), "bogus"
    assert errors_of(data) == [f"{path}: 1: unknown key (allowed: {allowed})"]


def test_every_option_has_a_type_and_one_line_of_help():
    assert len({o.key for o in OPTIONS}) == len(OPTIONS)
    for o in OPTIONS:
        assert o.type and o.help and "\n" not in o.help, o.key
        assert not (o.default is not None and o.derived), o.key
