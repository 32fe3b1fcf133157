"""`lab up --pods podman`: the pods are made by a real container engine (podman, CNI backend)
from the conflist ovs-mesh wrote, not by the lab calling the plugins; `lab check` proves them
with real packets, IPv4 and dual-stack, and `lab down` leaves no container behind."""
import json
import subprocess

import pytest

from ovs_mesh.lab.record import LabState
from tests.helpers import need, run_cli
from tests.lab.conftest import need_lab_tools


def containers(prefix):
    p = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True,
                       timeout=60, check=True)
    return sorted(n for n in p.stdout.split() if n.startswith(prefix + "-"))


@pytest.mark.parametrize("family", ["ipv4", "dual"])
def test_pods_made_by_podman_pass_lab_check(lab_name, family):
    need_lab_tools()
    need("podman", "runc", "nsenter", "/bin/busybox", root=True)
    up = run_cli("lab", "up", "--name", lab_name, "--nodes", "2", "--pods-per-node", "2", "--ip-family",
                 family, "--pods", "podman", check=True, timeout=300)
    assert "(podman, CNI bridge)" in up.stdout
    st = LabState.load(lab_name)
    assert {p["runtime"] for p in st.pods} == {"podman"} and len(st.pods) == 4
    assert all(len(p["ips"]) == (2 if family == "dual" else 1) for p in st.pods)
    assert containers(lab_name) == sorted(p["container"] for p in st.pods)
    check = run_cli("lab", "check", "--name", lab_name, "--json", timeout=300)
    report = json.loads(check.stdout)
    assert check.returncode == 0 and report["summary"]["ok"], check.stdout[-4000:]
    run_cli("lab", "down", "--name", lab_name, check=True, timeout=300)
    assert containers(lab_name) == []


def test_podman_pods_are_refused_without_podman(lab_name, monkeypatch, tmp_path):
    """Where podman is missing, `--pods podman` is an input error naming what to install."""
    need_lab_tools()
    monkeypatch.setenv("PATH", str(tmp_path))   # no podman, no nsenter on this PATH
    p = run_cli("lab", "up", "--name", lab_name, "--nodes", "2", "--pods", "podman", timeout=60)
    assert p.returncode == 2 and "--pods podman: podman is not installed" in p.stderr


def test_lab_down_removes_podman_pods_it_has_no_pod_record_of(lab_name):
    """A lab that died between `podman run` and writing the pod down: the container was recorded
    before it was made, and `lab down` removes it (and its namespace) all the same."""
    need_lab_tools()
    need("podman", "runc", "nsenter", "/bin/busybox", root=True)
    run_cli("lab", "up", "--name", lab_name, "--nodes", "2", "--pods-per-node", "1", "--no-agent",
            "--pods", "podman", check=True, timeout=300)
    st = LabState.load(lab_name)
    spaces = {p["ns"] for p in st.pods}
    st.data["pods"] = []
    st.save()
    assert len(containers(lab_name)) == 2
    run_cli("lab", "down", "--name", lab_name, check=True, timeout=300)
    assert containers(lab_name) == []
    assert not spaces & set(subprocess.run(["ip", "netns"], capture_output=True, text=True).stdout.split())
