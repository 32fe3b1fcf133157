"""The lab and the node it builds (pods, routes, masquerade, tunnels, teardown), with real packets in
namespace labs built by `ovs-mesh lab`."""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from ovs_mesh.lab.record import LabState, lab_dir
from ovs_mesh.process import alive
from tests.helpers import CLI, run_cli, wait_for

CASES = [  # (tunnel, mode, nodes, mesh_degree)
    ("vxlan", "flow", 3, 0),
    ("gre", "flow", 3, 0),
    ("vxlan", "port", 3, 0),
    ("geneve", "port", 3, 0),
    ("gre", "stp", 4, 2),
]


def check_json(name):
    p = run_cli("lab", "check", "--name", name, "--json", timeout=300)
    report = json.loads(p.stdout)
    assert (p.returncode == 0) == report["summary"]["ok"], p.stderr
    return report


def failures(report):
    return [c for c in report["pod_to_pod"] + report["node_to_pod"] + report["tcp"] if not c["ok"]]


@pytest.mark.parametrize("tunnel,mode,nodes,degree", CASES, ids=[f"{m}-{t}-{n}" for t, m, n, _ in CASES])
def test_lab_up_and_check(lab_name, tunnel, mode, nodes, degree):
    t0 = time.monotonic()
    up = run_cli("lab", "up", "--name", lab_name, "--nodes", str(nodes), "--tunnel", tunnel, "--mode", mode,
                  "--mesh-degree", str(degree), "--pods-per-node", "2", check=True, timeout=300)
    t_up = time.monotonic() - t0
    assert f"lab {lab_name} is up" in up.stdout
    t0 = time.monotonic()
    if (tunnel, mode) == ("vxlan", "flow"):       # what a user reads: the matrix and the verdict
        p = run_cli("lab", "check", "--name", lab_name, timeout=300)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "pod -> pod" in p.stdout and "node -> pod" in p.stdout and "PASS" in p.stdout
    report = check_json(lab_name)
    t_check = time.monotonic() - t0
    print(f"{mode}+{tunnel} {nodes} nodes: lab up {t_up:.1f}s, lab check {t_check:.1f}s")
    assert report["summary"]["ok"], failures(report)
    pods = 2 * nodes
    s = report["summary"]
    assert s["ok"] and s["failed"] == 0
    assert s["pod_to_pod"] == pods * (pods - 1)
    assert s["node_to_pod"] == nodes * (pods - 2)
    assert s["tcp_transfers"] == nodes and all(t["received"] >= 10 * 1024 * 1024 for t in report["tcp"])
    ip_of = {p["name"]: p["ip"] for p in report["pods"]}
    for c in report["pod_to_pod"]:
        assert c["source_seen"] == ip_of[c["src"]]      # no NAT between pods
    cross = [c for c in report["pod_to_pod"] if c["src"].split("/")[0] != c["dst"].split("/")[0]]
    assert cross and all(c["df"] and c["df_size"] >= 1400 for c in cross)


def _vsctl(node, *args):
    return subprocess.run(["ip", "netns", "exec", node.ns, "ovs-vsctl", f"--db=unix:{node.rundir}/db.sock",
                           *args], capture_output=True, text=True, check=True).stdout


def _flows(node, bridge="obr0"):
    return subprocess.run(["ip", "netns", "exec", node.ns, "ovs-ofctl", "-O", "OpenFlow13", "dump-flows",
                           f"unix:{node.rundir}/{bridge}.mgmt"], capture_output=True, text=True,
                          check=True).stdout


def test_node_removed_from_topology(lab_name):
    run_cli("lab", "up", "--name", lab_name, "--nodes", "3", "--tunnel", "vxlan", "--mode", "port",
            check=True, timeout=300)
    st = LabState.load(lab_name)
    gone = st.nodes[2]
    subnet = next(e["subnet"] for e in _topology(st)["nodes"] if e["name"] == gone.name)
    from ovs_mesh.lab.topology import read_yaml, write_yaml

    topo = read_yaml(st.topology_path)
    topo["nodes"] = [e for e in topo["nodes"] if e["name"] != gone.name]
    write_yaml(st.topology_path, topo)
    out = run_cli("lab", "apply", "--name", lab_name, check=True, timeout=300).stdout
    assert f"{gone.name}: not in" in out

    report = check_json(lab_name)
    assert report["summary"]["ok"], failures(report)
    for c in report["pod_to_pod"] + report["node_to_pod"]:
        src_node, dst_node = c["src"].split("/")[0], c["dst"].split("/")[0]
        if gone.name in (src_node, dst_node) and src_node != dst_node:
            assert not c["ping"], c                        # the removed node's pods are unreachable
        elif gone.name not in (src_node, dst_node):
            assert c["ping"] and c["ok"], c               # every other pair still passes
    for node in st.nodes[:2]:                              # no state for it on any node
        show = _vsctl(node, "show")
        assert gone.ip not in show
        assert gone.name not in _vsctl(node, "--columns=external_ids", "list", "Port")
        flows = _flows(node)
        assert subnet not in flows and gone.ip not in flows


def _topology(st):
    from ovs_mesh.lab.topology import read_yaml

    return read_yaml(st.topology_path)


def _ns(node, *args):
    return subprocess.run(["ip", "netns", "exec", node.ns, *args], capture_output=True, text=True)


def test_teardown_on_a_lab_node(lab_name):
    run_cli("lab", "up", "--name", lab_name, "--nodes", "2", "--pods-per-node", "1", check=True, timeout=300)
    st = LabState.load(lab_name)
    node, other = st.nodes
    assert _ns(node, "ip", "link", "show", "kbr0").returncode == 0
    assert os.path.exists(node.cni_conf)
    from ovs_mesh.lab import agents

    pid = agents.pid_of(node)
    assert pid is not None                                  # the lab runs an agent on the node ...
    agents.stop(node)
    assert agents.pid_of(node) is None and not alive(pid)   # ... stopped: else it would build it all again
    p = subprocess.run(agents.command(st, node, "teardown"), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert _ns(node, "ip", "link", "show", "kbr0").returncode != 0           # kbr0 gone
    assert "obr0" not in _vsctl(node, "list-br").split()                     # obr0 gone
    assert _ns(node, "ip", "link", "show", "obr0").returncode != 0
    assert "10.244." not in _ns(node, "ip", "route", "show").stdout          # cluster route gone
    assert _ns(node, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "0"
    assert not os.path.exists(node.cni_conf)                           # CNI file gone
    # The underlay still works: the node IP answers from another node.
    wait_for(lambda: _ns(other, "ping", "-c1", "-W1", node.ip).returncode == 0, 10,
             f"{node.ip} to answer {other.name} after teardown", interval=0)


def _leftovers(name, pids):
    ns = [l.split()[0] for l in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
          .stdout.splitlines() if l.split() and l.split()[0].startswith(name + "-")]
    links = [l for l in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.splitlines()
             if f": {name}" in l]
    running = [pid for pid in pids if alive(pid)]
    procs = [l for l in subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
             if lab_dir(name) in l]
    return {"netns": ns, "links": links, "pids": running, "procs": procs, "dir": os.path.exists(lab_dir(name))}


def _pids(name):
    out = []
    for root, _, files in os.walk(lab_dir(name)):
        for f in files:
            if f.endswith(".pid"):
                try:
                    out.append(int(open(os.path.join(root, f)).read()))
                except (OSError, ValueError):
                    pass
    return out


def _kill_up_at(lab_name: str, nodes: int, marker: str) -> list[int]:
    """Start `lab up`, SIGKILL it when it prints `marker`; the lab's pids at that moment."""
    proc = subprocess.Popen([*CLI, "lab", "up", "--name", lab_name, "--nodes", str(nodes)],
                            stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if marker in line:
                break
        pids = _pids(lab_name)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    return pids


def test_down_leaves_nothing(lab_name):
    """Also after a crash: `lab up` killed half-way, then `lab down` (twice: idempotent)."""
    pids = _kill_up_at(lab_name, 3, "node-2: namespace")  # once some daemons run
    assert pids and _leftovers(lab_name, pids)["netns"]
    run_cli("lab", "down", "--name", lab_name, check=True, timeout=300)
    assert _leftovers(lab_name, pids) == {"netns": [], "links": [], "pids": [], "procs": [], "dir": False}

    # Killed once the agents run: `lab down` stops them (from the record) before their OVS.
    pids = _kill_up_at(lab_name, 2, "ovs-mesh agent pid")
    agent_pids = [int(open(os.path.join(lab_dir(lab_name), n, "agent.pid")).read()) for n in ("node-1", "node-2")]
    assert all(os.path.exists(f"/proc/{pid}") for pid in agent_pids)
    out = run_cli("lab", "down", "--name", lab_name, check=True, timeout=300).stdout
    assert out.index("stopped the ovs-mesh agent") < out.index("stopped ovsdb-server/ovs-vswitchd"), out
    assert _leftovers(lab_name, pids) == {"netns": [], "links": [], "pids": [], "procs": [], "dir": False}

    run_cli("lab", "up", "--name", lab_name, "--nodes", "2", "--pods-per-node", "1", check=True, timeout=300)
    pids = _pids(lab_name)
    assert len(pids) >= 4
    run_cli("lab", "down", "--name", lab_name, check=True, timeout=300)
    assert _leftovers(lab_name, pids) == {"netns": [], "links": [], "pids": [], "procs": [], "dir": False}
    assert "not found" in run_cli("lab", "down", "--name", lab_name, check=True, timeout=300).stdout

    # Even with its record gone, `lab down` finds the lab's namespaces by name.
    run_cli("lab", "up", "--name", lab_name, "--nodes", "2", "--pods-per-node", "1", check=True, timeout=300)
    pids = _pids(lab_name)
    shutil.rmtree(lab_dir(lab_name))
    run_cli("lab", "down", "--name", lab_name, check=True, timeout=300)
    assert _leftovers(lab_name, pids) == {"netns": [], "links": [], "pids": [], "procs": [], "dir": False}


def test_bad_input_exits_2():
    p = run_cli("lab", "up", "--name", "Bad_Name", timeout=300)
    assert p.returncode == 2 and "--name: Bad_Name" in p.stderr
    p = run_cli("lab", "up", "--name", "tx", "--tunnel", "ipip", timeout=300)
    assert p.returncode == 2
    p = run_cli("lab", "check", "--name", "nolab", timeout=300)
    assert p.returncode == 2 and "no such lab" in p.stderr


def test_up_refuses_an_existing_lab_and_cleans_up_its_own_failure(lab_name):
    """A lab that exists is left alone (exit 1, nothing removed); a step of `lab up` that fails, even
    with "File exists" in its message, makes `lab up` remove what it built."""
    run_cli("lab", "up", "--name", lab_name, "--nodes", "1", "--pods-per-node", "0", check=True, timeout=300)
    p = run_cli("lab", "up", "--name", lab_name, "--nodes", "1", timeout=300)
    assert p.returncode == 1 and f"lab {lab_name} exists" in p.stderr and "removing" not in p.stderr
    assert [n.name for n in LabState.load(lab_name).nodes] == ["node-1"] and os.path.exists(f"/run/netns/{lab_name}-n1")
    run_cli("lab", "down", "--name", lab_name, check=True, timeout=300)

    subprocess.run(["ip", "netns", "add", f"{lab_name}-ul"], check=True)   # in the way of `lab up`
    p = run_cli("lab", "up", "--name", lab_name, "--nodes", "1", timeout=300)
    assert p.returncode == 1 and "File exists" in p.stderr and "removing what was built" in p.stderr, p.stderr
    assert LabState.load(lab_name) is None and not os.path.exists(lab_dir(lab_name))
