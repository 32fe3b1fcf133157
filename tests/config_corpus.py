"""Files an attacker or a careless operator could put where a config is read.

`build(directory)` writes each into `directory` and returns {name: path}.  Every
one must be refused with exit 2 and a short `path: value: reason`, within a
second, by `validate`, `allocate`, `--local` and a running agent.  Sizes come
from issue reports: 50 000 nested `[` segfaulted libyaml, 1 000-20 000 levels
gave a RecursionError, a 520-byte alias bomb took an agent to 1.5 GB.
"""
from __future__ import annotations

import os


def _laughs(levels: int = 9, width: int = 9) -> str:
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def _texts() -> dict[str, bytes | str]:
    good_head = ("cluster: {cidr: 10.244.0.0/16}\n"
                 "local: {node: node-1, datapath: dummy, host: false}\n")
    node = "  - {name: node-1, ip: 192.168.56.11, subnet: 10.244.1.0/24}\n"
    out: dict[str, bytes | str] = {}
    for n in (1_000, 20_000, 50_000):
        out[f"flow-seq-{n}"] = "[" * n                      # unclosed, as in the report
        out[f"flow-closed-{n}"] = "[" * n + "]" * n           # well-formed, just deep
        out[f"flow-map-{n}"] = "{a: " * n + "1" + "}" * n
        out[f"block-seq-{n}"] = "- " * n + "x\n"              # block sequences, one per `- `
        out[f"in-nodes-{n}"] = good_head + "nodes:\n  - " + "[" * n + "\n"
    # One level past the reader's own limit (MAX_DEPTH = 64): libyaml's limits are far above it,
    # so the reader is the layer that refuses these, whatever the YAML library's version.
    out["flow-closed-65"] = "[" * 65 + "]" * 65
    out["flow-map-65"] = "{a: " * 65 + "1" + "}" * 65
    out["block-seq-65"] = "- " * 65 + "x\n"
    out["block-map-65"] = "".join("  " * i + "a:\n" for i in range(65)) + "  " * 65 + "b: 1\n"
    out["block-map-1000"] = "".join("  " * i + "a:\n" for i in range(1_000)) + "  " * 1_000 + "b: 1\n"
    out["alias-bomb"] = _laughs()                             # 9^9 "lol"s in ~500 bytes
    out["alias-bomb-as-nodes"] = good_head + _laughs() + "nodes: *a8\n"
    out["alias-bomb-as-cidr"] = _laughs() + "cluster: {cidr: *a8}\n"
    out["alias-recursive"] = good_head + "nodes: &n [*n]\n"
    out["huge-scalar"] = "cluster:\n  cidr: \"" + "x" * 3_000_000 + "\"\n"
    out["huge-key"] = "cluster:\n  " + "k" * 3_000_000 + ": 1\n"
    out["huge-node-name"] = good_head + "nodes:\n  - {name: " + "n" * 3_000_000 + ", ip: 192.168.56.11}\n"
    out["many-bad-nodes"] = good_head + "nodes: [" + "1, " * 90_000 + "1]\n"
    out["too-many-yaml-nodes"] = good_head + "nodes: [" + "1, " * 150_000 + "1]\n"
    out["many-unknown-keys"] = "".join(f"k{i}: {i}\n" for i in range(60_000))
    out["too-big"] = good_head + "nodes:\n" + node + "#" * (5 << 20) + "\n"
    out["binary"] = bytes(range(256)) * 64
    out["nul-bytes"] = b"cluster: {cidr: 10.244.0.0/16}\n\x00\x00\x00\n"
    out["latin-1"] = "cluster:\n  tunnel: caf\u00e9\n".encode("latin-1")
    out["python-tag"] = '!!python/object/apply:os.system ["touch /tmp/ovsm-pwned"]\n'
    out["int-5000-digits"] = "cluster: {vxlan_port: " + "9" * 5000 + "}\n"   # int() refuses > 4300 digits
    out["bad-timestamp"] = "cluster: {cidr: 2001-13-45}\n"
    out["empty-int-tag"] = "cluster: {vxlan_port: !!int ''}\n"
    out["two-documents"] = "cluster: {}\n---\ncluster: {}\n"
    out["duplicate-keys"] = "cluster: {}\ncluster: {}\n"
    out["tcp-port-99999"] = good_head.replace("host: false", "host: false, ovsdb: 'tcp:127.0.0.1:99999'") \
        + "nodes:\n" + node
    out["metrics-port-99999"] = good_head.replace("host: false", "host: false, metrics: '127.0.0.1:99999'") \
        + "nodes:\n" + node
    # IPv6: ranges whose node subnets could not be counted, let alone listed
    v6_local = "local: {node: node-1, datapath: dummy, host: false}\n"
    out["ipv6-range-2^117-subnets"] = ("cluster: {cidr: '2000::/3', node_prefix_ipv6: 120}\n" + v6_local
                                       + "nodes:\n  - {name: node-1, ip: 192.168.56.11}\n")
    out["ipv6-whole-space"] = ("cluster: {cidr: '::/0', node_prefix_ipv6: 16}\n" + v6_local
                               + "nodes:\n  - {name: node-1, ip: 192.168.56.11}\n")
    out["ipv6-comma-bomb"] = "cluster:\n  cidr: \"" + "fd00::/56," * 200_000 + "\"\n" + v6_local
    out["ipv6-mapped-underlay"] = ("cluster: {cidr: '10.244.0.0/16,fd00:10:244::/56'}\n" + v6_local
                                   + "nodes:\n  - {name: node-1, ip: '::ffff:192.168.56.11'}\n")
    return out


def build(directory: str) -> dict[str, str]:
    paths = {}
    for name, text in _texts().items():
        path = os.path.join(directory, f"{name}.yaml")
        with open(path, "wb") as f:
            f.write(text.encode() if isinstance(text, str) else text)
        paths[name] = path
    fifo = os.path.join(directory, "fifo.yaml")
    os.mkfifo(fifo)
    paths["fifo"] = fifo
    for name, target in (("dev-zero", "/dev/zero"), ("dev-urandom", "/dev/urandom")):
        paths[name] = os.path.join(directory, f"{name}.yaml")
        os.symlink(target, paths[name])
    paths["directory"] = os.path.join(directory, "directory.yaml")
    os.mkdir(paths["directory"])
    loop_a, loop_b = os.path.join(directory, "loop-a.yaml"), os.path.join(directory, "loop-b.yaml")
    os.symlink(loop_b, loop_a)
    os.symlink(loop_a, loop_b)
    paths["symlink-loop"] = loop_a
    return paths
