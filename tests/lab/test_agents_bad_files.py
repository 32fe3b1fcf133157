"""No file can bring the agents down — the namespace lab, under a continuous ping.

Two nodes, one pod each, an agent per node on the shared topology file.  Every
file of the adversarial corpus (tests/config_corpus.py) is swapped in for the
topology file, then the good file is put back.  A 10/s ping from one pod to the
other loses nothing, no agent exits or restarts, each logs a bad file in at
most a few lines, and its RSS stays within 100 MB of what it was.
"""
import os
import shutil

import pytest

from ovs_mesh.lab import agents
from tests import config_corpus
from tests.agent.test_agent_bad_files import MAX_LOG_LINES, MAX_RSS_GROWTH_KB, rss_kb, swap_in
from tests.helpers import wait_for
from tests.lab.conftest import flow_lab
from tests.lab.test_agents import Ping, pod_of, wait_ping

MARK = "keeping the last good config"
BACK = "is back to the config in force"
# Bad only in their `local` section, which the lab's agents take from --local: here they are
# valid one-node topologies (the sandbox agent test feeds them).
LOCAL_ONLY = ("tcp-port-99999", "metrics-port-99999")


@pytest.fixture(scope="module")
def lab():
    yield from flow_lab("i")


def _log(node) -> str:
    with open(node.agent_log, errors="replace") as f:
        return f.read()


def test_bad_topology_files_under_ping(lab, tmp_path):
    st = lab
    corpus = config_corpus.build(str(tmp_path))
    good = str(tmp_path / "good-topology.yaml")
    shutil.copyfile(st.topology_path, good)
    a, b = pod_of(st, "node-1"), pod_of(st, "node-2")
    wait_ping(a["ns"], b["ip"])
    pids = {n.name: agents.pid_of(n) for n in st.nodes}
    assert all(pids.values()), pids
    base_rss = {name: rss_kb(pid) for name, pid in pids.items()}
    peak_rss = dict(base_rss)
    ping = Ping(a["ns"], b["ip"], 0.1)
    try:
        ping.wait_for(lambda r: len(r) >= 3, 10, "first replies")
        for name, path in sorted(corpus.items()):
            if name in LOCAL_ONLY:
                continue
            before = {n.name: _log(n) for n in st.nodes}
            swap_in(st.topology_path, path)
            for n in st.nodes:
                wait_for(lambda: _log(n).count(MARK) > before[n.name].count(MARK), 5,
                         f"{n.name} logging {name}")
            swap_in(st.topology_path, good)  # back to the good file: nothing to reconcile
            for n in st.nodes:
                wait_for(lambda: _log(n).count(BACK) > before[n.name].count(BACK), 5,
                         f"{n.name} seeing the good file again after {name}")
            for n in st.nodes:
                assert agents.pid_of(n) == pids[n.name] and os.path.exists(f"/proc/{pids[n.name]}"), \
                    f"{n.name}'s agent is gone after {name}:\n{_log(n)[-3000:]}"
                peak_rss[n.name] = max(peak_rss[n.name], rss_kb(pids[n.name]))
                new_lines = _log(n)[len(before[n.name]):].splitlines()
                assert len(new_lines) <= MAX_LOG_LINES, (n.name, name, new_lines)
        seen = len(ping.replies)
        ping.wait_for(lambda r: len(r) >= seen + 10, 10, "replies after the last file")
        sent, received = ping.stop()
    finally:
        ping.kill()
    print(f"{len(corpus) - len(LOCAL_ONLY)} bad topology files; ping -i 0.1 {a['name']} -> {b['name']}: {sent} sent, "
          f"{received} received; RSS kB before/peak: " +
          ", ".join(f"{k} {base_rss[k]}/{peak_rss[k]}" for k in sorted(base_rss)))
    assert sent >= 20 and received == sent, f"{sent - received} of {sent} lost"
    for k in base_rss:
        assert peak_rss[k] - base_rss[k] < MAX_RSS_GROWTH_KB, (k, base_rss[k], peak_rss[k])
