"""The DaemonSet of deploy/kubernetes/ovs-mesh.yaml, read as the kubelet reads it.

Two uses, both on the manifest file itself (never a copy of its spec):
- `problems(docs)`: what the agent needs from its pod, checked field by field against the
  manifest's own ConfigMap (the OVS socket's directory and the CNI file's directory mounted from
  the host, the config file inside the ConfigMap's mount, the capabilities, the probe port equal
  to local.metrics's, the sysctl directory, the RBAC, the memory figures measured at 5000 Nodes).
  Every message starts with the path of the field it is about.
- `podman_run(...)`: the pod spec as a `podman run` command line, the way a kubelet would run the
  container: hostNetwork as a given network namespace, hostPath volumes mapped to directories of
  a lab node, the ConfigMap as a directory, env from the downward API, the command with its
  $(VAR) references expanded, the securityContext, the memory limit and the termination grace.
  A field it does not know how to honour is an error naming the field, not a silent skip.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re

from ruamel.yaml import YAML

from tests.helpers import REPO

MANIFEST = os.path.join(REPO, "deploy", "kubernetes", "ovs-mesh.yaml")
BENCH_AGENT = os.path.join(REPO, "bench", "results", "agent.json")
CONTAINER = "agent"
POD = "DaemonSet.spec.template.spec"
AGENT = f"{POD}.containers[{CONTAINER}]"
# The one bench run whose figures docs/benchmarks.md reports and the manifest's comment quotes.
BENCH_RUN = "perf-2026-12-04-3"
# Capabilities the agent needs: kbr0, routes, nftables, ethtool, net sysctls; raw ICMP probes.
NEEDED_CAPS = {"NET_ADMIN": "kbr0, routes, nftables, ethtool offloads, net sysctls",
               "NET_RAW": "the health probes' raw ICMP sockets (health.enabled)"}
RBAC_VERBS = {"list", "watch"}   # the kubernetes source: list Nodes in pages, watch from the list


def load(path: str = MANIFEST) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [d for d in YAML(typ="safe").load_all(f) if d]


def dump(docs: list[dict], path: str) -> None:
    yaml = YAML()
    with open(path, "w", encoding="utf-8") as f:
        yaml.dump_all(docs, f)


def doc(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d.get("kind") == kind]
    if len(found) != 1:
        raise AssertionError(f"{kind}: the manifest has {len(found)}, expected one")
    return found[0]


def pod_spec(docs: list[dict]) -> dict:
    return doc(docs, "DaemonSet")["spec"]["template"]["spec"]


def container(docs: list[dict]) -> dict:
    found = [c for c in pod_spec(docs).get("containers") or [] if c.get("name") == CONTAINER]
    if len(found) != 1:
        raise AssertionError(f"{POD}.containers: no container named {CONTAINER!r}")
    return found[0]


def agent_config(docs: list[dict]) -> dict:
    """The ConfigMap's config.yaml, parsed."""
    return YAML(typ="safe").load(doc(docs, "ConfigMap")["data"]["config.yaml"])


@dataclasses.dataclass(frozen=True)
class Probe:
    """An httpGet probe with the kubelet's defaults for what the manifest leaves out."""
    field: str
    path: str
    port: int
    initial_delay: float
    period: float
    timeout: float
    failure_threshold: int

    @classmethod
    def of(cls, c: dict, kind: str) -> Probe:
        p = c.get(kind)
        if not p:
            raise AssertionError(f"{AGENT}.{kind}: missing")
        get = p.get("httpGet")
        if not get:
            raise AssertionError(f"{AGENT}.{kind}: only httpGet probes are translated (got {sorted(p)})")
        port = get["port"]
        if isinstance(port, str):   # a named port
            port = next((q["containerPort"] for q in c.get("ports") or [] if q.get("name") == port), None)
            if port is None:
                raise AssertionError(f"{AGENT}.{kind}.httpGet.port: no container port named {get['port']!r}")
        return cls(f"{AGENT}.{kind}", get.get("path", "/"), int(port), p.get("initialDelaySeconds", 0),
                   p.get("periodSeconds", 10), p.get("timeoutSeconds", 1), p.get("failureThreshold", 3))


def grace_seconds(docs: list[dict]) -> int:
    return int(pod_spec(docs).get("terminationGracePeriodSeconds", 30))


def _mounts(docs: list[dict]) -> dict[str, tuple[dict, dict]]:
    """mountPath -> (its volumeMount, its volume)."""
    volumes = {v["name"]: v for v in pod_spec(docs).get("volumes") or []}
    return {m["mountPath"].rstrip("/") or "/": (m, volumes.get(m["name"], {}))
            for m in container(docs).get("volumeMounts") or []}


def _mount_of(docs: list[dict], path: str) -> tuple[str, dict, dict] | None:
    """The mount holding `path` (longest mountPath that is a prefix of it)."""
    best = None
    for mp, (m, v) in _mounts(docs).items():
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and (best is None or len(mp) > len(best[0])):
            best = (mp, m, v)
    return best


def _memory_mb(q: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|K|M|G)?", str(q))
    if not m:
        raise AssertionError(f"memory quantity {q!r} not understood")
    scale = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "K": 1e3, "M": 1e6, "G": 1e9, None: 1}[m.group(2)]
    return float(m.group(1)) * scale / 1e6


def measured_rss_mb(run: str = BENCH_RUN) -> tuple[float, float]:
    """(converged RSS, peak RSS) in MB of the agent with the kubernetes source at 5000 Nodes."""
    with open(BENCH_AGENT, encoding="utf-8") as f:
        r = json.load(f)["runs"][run]
    boot = [b for b in r["bootstrap"] if b["source"] == "kube" and b["nodes"] == 5000]
    events = [e for e in r["events"] if e["source"] == "kube" and e["n"] == 5000]
    converged = max(max(b["rss_mb"], b.get("rss_now_mb") or 0) for b in boot)
    peak = max([e["rss_mb"] for e in events] + [b.get("rss_after_relist_mb") or 0 for b in boot] + [converged])
    return converged, peak


def problems(docs: list[dict]) -> list[str]:
    """What the agent needs from its pod and the manifest does not give, each naming its field."""
    out: list[str] = []
    try:
        spec, c, cfg = pod_spec(docs), container(docs), agent_config(docs)
    except (AssertionError, KeyError, TypeError) as e:
        return [str(e)]
    local = cfg.get("local") or {}
    sc = c.get("securityContext") or {}
    privileged = bool(sc.get("privileged"))
    if not spec.get("hostNetwork"):
        out.append(f"{POD}.hostNetwork: must be true (the agent configures the node's own network)")
    if privileged:
        out.append(f"{AGENT}.securityContext.privileged: must not be true (NET_ADMIN and NET_RAW suffice)")
    caps = sc.get("capabilities") or {}
    added = set(caps.get("add") or [])
    for cap, why in NEEDED_CAPS.items():
        if cap == "NET_RAW" and not (cfg.get("health") or {}).get("enabled", True):
            continue
        if cap not in added and not privileged:
            out.append(f"{AGENT}.securityContext.capabilities.add: {cap} missing ({why})")
    extra = added - set(NEEDED_CAPS)
    if extra:
        out.append(f"{AGENT}.securityContext.capabilities.add: {sorted(extra)} not needed by the agent")
    if "ALL" not in (caps.get("drop") or []):
        out.append(f"{AGENT}.securityContext.capabilities.drop: must drop ALL (then add only what is needed)")

    def host_mount(what: str, path: str, host_path: str | None = None, writable: bool = True) -> None:
        found = _mount_of(docs, path)
        if found is None:
            out.append(f"{AGENT}.volumeMounts: nothing mounted at {path} ({what})")
            return
        mp, m, v = found
        hp = (v.get("hostPath") or {}).get("path")
        if hp is None:
            out.append(f"{POD}.volumes[{m['name']}]: {mp} ({what}) must be a hostPath volume")
        elif host_path is not None and hp.rstrip("/") != host_path:
            out.append(f"{POD}.volumes[{m['name']}].hostPath.path: {hp}, expected {host_path} ({what})")
        if writable and m.get("readOnly"):
            out.append(f"{AGENT}.volumeMounts[{m['name']}].readOnly: {mp} ({what}) is written by the agent")

    ovsdb = str(local.get("ovsdb", "unix:/var/run/openvswitch/db.sock"))
    if ovsdb.startswith("unix:"):
        rundir = local.get("ovs_rundir") or os.path.dirname(ovsdb[len("unix:"):])
        host_mount("OVS's sockets, the status file", rundir)
    if local.get("host", True):
        host_mount("the CNI conflist the runtime reads", os.path.dirname(local.get("cni_conf",
                                                                         "/etc/cni/net.d/10-ovs-mesh.conflist")))
        if not privileged:
            env = {e["name"]: e.get("value") for e in c.get("env") or []}
            sysctl_dir = env.get("OVS_MESH_SYSCTL_DIR")
            if not sysctl_dir:
                out.append(f"{AGENT}.env: OVS_MESH_SYSCTL_DIR missing (the container's /proc/sys is read-only)")
            else:
                host_mount("the node's net sysctls", f"{sysctl_dir.rstrip('/')}/net", host_path="/proc/sys/net")
    if sc.get("readOnlyRootFilesystem"):
        found = _mount_of(docs, "/tmp")
        if found is None or found[1].get("readOnly"):
            out.append(f"{AGENT}.volumeMounts: nothing writable at /tmp (the agent's temporary files; "
                       "securityContext.readOnlyRootFilesystem)")
    command = [str(a) for a in c.get("command") or []]
    if "--config" in command[:-1]:
        conf = command[command.index("--config") + 1]
        found = _mount_of(docs, conf)
        if found is None or "configMap" not in found[2]:
            out.append(f"{AGENT}.command: --config {conf} is not in the ConfigMap's mount")
    else:
        out.append(f"{AGENT}.command: no --config (the ConfigMap's config.yaml)")
    if "--node" not in command:
        out.append(f"{AGENT}.command: no --node $(NODE_NAME) (the downward API's spec.nodeName)")
    metrics = str(local.get("metrics", "127.0.0.1:9476"))
    mport = int(metrics.rpartition(":")[2])
    if metrics.rpartition(":")[0] in ("127.0.0.1", "localhost", "::1"):
        out.append(f"ConfigMap.data.config.yaml local.metrics: {metrics} is loopback-only: "
                   "the kubelet probes the node IP")
    for kind in ("livenessProbe", "readinessProbe"):
        try:
            p = Probe.of(c, kind)
        except AssertionError as e:
            out.append(str(e))
            continue
        if p.port != mport:
            out.append(f"{p.field}.httpGet.port: {p.port}, but the agent serves /healthz on {mport} (local.metrics)")
        if p.path not in ("/healthz", "/readyz"):
            out.append(f"{p.field}.httpGet.path: {p.path} (the agent answers /healthz)")
    try:
        live = Probe.of(c, "livenessProbe")
        if live.initial_delay + live.period * live.failure_threshold < 60:
            out.append(f"{live.field}: restarts an agent whose first pass takes more than "
                       f"{live.initial_delay + live.period * live.failure_threshold:.0f} s (< 60 s)")
    except AssertionError:
        pass
    # Resources against the figures measured at 5000 Nodes.
    res = c.get("resources") or {}
    converged, peak = measured_rss_mb()
    req = (res.get("requests") or {}).get("memory")
    lim = (res.get("limits") or {}).get("memory")
    if req is None or _memory_mb(req) < converged:
        out.append(f"{AGENT}.resources.requests.memory: {req}, below the {converged:.0f} MB the agent holds "
                   f"converged at 5000 Nodes ({BENCH_RUN})")
    if lim is None or _memory_mb(lim) < 1.5 * peak:
        out.append(f"{AGENT}.resources.limits.memory: {lim}, less than 1.5x the {peak:.0f} MB peak at 5000 Nodes "
                   f"({BENCH_RUN})")
    if (res.get("limits") or {}).get("cpu"):
        out.append(f"{AGENT}.resources.limits.cpu: a CPU limit throttles a bootstrap or a resync")
    # RBAC: read-only, Nodes only.
    for i, rule in enumerate(doc(docs, "ClusterRole").get("rules") or []):
        verbs = set(rule.get("verbs") or [])
        if set(rule.get("resources") or []) != {"nodes"} or rule.get("apiGroups") != [""]:
            out.append(f"ClusterRole.rules[{i}]: {rule.get('apiGroups')}/{rule.get('resources')}: "
                       "the agent reads Nodes only")
        if verbs != RBAC_VERBS:
            out.append(f"ClusterRole.rules[{i}].verbs: {sorted(verbs)}, the agent needs exactly {sorted(RBAC_VERBS)}")
    return out


_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _expand(s: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion in command/args ($$ escapes; an unknown name stays)."""
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), s)


def environment(docs: list[dict], node_name: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for i, e in enumerate(container(docs).get("env") or []):
        if "value" in e:
            env[e["name"]] = _expand(str(e["value"]), env)
            continue
        ref = (e.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
        if ref != "spec.nodeName":
            raise AssertionError(f"{AGENT}.env[{i}].valueFrom: only fieldRef spec.nodeName is translated")
        env[e["name"]] = node_name
    return env


def podman_run(docs: list[dict], *, name: str, image: str, node_name: str, netns: str,
               host_paths: dict[str, str], configmap_dir: str, empty_dir_root: str) -> list[str]:
    """`podman run -d ...` for the agent container on a node whose network namespace is
    /run/netns/NETNS; host_paths maps a hostPath path to the directory standing for it (a path
    not in it is the machine's own, e.g. /proc/sys/net: procfs shows the reader's namespace);
    an emptyDir volume is a new directory under empty_dir_root."""
    spec, c = pod_spec(docs), container(docs)
    if not spec.get("hostNetwork"):
        raise AssertionError(f"{POD}.hostNetwork: only hostNetwork pods are translated")
    args = ["podman", "run", "-d", "--name", name, "--network", f"ns:/run/netns/{netns}",
            "--stop-timeout", str(grace_seconds(docs))]
    sc = c.get("securityContext") or {}
    if sc.get("privileged"):
        args.append("--privileged")
    caps = sc.get("capabilities") or {}
    args += [f"--cap-drop={x}" for x in caps.get("drop") or []]
    args += [f"--cap-add={x}" for x in caps.get("add") or []]
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    if sc.get("readOnlyRootFilesystem"):
        args += ["--read-only", "--read-only-tmpfs=false"]   # the kubelet adds no tmpfs
    unknown = set(sc) - {"privileged", "capabilities", "allowPrivilegeEscalation", "readOnlyRootFilesystem"}
    if unknown:
        raise AssertionError(f"{AGENT}.securityContext: {sorted(unknown)} not translated")
    limits = (c.get("resources") or {}).get("limits") or {}
    if "memory" in limits:
        args += ["--memory", f"{int(_memory_mb(limits['memory']) * 1e6)}b"]
    env = environment(docs, node_name)
    for k, v in env.items():
        args += ["-e", f"{k}={v}"]
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    for i, m in enumerate(c.get("volumeMounts") or []):
        v = volumes.get(m["name"])
        if v is None:
            raise AssertionError(f"{AGENT}.volumeMounts[{i}]: volume {m['name']!r} not in {POD}.volumes")
        ro = ":ro" if m.get("readOnly") else ""
        if "hostPath" in v:
            hp = v["hostPath"]
            src = host_paths.get(hp["path"], hp["path"])
            if hp.get("type") == "DirectoryOrCreate":
                os.makedirs(src, exist_ok=True)
            elif hp.get("type") == "Directory" and not os.path.isdir(src):
                raise AssertionError(f"{POD}.volumes[{m['name']}].hostPath: {hp['path']} ({src}) is not a directory")
        elif "configMap" in v:
            src = configmap_dir
        elif "emptyDir" in v:
            src = os.path.join(empty_dir_root, m["name"])
            os.makedirs(src, exist_ok=True)
        else:
            raise AssertionError(f"{POD}.volumes[{m['name']}]: only hostPath, configMap and emptyDir volumes "
                                 "are translated")
        args += ["-v", f"{src}:{m['mountPath']}{ro}"]
    command = [_expand(str(a), env) for a in c.get("command") or []]
    rest = [_expand(str(a), env) for a in c.get("args") or []]
    if command:
        args += ["--entrypoint", json.dumps(command)]
    args.append(image)
    return args + rest
