"""The DaemonSet's pod on a lab node, run by podman from deploy/kubernetes/ovs-mesh.yaml.

`agent_image()` builds the image with deploy/kubernetes/build-image.sh (cached by its inputs: a
machine builds it once).  `containers_conf()` writes the podman settings these tests use into
their own directory (CONTAINERS_CONF), never /etc: runc with cgroupfs and rlimits within the
machine's hard limits (crun cannot raise them without CAP_SYS_RESOURCE, and refuses a hybrid
cgroup layout; there is no systemd to manage cgroups).  `DaemonSetPod` is one node's agent
container: the manifest's pod spec translated by tests/podspec.py, its ConfigMap a directory
updated the way the kubelet updates a configMap volume (a `..data` symlink swapped atomically),
and its probes run on the manifest's schedule against the node's address, as a kubelet would.
"""
from __future__ import annotations

import ctypes
import dataclasses
import os
import resource
import subprocess
import sys
import threading
import time

from ruamel.yaml import YAML

from tests import podspec
from tests.helpers import REPO

BUILD = os.path.join(REPO, "deploy", "kubernetes", "build-image.sh")
# The image's name for the tests: the product's default (a developer may pick another prefix).
IMAGE_NAME = os.environ.get("OVS_MESH_TEST_IMAGE_NAME", "localhost/ovs-mesh")
TOOLS = ("podman", "runc", "mmdebstrap", "nsenter", "/bin/busybox")
BUILD_TIMEOUT = 1200


def containers_conf(directory: str, cni_config_dir: str | None = None, cni_plugin_dirs=()) -> str:
    """A containers.conf for these tests (podman reads the file CONTAINERS_CONF names)."""
    def limit(which):
        soft, hard = resource.getrlimit(which)
        return 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    nofile, nproc = limit(resource.RLIMIT_NOFILE), limit(resource.RLIMIT_NPROC)
    lines = ["[containers]", f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]',
             "[network]", 'network_backend = "cni"']
    if cni_config_dir:
        lines.append(f'network_config_dir = "{cni_config_dir}"')
    if cni_plugin_dirs:
        lines.append("cni_plugin_dirs = [" + ", ".join(f'"{d}"' for d in cni_plugin_dirs) + "]")
    lines += ["[engine]", 'runtime = "runc"', 'cgroup_manager = "cgroupfs"', 'events_logger = "file"']
    path = os.path.join(directory, "containers.conf")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def agent_image() -> str:
    """Build (or find cached) the image; its reference."""
    p = subprocess.run([BUILD, "--name", IMAGE_NAME], capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    if p.returncode != 0:
        raise AssertionError(f"{BUILD}: exit {p.returncode}\n{p.stderr[-4000:]}")
    sys.stderr.write(p.stderr)
    return p.stdout.strip().splitlines()[-1]


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    p = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def http_status(netns: str, url: str, timeout: float) -> int:
    """The HTTP status of GET url from inside netns (0: no answer within timeout)."""
    code = ("import sys, urllib.request, urllib.error\n"
            "try:\n"
            f"    print(urllib.request.urlopen({url!r}, timeout={timeout}).status)\n"
            "except urllib.error.HTTPError as e:\n"
            "    print(e.code)\n"
            "except Exception:\n"
            "    print(0)\n")
    p = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=timeout + 10)
    return int(p.stdout.strip() or 0)


@dataclasses.dataclass
class ProbeResult:
    kind: str
    t: float       # seconds since the container started
    status: int    # HTTP status, 0: no answer within the probe's timeout


class DaemonSetPod:
    """The agent container of one lab node, run from the manifest's pod spec."""

    def __init__(self, docs: list[dict], image: str, lab: str, node, workdir: str, config: dict):
        self.docs, self.image, self.node = docs, image, node
        self.name = f"{lab}-{node.name}-ovs-mesh"
        self.cm_dir = os.path.join(workdir, f"{node.name}-configmap")
        self.empty_dirs = os.path.join(workdir, f"{node.name}-emptydir")
        os.makedirs(self.cm_dir, exist_ok=True)
        self.write_configmap(config)
        self.started = 0.0

    # -- the ConfigMap volume, as the kubelet's atomic writer keeps it -------------------
    def write_configmap(self, config: dict, **files: str) -> None:
        """config.yaml (and `files`, name -> text) as the ConfigMap's keys, swapped in at once."""
        stamp = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
        new = os.path.join(self.cm_dir, stamp)
        os.mkdir(new)
        with open(os.path.join(new, "config.yaml"), "w", encoding="utf-8") as f:
            YAML().dump(config, f)
        for name, text in files.items():
            with open(os.path.join(new, name), "w", encoding="utf-8") as f:
                f.write(text)
        data = os.path.join(self.cm_dir, "..data")
        old = os.path.realpath(data) if os.path.islink(data) else None
        tmp = os.path.join(self.cm_dir, "..data_tmp")
        os.symlink(stamp, tmp)
        os.rename(tmp, data)
        for name in ("config.yaml", *files):
            link = os.path.join(self.cm_dir, name)
            if not os.path.islink(link):
                os.symlink(f"..data/{name}", link)
        if old and old != os.path.realpath(data):
            subprocess.run(["rm", "-rf", old], check=True)

    # -- the container ----------------------------------------------------------------
    def run_args(self) -> list[str]:
        return podspec.podman_run(
            self.docs, name=self.name, image=self.image, node_name=self.node.name, netns=self.node.ns,
            host_paths={"/var/run/openvswitch": self.node.rundir,
                        "/etc/cni/net.d": os.path.dirname(self.node.cni_conf)},
            configmap_dir=self.cm_dir, empty_dir_root=self.empty_dirs)

    def start(self) -> None:
        self.remove()
        args = self.run_args()
        p = subprocess.run(args, capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise AssertionError(f"{' '.join(args)}: exit {p.returncode}\n{p.stderr}")
        self.started = time.monotonic()

    def stop(self) -> tuple[float, int]:
        """SIGTERM, then SIGKILL after the manifest's grace: (seconds it took, exit code)."""
        t0 = time.monotonic()
        podman("stop", "-t", str(podspec.grace_seconds(self.docs)), self.name, timeout=120)
        took = time.monotonic() - t0
        return took, int(podman("inspect", "--format", "{{.State.ExitCode}}", self.name).stdout.strip())

    def running(self) -> bool:
        p = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return p.stdout.strip() == "true"

    def logs(self) -> str:
        p = podman("logs", self.name, check=False)
        return p.stdout + p.stderr

    def remove(self) -> None:
        podman("rm", "-f", "-t", "0", self.name, check=False)

    # -- the kubelet's probes ---------------------------------------------------------
    def probe(self, kind: str) -> ProbeResult:
        p = podspec.Probe.of(podspec.container(self.docs), kind)
        # hostNetwork: the pod's IP is the node's; the kubelet runs in the node's namespace.
        status = http_status(self.node.ns, f"http://{self.node.ip}:{p.port}{p.path}", p.timeout)
        return ProbeResult(kind, time.monotonic() - self.started, status)

    def probe_schedule(self, until: float, since: float = 0.0) -> list[ProbeResult]:
        """Both probes on the manifest's schedule (initialDelaySeconds after the container's
        start, then every periodSeconds), those due from `since` to `until` seconds after it."""
        c = podspec.container(self.docs)
        probes = {k: podspec.Probe.of(c, k) for k in ("readinessProbe", "livenessProbe")}
        due = {k: p.initial_delay for k, p in probes.items()}
        for k, p in probes.items():
            while due[k] < since:
                due[k] += p.period
        out: list[ProbeResult] = []
        while True:
            k = min(due, key=due.get)
            if due[k] > until:
                return out
            wait = self.started + due[k] - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            out.append(self.probe(k))
            due[k] += probes[k].period


def liveness_kill(results: list[ProbeResult], docs: list[dict]) -> ProbeResult | None:
    """The probe after which a kubelet would restart the container (failureThreshold failures
    of the liveness probe in a row), or None."""
    threshold = podspec.Probe.of(podspec.container(docs), "livenessProbe").failure_threshold
    run = 0
    for r in results:
        if r.kind != "livenessProbe":
            continue
        run = run + 1 if r.status != 200 else 0
        if run >= threshold:
            return r
    return None


def in_netns(netns: str, fn):
    """fn() in a thread that has entered /run/netns/NETNS (sockets it opens live there)."""
    out: dict = {}

    def target():
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/run/netns/{netns}") as f:
                if libc.setns(f.fileno(), 0x40000000) != 0:   # CLONE_NEWNET
                    raise OSError(ctypes.get_errno(), f"setns {netns}")
            out["value"] = fn()
        except BaseException as e:  # handed to the caller
            out["error"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def local_datapath(local: dict) -> dict:
    """The lab node's datapath settings (userspace OVS on br-phy), for a ConfigMap's `local`."""
    return {k: local[k] for k in ("datapath", "underlay_bridge", "underlay_interface") if k in local}


def lab_configmap(docs: list[dict], topology_path: str, local: dict) -> dict:
    """The manifest's ConfigMap config with the lab's cluster and nodes (source: file) and the
    node's datapath settings; its OVS socket, CNI file and metrics address stay the manifest's:
    they must agree with its mounts and probes."""
    cfg = podspec.agent_config(docs)
    with open(topology_path, encoding="utf-8") as f:
        topo = YAML(typ="safe").load(f)
    cfg["cluster"] = {**cfg.get("cluster", {}), **topo["cluster"]}
    cfg["source"] = topo["source"]
    cfg["nodes"] = topo["nodes"]
    cfg["local"] = {**cfg.get("local", {}), **local_datapath(local)}
    return cfg
