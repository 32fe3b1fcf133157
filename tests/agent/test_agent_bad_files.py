"""The agent fed every file of the adversarial corpus (tests/config_corpus.py) as edits of its config.

After each bad file: the agent is still running, logged it in at most a few
lines, its RSS stays within 100 MB of what it was when converged, and the next
good edit reaches OVS within 2 s.  Regular files are swapped in atomically like
an editor or a generator would; FIFOs, devices, directories and symlink loops
are swapped in as a symlink, like a Kubernetes ConfigMap volume does.
"""
from __future__ import annotations

import copy
import os
import shutil
import time

from tests import config_corpus
from tests.agent.conftest import our_flows
from tests.helpers import sandbox_config, wait_for

NODE3 = {"name": "node-3", "ip": "192.168.56.13", "subnet": "10.244.3.0/24"}
MAX_LOG_LINES = 3        # a bad file gets one line; a little slack for a reconcile line
MAX_RSS_GROWTH_KB = 100 * 1024


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def swap_in(config: str, target: str) -> None:
    """Make `config` be `target` at once: a copy for a regular file, else a symlink to it."""
    tmp = config + ".swap"
    if os.path.isfile(target) and not os.path.islink(target):
        shutil.copyfile(target, tmp)
    else:
        os.symlink(target, tmp)
    os.replace(tmp, config)


def test_no_file_brings_the_agent_down(ovs, agent_factory, tmp_path):
    corpus = config_corpus.build(str(tmp_path))
    good = sandbox_config(ovs)
    grown = copy.deepcopy(good)
    grown["nodes"].append(NODE3)
    a = agent_factory(good).start()
    a.wait_ready()
    base_rss = rss_kb(a.proc.pid)
    peak_rss, worst_apply, report = base_rss, 0.0, []
    with_node3 = False
    changed = f"config {os.path.abspath(a.config)} changed: "   # the file source read a good edit
    for name, path in sorted(corpus.items()):
        log_before = a.log()
        swap_in(a.config, path)
        wait_for(lambda: a.log().count("keeping the last good config") > log_before.count(
            "keeping the last good config") or a.proc.poll() is not None, 5, f"{name} logged")
        assert a.proc.poll() is None, f"agent exited on {name}:\n{a.log()[-3000:]}"
        peak_rss = max(peak_rss, rss_kb(a.proc.pid))
        # the last good state is still in OVS
        assert ("nw_dst=10.244.3.0/24" in our_flows(ovs)) == with_node3, name
        # the next good edit is applied promptly
        with_node3 = not with_node3
        t0 = time.monotonic()
        a.write(grown if with_node3 else good, atomic=True)
        wait_for(lambda: ("nw_dst=10.244.3.0/24" in our_flows(ovs)) == with_node3, 2,
                 f"the good edit after {name}")
        worst_apply = max(worst_apply, time.monotonic() - t0)
        # What the agent printed about the bad file: every line before the one saying it read
        # the good edit (logged before that edit's pass, so it is in the log by now).
        new_lines = a.log()[len(log_before):].splitlines()
        good_read = next((i for i, line in enumerate(new_lines) if changed in line), None)
        assert good_read is not None, (name, new_lines)
        new_lines = new_lines[:good_read]
        assert len(new_lines) <= MAX_LOG_LINES, (name, new_lines)
        assert sum(map(len, new_lines)) < 4000, (name, sum(map(len, new_lines)))
        report.append(f"{name}: {len(new_lines)} log line(s)")
    print("\n".join(report))
    print(f"{len(corpus)} bad files: RSS {base_rss} kB -> peak {peak_rss} kB; "
          f"slowest good edit after a bad one: {worst_apply:.3f}s")
    assert peak_rss - base_rss < MAX_RSS_GROWTH_KB
    assert a.proc.poll() is None
