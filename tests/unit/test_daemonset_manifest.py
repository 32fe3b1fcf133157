"""deploy/kubernetes/ovs-mesh.yaml gives the agent what it needs and nothing more: each harmful
edit of the manifest (a mount removed, a capability dropped, a probe port changed, privileges or
RBAC widened, memory below the figures measured at 5000 Nodes) is caught, with the field named.
The lab tier (tests/lab/test_daemonset_lab.py) runs the same file's pod spec with podman."""
import copy
import os

import pytest

from tests import podspec

DOCS = podspec.load()


def mutated(edit):
    docs = copy.deepcopy(DOCS)
    edit(docs)
    return podspec.problems(docs)


def agent(docs):
    return podspec.container(docs)


def remove_mount(path):
    def edit(docs):
        c = agent(docs)
        c["volumeMounts"] = [m for m in c["volumeMounts"] if m["mountPath"] != path]
    return edit


def drop_cap(cap):
    def edit(docs):
        caps = agent(docs)["securityContext"]["capabilities"]
        caps["add"] = [c for c in caps["add"] if c != cap]
    return edit


def probe_port(kind, port):
    def edit(docs):
        agent(docs)[kind]["httpGet"]["port"] = port
    return edit


def set_field(path, value):
    """Set agent container field a.b.c (dotted) to value."""
    def edit(docs):
        d = agent(docs)
        *head, last = path.split(".")
        for k in head:
            d = d.setdefault(k, {})
        d[last] = value
    return edit


def test_the_manifest_gives_the_agent_what_it_needs():
    assert podspec.problems(DOCS) == []


def test_the_manifest_is_not_privileged():
    sc = agent(DOCS)["securityContext"]
    assert not sc.get("privileged")
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}


@pytest.mark.parametrize("edit, field", [
    (remove_mount("/var/run/openvswitch"), "volumeMounts: nothing mounted at /var/run/openvswitch"),
    (remove_mount("/etc/cni/net.d"), "volumeMounts: nothing mounted at /etc/cni/net.d"),
    (remove_mount("/host/proc/sys/net"), "volumeMounts: nothing mounted at /host/proc/sys/net"),
    (remove_mount("/tmp"), "volumeMounts: nothing writable at /tmp"),
    (remove_mount("/etc/ovs-mesh"), "command: --config /etc/ovs-mesh/config.yaml is not in the ConfigMap's mount"),
    (drop_cap("NET_ADMIN"), "securityContext.capabilities.add: NET_ADMIN missing"),
    (drop_cap("NET_RAW"), "securityContext.capabilities.add: NET_RAW missing"),
    (probe_port("livenessProbe", 9477), "livenessProbe.httpGet.port: 9477"),
    (probe_port("readinessProbe", 8080), "readinessProbe.httpGet.port: 8080"),
    (set_field("livenessProbe.httpGet.path", "/metrics"), "livenessProbe.httpGet.path: /metrics"),
    (set_field("livenessProbe.failureThreshold", 1), "livenessProbe: restarts an agent"),
    (set_field("securityContext.privileged", True), "securityContext.privileged: must not be true"),
    (set_field("securityContext.capabilities.add", ["NET_ADMIN", "NET_RAW", "SYS_ADMIN"]),
     "securityContext.capabilities.add: ['SYS_ADMIN'] not needed"),
    (set_field("securityContext.capabilities.drop", []), "securityContext.capabilities.drop: must drop ALL"),
    (set_field("resources.limits.memory", "128Mi"), "resources.limits.memory: 128Mi"),
    (set_field("resources.requests.memory", "64Mi"), "resources.requests.memory: 64Mi"),
    (set_field("resources.limits.cpu", "200m"), "resources.limits.cpu"),
    (set_field("env", []), "env: OVS_MESH_SYSCTL_DIR missing"),
    (set_field("volumeMounts", [{"name": "ovs-run", "mountPath": "/var/run/openvswitch", "readOnly": True},
                                {"name": "cni-conf", "mountPath": "/etc/cni/net.d"},
                                {"name": "config", "mountPath": "/etc/ovs-mesh", "readOnly": True},
                                {"name": "proc-sys-net", "mountPath": "/host/proc/sys/net"}]),
     "volumeMounts[ovs-run].readOnly"),
])
def test_a_harmful_edit_is_named(edit, field):
    found = mutated(edit)
    assert any(field in p for p in found), f"expected a problem naming {field!r}, got {found}"


def test_a_wrong_host_path_and_wider_rbac_are_named():
    def host_path(docs):
        for v in podspec.pod_spec(docs)["volumes"]:
            if v["name"] == "proc-sys-net":
                v["hostPath"]["path"] = "/proc/sys"
    assert any("volumes[proc-sys-net].hostPath.path: /proc/sys" in p for p in mutated(host_path))

    def rbac(docs):
        podspec.doc(docs, "ClusterRole")["rules"][0]["verbs"] = ["get", "list", "watch", "patch"]
    assert any("ClusterRole.rules[0].verbs" in p for p in mutated(rbac))


def test_a_loopback_metrics_address_is_named():
    def loopback(docs):
        cm = podspec.doc(docs, "ConfigMap")
        text = cm["data"]["config.yaml"]
        cm["data"]["config.yaml"] = text.replace("metrics: 0.0.0.0:9476", "metrics: 127.0.0.1:9476")
    assert any("local.metrics: 127.0.0.1:9476" in p for p in mutated(loopback))


def test_the_translation_follows_the_pod_spec(tmp_path):
    """The podman command line the lab test runs: every field of the spec, read from the file."""
    ovs, cni = tmp_path / "ovs", tmp_path / "cni"
    ovs.mkdir()
    args = podspec.podman_run(DOCS, name="x", image="img", node_name="node-7", netns="ns7",
                              host_paths={"/var/run/openvswitch": str(ovs), "/etc/cni/net.d": str(cni)},
                              configmap_dir=str(tmp_path / "cm"), empty_dir_root=str(tmp_path / "empty"))
    line = " ".join(args)
    assert "--network ns:/run/netns/ns7" in line
    assert "--cap-drop=ALL --cap-add=NET_ADMIN --cap-add=NET_RAW" in line
    assert "--privileged" not in args
    assert f"-v {ovs}:/var/run/openvswitch" in line and f"-v {cni}:/etc/cni/net.d" in line
    assert "-v /proc/sys/net:/host/proc/sys/net" in line
    assert f"-v {tmp_path / 'cm'}:/etc/ovs-mesh:ro" in line
    assert "-e NODE_NAME=node-7" in line and "-e OVS_MESH_SYSCTL_DIR=/host/proc/sys" in line
    assert '["ovs-mesh", "--config", "/etc/ovs-mesh/config.yaml", "--node", "node-7", "agent"]' in line
    assert f"--stop-timeout {podspec.grace_seconds(DOCS)}" in line
    assert "--read-only" in args and "no-new-privileges" in args
    assert f"-v {tmp_path / 'empty' / 'tmp'}:/tmp" in line
    assert os.path.isdir(cni)   # DirectoryOrCreate


def test_an_untranslatable_field_is_an_error_naming_it():
    def exec_probe(docs):
        agent(docs)["livenessProbe"] = {"exec": {"command": ["true"]}}
    assert any("livenessProbe: only httpGet" in p for p in mutated(exec_probe))
    docs = copy.deepcopy(DOCS)
    agent(docs)["securityContext"]["runAsUser"] = 1000
    with pytest.raises(AssertionError, match=r"securityContext: \['runAsUser'\] not translated"):
        podspec.podman_run(docs, name="x", image="i", node_name="n", netns="ns", host_paths={},
                           configmap_dir="/nonexistent", empty_dir_root="/nonexistent")
