"""Pods made by a real container engine: podman (CNI backend) reading the conflist ovs-mesh wrote.

`lab up --pods podman` makes each pod with `podman run` started inside the node's network
namespace (nsenter --net: the CNI plugins then put the pod's veth in the node, as a kubelet's
runtime does on a real node; not `ip netns exec`, which remounts /sys and leaves runc without a
cgroup mount), with `--network-config-dir` the node's CNI directory and `--network` the name in
ovs-mesh's conflist: podman parses the conflist and runs its plugin chain itself.  The pod's
network namespace is the one podman made (/run/netns/cni-...), recorded as the pod's `ns`.

The container is a `sleep` from a static busybox in a root directory of the lab's own
(`podman run --rootfs`): no image, no registry.  podman reads the lab's containers.conf
(CONTAINERS_CONF): the CNI plugin directories (the reference plugins, then ovs-mesh-guard's),
rlimits within the machine's hard limits, runc where it is installed (crun cannot set rlimits
without CAP_SYS_RESOURCE nor run under a hybrid cgroup layout) and cgroupfs without systemd.
host-local keeps its leases where the runtime keeps
them (/var/lib/cni/networks/<network>): the conflist is used as written.
"""
from __future__ import annotations

import json
import os
import resource
import shutil

from .record import LabError, LabState, Node
from .resources import run

BUSYBOX = ("/bin/busybox", "/usr/bin/busybox")


def available() -> str | None:
    """Why podman pods cannot be made here (None: they can)."""
    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install podman runc)"
    if shutil.which("nsenter") is None:
        return "nsenter is not installed (util-linux)"
    if not any(_static(b) for b in BUSYBOX):
        return "no static busybox for the pods' containers (apt-get install busybox-static)"
    return None


def _static(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return head.startswith(b"\x7fELF") and b"ld-linux" not in head


def _conf(st: LabState, cni_path: str) -> str:
    path = os.path.join(st.dir, "containers.conf")
    with st.lock:   # pods are made in parallel
        if not os.path.exists(path):
            _write_conf(path, cni_path)
    return path


def _write_conf(path: str, cni_path: str) -> None:
    def limit(which: int) -> int:
        hard = resource.getrlimit(which)[1]
        return 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    nofile, nproc = limit(resource.RLIMIT_NOFILE), limit(resource.RLIMIT_NPROC)
    dirs = ", ".join(json.dumps(d) for d in cni_path.split(os.pathsep) if d)
    engine = ['events_logger = "file"']
    if shutil.which("runc"):   # crun cannot run here without CAP_SYS_RESOURCE or in hybrid cgroups
        engine.append('runtime = "runc"')
    if not os.path.isdir("/run/systemd/system"):   # no systemd to manage the cgroups
        engine.append('cgroup_manager = "cgroupfs"')
    with open(path, "w", encoding="utf-8") as f:
        f.write("[containers]\n"
                f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
                "[network]\n"
                'network_backend = "cni"\n'
                f"cni_plugin_dirs = [{dirs}]\n"
                "[engine]\n" + "".join(f"{line}\n" for line in engine))


def _rootfs(st: LabState) -> str:
    root = os.path.join(st.dir, "pod-rootfs")
    with st.lock:
        if not os.path.exists(os.path.join(root, "bin", "sleep")):
            _make_rootfs(root)
    return root


def _make_rootfs(root: str) -> None:
    os.makedirs(os.path.join(root, "bin"), exist_ok=True)
    src = next(b for b in BUSYBOX if _static(b))
    shutil.copy2(src, os.path.join(root, "bin", "busybox"))
    os.symlink("busybox", os.path.join(root, "bin", "sleep"))


def _podman(st: LabState, n: Node, cni_path: str, *args: str, check: bool = True):
    if n.ns is None:
        raise LabError(f"{n.name}: podman pods need a node namespace")
    cmd = ["nsenter", f"--net=/run/netns/{n.ns}", "podman",
           "--network-config-dir", os.path.dirname(n.cni_conf), *args]
    return run(*cmd, env={**os.environ, "CONTAINERS_CONF": _conf(st, cni_path)}, check=check)


def network_name(n: Node) -> str:
    with open(n.cni_conf, encoding="utf-8") as f:
        return json.load(f)["name"]


def add_pod(st: LabState, n: Node, j: int, container: str, cni_path: str) -> dict:
    """`podman run` of a pod on node n; its record (as pods.add_pod's, plus runtime=podman)."""
    net = network_name(n)
    rec = st.record("podman", name=container, node=n.name, netns=n.ns, cni_dir=os.path.dirname(n.cni_conf),
                    conf=_conf(st, cni_path))
    p = _podman(st, n, cni_path, "run", "-d", "--name", container, "--network", net,
                "--rootfs", _rootfs(st), "/bin/sleep", "2147483647", check=False)
    if p.returncode != 0:
        raise LabError(f"{n.name}: podman run {container} (network {net}): {p.stderr.strip()}")
    info = json.loads(_podman(st, n, cni_path, "inspect", container).stdout)[0]
    sandbox = info["NetworkSettings"]["SandboxKey"]
    attached = info["NetworkSettings"]["Networks"][net]
    ips = [ip for ip in (attached.get("IPAddress"), attached.get("GlobalIPv6Address")) if ip]
    if not ips:
        raise LabError(f"{n.name}: podman gave {container} no address on network {net}")
    return {"name": f"{n.name}/p{j}", "ns": os.path.basename(sandbox), "node": n.name, "k": n.k, "j": j,
            "ip": ips[0], "ips": ips, "container": container, "runtime": "podman", "record": rec}


def del_pod(st: LabState, n: Node, pod: dict, cni_path: str) -> None:
    """`podman rm` inside the node's namespace: podman runs the chain's DEL and removes the pod's
    namespace."""
    p = _podman(st, n, cni_path, "rm", "-f", "-t", "0", pod["container"], check=False)
    if p.returncode != 0 and "no such container" not in p.stderr:
        raise LabError(f"{n.name}: podman rm {pod['container']}: {p.stderr.strip()}")
    with st.lock:
        st.forget(pod["record"])
        st.pods[:] = [q for q in st.pods if q["container"] != pod["container"]]
        st.save()

