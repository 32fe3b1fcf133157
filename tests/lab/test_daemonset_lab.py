"""The DaemonSet as a kubelet would run it: deploy/kubernetes/ovs-mesh.yaml's pod spec (read from
the file), the image build-image.sh makes from Debian packages, podman as the runtime, a lab node's
namespace as the host network and its OVS run directory and CNI directory as the host paths.

The container converges a node from scratch (like the process agent: `lab check` proves it with
real packets), follows a live ConfigMap edit, stops within its grace period on SIGTERM leaving
traffic flowing, and answers its probes as the manifest expects, also while a first pass is slow.
"""
import os
import signal
import subprocess
import time

import pytest
from ruamel.yaml import YAML

from ovs_mesh.lab.pods import add_pod
from ovs_mesh.lab.record import LabState
from tests import podspec
from tests.helpers import need, run_cli, wait_for
from tests.kube import fake_apiserver
from tests.lab import daemonset
from tests.lab.conftest import need_lab_tools

# First pass stalled this long (ovsdb-server stopped): past the liveness probe's initial delay,
# short of its failureThreshold.
STALL_SECONDS = 30


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    need_lab_tools()
    need(*daemonset.TOOLS, root=True)
    conf = daemonset.containers_conf(str(tmp_path_factory.mktemp("podman")))
    old = os.environ.get("CONTAINERS_CONF")
    os.environ["CONTAINERS_CONF"] = conf
    try:
        yield daemonset.agent_image()
    finally:
        if old is None:
            os.environ.pop("CONTAINERS_CONF", None)
        else:
            os.environ["CONTAINERS_CONF"] = old


def lab_check(name):
    p = run_cli("lab", "check", "--name", name, timeout=300)
    assert p.returncode == 0, f"lab check failed:\n{p.stdout}\n{p.stderr}"
    return p.stdout


def obr0_flows(node):
    p = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", f"unix:{node.rundir}/obr0.mgmt",
                        "table=10"], capture_output=True, text=True, timeout=30)
    return p.stdout


def pod_for(lab, node, tmp_path, image):
    """The lab's record, the node, the manifest, its ConfigMap config for this lab, the pod."""
    st = LabState.load(lab)
    n = st.node(node)
    with open(n.local, encoding="utf-8") as f:
        local = YAML(typ="safe").load(f)
    docs = podspec.load()
    cfg = daemonset.lab_configmap(docs, st.topology_path, local.get("local", local))
    return st, n, docs, cfg, daemonset.DaemonSetPod(docs, image, lab, n, str(tmp_path), cfg)


def test_the_daemonset_pod_converges_a_node_follows_its_configmap_and_stops_cleanly(lab_name, image, tmp_path):
    assert podspec.problems(podspec.load()) == []
    run_cli("lab", "up", "--name", lab_name, "--nodes", "2", "--pods-per-node", "0", "--no-agent",
            "--pods", "podman", check=True, timeout=300)
    st, n1, docs, cfg, pod = pod_for(lab_name, "node-1", tmp_path, image)
    # node-1 from scratch: nothing of ovs-mesh's left on it.
    run_cli("--config", st.topology_path, "--local", n1.local, "teardown", netns=n1.ns, check=True)
    assert "10.244.1.0/24" not in obr0_flows(n1)
    try:
        pod.start()
        ready = wait_for(lambda: pod.probe("readinessProbe").status == 200 or not pod.running(), timeout=60,
                         what="the readiness probe", interval=0.5)
        assert ready and pod.running(), pod.logs()
        assert "10.244.1.0/24" in obr0_flows(n1)
        assert pod.probe("livenessProbe").status == 200
        # Pods made on both nodes now, by podman from the conflist the container wrote.
        for n in st.nodes:
            assert add_pod(st, n, 1)["runtime"] == "podman"
        st.save()
        lab_check(lab_name)

        # The ConfigMap edited live: a new peer appears in node-1's flows, and leaves again.
        grown = {**cfg, "nodes": [*cfg["nodes"], {"name": "node-9", "ip": "192.168.213.19",
                                                   "subnet": "10.244.9.0/24"}]}
        pod.write_configmap(grown)
        wait_for(lambda: "10.244.9.0/24" in obr0_flows(n1), timeout=15, what="the ConfigMap's new peer in obr0")
        pod.write_configmap(cfg)
        wait_for(lambda: "10.244.9.0/24" not in obr0_flows(n1), timeout=15, what="the peer's removal")

        # SIGTERM: the agent exits on its own well within the grace, leaving the mesh installed.
        took, code = pod.stop()
        assert code == 0, f"exit {code} after {took:.1f}s\n{pod.logs()[-3000:]}"
        assert took < podspec.grace_seconds(docs), f"the agent took {took:.1f}s (grace {podspec.grace_seconds(docs)}s)"
        assert "leaving bridges, ports and flows in place" in pod.logs()
        lab_check(lab_name)
    finally:
        pod.remove()


def test_the_probes_answer_as_the_manifest_expects_during_a_slow_first_pass(lab_name, image, tmp_path):
    run_cli("lab", "up", "--name", lab_name, "--nodes", "2", "--pods-per-node", "1", "--no-agent",
            check=True, timeout=300)
    st, n1, docs, cfg, pod = pod_for(lab_name, "node-1", tmp_path, image)
    live = podspec.Probe.of(podspec.container(docs), "livenessProbe")
    assert live.initial_delay < STALL_SECONDS < live.initial_delay + live.period * live.failure_threshold
    with open(os.path.join(n1.rundir, "ovsdb-server.pid")) as f:
        ovsdb = int(f.read().strip())
    os.kill(ovsdb, signal.SIGSTOP)
    try:
        pod.start()
        stalled = pod.probe_schedule(STALL_SECONDS)
    finally:
        os.kill(ovsdb, signal.SIGCONT)
    try:
        resumed_at = time.monotonic() - pod.started
        after = pod.probe_schedule(resumed_at + live.period, since=resumed_at)
        results = stalled + after
        report = "\n".join(f"{r.t:6.1f}s {r.kind:15} {r.status}" for r in results) + "\n" + pod.logs()[-3000:]
        # Every probe answered within its timeout once the agent listened (by the second
        # readiness probe), even while the first pass hung on OVSDB.
        ready = podspec.Probe.of(podspec.container(docs), "readinessProbe")
        first = next(i for i, r in enumerate(results) if r.status)
        assert all(r.status for r in results[first:]), report
        assert results[first].t <= ready.initial_delay + ready.period + 1, report
        assert not any(r.status == 200 for r in stalled if r.kind == "readinessProbe"), report
        assert any(r.kind == "livenessProbe" for r in stalled), report
        assert daemonset.liveness_kill(results, docs) is None, report
        assert pod.running(), report
        # Ready at the first readiness probe after OVSDB came back, alive from then on.
        assert [r.status for r in after if r.kind == "readinessProbe"][-1] == 200, report
        assert [r.status for r in after if r.kind == "livenessProbe"][-1] == 200, report
        lab_check(lab_name)
    finally:
        pod.remove()


def test_the_shipped_configmap_takes_its_peers_from_the_api_with_list_and_watch_only(lab_name, image, tmp_path,
                                                                                     monkeypatch):
    """The ConfigMap as shipped (source: kubernetes), the API server a fake one in the node's
    network namespace (a kubeconfig in the ConfigMap stands in for the ServiceAccount's in-cluster
    config): the container converges the node from the Nodes' podCIDRs and InternalIPs, follows a
    Node added to the API, and asks the API for nothing but list and watch of Nodes, what the
    ClusterRole grants."""
    run_cli("lab", "up", "--name", lab_name, "--nodes", "2", "--pods-per-node", "0", "--no-agent",
            "--pods", "podman", check=True, timeout=300)
    st, n1, docs, _, pod = pod_for(lab_name, "node-1", tmp_path, image)
    asked: list[str] = []
    monkeypatch.setattr(fake_apiserver._Handler, "log_request",
                        lambda self, code="-", size="-": asked.append(f"{self.command} {self.path} {code}"))
    api = daemonset.in_netns(n1.ns, fake_apiserver.FakeApiServer)
    try:
        for n in st.nodes:
            api.add(fake_apiserver.make_node(n.name, n.ip, f"10.244.{n.k - 1}.0/24"))
        with open(n1.local, encoding="utf-8") as f:
            local = YAML(typ="safe").load(f)
        cfg = podspec.agent_config(docs)
        assert cfg["source"] == "kubernetes"
        cfg["kubernetes"] = {**cfg.get("kubernetes", {}), "kubeconfig": "/etc/ovs-mesh/kubeconfig"}
        cfg["local"] = {**cfg["local"], **daemonset.local_datapath(local.get("local", local))}
        pod.write_configmap(cfg, kubeconfig=open(api.kubeconfig(str(tmp_path / "kubeconfig"))).read())
        run_cli("--config", st.topology_path, "--local", n1.local, "teardown", netns=n1.ns, check=True)
        pod.start()
        ready = wait_for(lambda: pod.probe("readinessProbe").status == 200 or not pod.running(), timeout=60,
                         what="the readiness probe", interval=0.5)
        assert ready and pod.running(), pod.logs()
        assert "10.244.1.0/24" in obr0_flows(n1), pod.logs()
        for n in st.nodes:
            add_pod(st, n, 1)
        st.save()
        lab_check(lab_name)
        api.add(fake_apiserver.make_node("node-9", "192.168.213.19", "10.244.9.0/24"))
        wait_for(lambda: "10.244.9.0/24" in obr0_flows(n1), timeout=15, what="the new Node's subnet in obr0")
        pod.stop()
        verbs = {("watch" if "watch=true" in a else "list") if a.startswith("GET /api/v1/nodes?") or
                 a.startswith("GET /api/v1/nodes ") else a for a in asked}
        assert verbs == {"list", "watch"}, asked
        rbac = podspec.doc(docs, "ClusterRole")["rules"]
        assert [set(r["verbs"]) for r in rbac] == [verbs]
    finally:
        pod.remove()
        api.close()
