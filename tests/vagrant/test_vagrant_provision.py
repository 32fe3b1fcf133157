"""The VMs' provisioning script, run unchanged inside namespace-lab
nodes, builds a working mesh, and the host-side check (vagrant/check.sh -> `ovs-mesh lab
remote-check`) proves it with real packets.

Each lab node (a network namespace with its own ovsdb-server/ovs-vswitchd, made by
`build.up(apply=False)`) stands in for a VM: provision.sh runs in it with paths pointing into the
lab dir and the userspace datapath.  check.sh runs with a stand-in `vagrant` (it lists the "VMs")
and OVS_MESH_VIA entering each node's network namespace instead of ssh.
"""
import json
import os
import secrets
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import LAB_TOOLS, need

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROVISION = os.path.join(REPO, "vagrant", "provision.sh")
CHECK = os.path.join(REPO, "vagrant", "check.sh")
OVS_MESH_BIN = os.path.join(os.path.dirname(sys.executable), "ovs-mesh")


def need_tools():
    need(*LAB_TOOLS, "nsenter", root=True)
    if not os.access(OVS_MESH_BIN, os.X_OK):
        pytest.skip(f"{OVS_MESH_BIN}: ovs-mesh console script missing (pip install -e .)")


@pytest.fixture
def bare_lab(tmp_path):
    """Factory: bare lab nodes (no ovs-mesh yet); everything removed afterwards, also on failure."""
    need_tools()
    from ovs_mesh.lab import build

    made = []

    def make(nodes, tunnel, mode):
        name = "omv" + secrets.token_hex(2)[:3]
        made.append(name)
        return build.up(name, nodes=nodes, tunnel=tunnel, mode=mode, pods_per_node=0,
                        progress=lambda s: None, apply=False)
    try:
        yield make
    finally:
        for name in made:
            build.down(name, progress=lambda s: None)


def _kill_pidfile(path):
    try:
        with open(path) as f:
            pid = int(f.read())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def provision(st, node, tunnel, mode, run_mode, agent_pidfile=None):
    """Exactly what the Vagrantfile runs on a VM, with the lab node's paths and datapath."""
    env = {**os.environ,
           "OVS_MESH_NODES": " ".join(f"{n.name}={n.ip}" for n in st.nodes),
           "OVS_MESH_NODE": node.name, "OVS_MESH_TUNNEL": tunnel, "OVS_MESH_MODE": mode,
           "OVS_MESH_TOPOLOGY": os.path.join(node.dir, "topology.yaml"),
           "OVS_MESH_CONFIG": node.config, "OVS_MESH_OVSDB": f"unix:{node.rundir}/db.sock",
           "OVS_MESH_DATAPATH": "netdev", "OVS_MESH_UNDERLAY_BRIDGE": "br-phy",
           "OVS_MESH_UNDERLAY_INTERFACE": "ul0", "OVS_MESH_CNI_CONF": node.cni_conf,
           "OVS_MESH_INSTALL": "none", "OVS_MESH_BIN": OVS_MESH_BIN, "OVS_MESH_RUN": run_mode,
           "OVS_MESH_AGENT_PIDFILE": agent_pidfile or "", "OVS_MESH_AGENT_LOG": os.path.join(node.dir, "agent.log")}
    p = subprocess.run(["ip", "netns", "exec", node.ns, PROVISION], env=env, capture_output=True,
                       text=True, timeout=180)
    assert p.returncode == 0, f"provision.sh on {node.name}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    assert "converged" in p.stdout, p.stdout
    return p.stdout


def fake_vagrant(bindir, names):
    """A `vagrant` that only answers `status --machine-readable` (check.sh's VM list)."""
    os.makedirs(bindir, exist_ok=True)
    path = os.path.join(bindir, "vagrant")
    lines = "".join(f"echo '1700000000,{n},state,running'\n" for n in names)
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\n[ \"$1\" = status ] || exit 3\n{lines}")
    os.chmod(path, 0o755)


def run_check(st, tmp_path, *extra):
    """vagrant/check.sh as the user runs it, with "ssh" replaced by entering the node namespace."""
    bindir = str(tmp_path / "bin")
    fake_vagrant(bindir, [n.name for n in st.nodes])
    vmdir = tmp_path / "vm"  # each "VM" has its own /run/ovs-mesh-lab
    via = f"env OVS_MESH_LAB_DIR={vmdir}/{{node}} nsenter --net=/run/netns/{st.name}-n{{k}}"
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "OVS_MESH_VIA": via,
           "OVS_MESH_CHECK_NAME": "omv" + secrets.token_hex(2)[:3], "TMPDIR": str(tmp_path)}
    p = subprocess.run([CHECK, "--python", sys.executable, "--ovs-mesh", OVS_MESH_BIN,
                        "--remote-config", os.path.join(st.dir, "{node}", "config.yaml"), *extra],
                       env=env, capture_output=True, text=True, timeout=600)
    return p, env["OVS_MESH_CHECK_NAME"]


@pytest.mark.parametrize("tunnel, mode, nodes, run_mode", [
    ("vxlan", "flow", 3, "apply"),
    ("gre", "port", 2, "agent"),
])
def test_provisioned_nodes_form_a_mesh(bare_lab, tmp_path, tunnel, mode, nodes, run_mode):
    st = bare_lab(nodes, tunnel, mode)
    pidfiles = [str(tmp_path / f"agent-{n.name}.pid") for n in st.nodes]
    try:
        for node, pidfile in zip(st.nodes, pidfiles):
            provision(st, node, tunnel, mode, run_mode, pidfile)
        # The same topology file on every node, generated by ovs-mesh from the node list.
        topologies = {open(os.path.join(n.dir, "topology.yaml")).read() for n in st.nodes}
        assert len(topologies) == 1
        topo = topologies.pop()
        assert f"tunnel: {tunnel}" in topo and f"mode: {mode}" in topo
        assert all(f"name: {n.name}" in topo for n in st.nodes)

        p, check_name = run_check(st, tmp_path, "--json")
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr
        report = json.loads(p.stdout)
        s = report["summary"]
        assert s["ok"] and s["failed"] == 0
        assert s["pod_to_pod"] == nodes * (nodes - 1)          # one pod per VM, every ordered pair
        assert s["node_to_pod"] == nodes * (nodes - 1)
        assert s["tcp_transfers"] == nodes
        assert all(c["source_seen"] == next(q["ip"] for q in report["pods"] if q["name"] == c["src"])
                   for c in report["pod_to_pod"])              # no NAT between pods
        assert report["params"]["tunnel"] == tunnel and report["params"]["mode"] == mode
        # The check removed its pods from every node (it calls `lab down` there).
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert f"{check_name}-" not in left

        # Provisioning again (`vagrant provision`) is a no-op that stays converged.
        out = provision(st, st.nodes[0], tunnel, mode, run_mode, pidfiles[0])
        assert "apply: no changes" in out or "already running" in out
    finally:
        for pidfile in pidfiles:
            _kill_pidfile(pidfile)


def test_check_fails_when_the_mesh_is_broken(bare_lab, tmp_path):
    """check.sh exits 1 with FAIL cells when one node's overlay is dead (its ovs-vswitchd stopped)."""
    st = bare_lab(2, "vxlan", "flow")
    for node in st.nodes:
        provision(st, node, "vxlan", "flow", "apply")
    with open(os.path.join(st.nodes[1].rundir, "ovs-vswitchd.pid")) as f:
        os.kill(int(f.read()), signal.SIGTERM)
    p, _ = run_check(st, tmp_path, "--timeout", "3")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "FAIL" in p.stdout and "summary:" in p.stdout, p.stdout + p.stderr
