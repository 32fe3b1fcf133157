"""Deployment artefacts: the systemd unit, install-service, Kubernetes manifests, sd_notify."""
import os
import shutil
import socket
import subprocess
import uuid

import pytest
import yaml

from ovs_mesh.agent.install import unit_text
from ovs_mesh.agent.sdnotify import SdNotify
from tests.helpers import REPO, need, run_cli
from topology.config import parse_config

UNIT = os.path.join(REPO, "deploy/systemd/ovs-mesh.service")
MANIFESTS = os.path.join(REPO, "deploy/kubernetes/ovs-mesh.yaml")


def unit_settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            k, v = line.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


def test_unit_passes_systemd_analyze_verify(tmp_path):
    need("systemd-analyze")
    exe = os.path.join(REPO, ".venv/bin/ovs-mesh")
    if not os.access(exe, os.X_OK):
        exe = shutil.which("ovs-mesh") or pytest.skip("no ovs-mesh executable installed")
    path = tmp_path / "ovs-mesh.service"
    path.write_text(unit_text(exe))
    p = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "ovs-mesh.service" not in p.stderr, p.stderr  # no warnings about our unit


def test_unit_is_least_privilege_notify_service():
    s = unit_settings(open(UNIT).read())
    assert s["Type"] == ["notify"] and s["Restart"] == ["on-failure"]
    assert float(s["WatchdogSec"][0]) > 0
    # Ordered after Open vSwitch and wanting it, but not restarted with it (no Requires=): the agent
    # follows an Open vSwitch restart by itself and restores the pipeline while ovs-vswitchd waits.
    assert "openvswitch-switch.service" in s["After"][0] and "openvswitch-switch.service" in s["Wants"][0]
    assert "Requires" not in s and "BindsTo" not in s and "PartOf" not in s
    assert s["StateDirectory"] == ["ovs-mesh"]   # /var/lib/ovs-mesh: the last good inventory
    caps = {"CAP_NET_ADMIN", "CAP_NET_RAW"}   # netlink and nftables; the health probes' raw ICMP sockets
    assert set(s["CapabilityBoundingSet"][0].split()) == caps and set(s["AmbientCapabilities"][0].split()) == caps
    assert s["NoNewPrivileges"] == ["yes"] and s["ProtectSystem"] == ["strict"] and s["ProtectHome"] == ["yes"]
    assert set(s["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    rw = s["ReadWritePaths"][0].split()
    assert "/var/run/openvswitch" in rw and "-/etc/cni/net.d" in rw
    assert "-/etc/strongswan.d" in rw   # IPsec: strongSwan's ACQUIRE lifetime (host/strongswan.py)
    assert s["ExecStart"][0].endswith("--config /etc/ovs-mesh/config.yaml agent")


def test_install_service_into_a_root(tmp_path):
    root = tmp_path / "root"
    r = run_cli("install-service", "--root", str(root), "--exec", "/opt/ovs-mesh/bin/ovs-mesh", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "write" in r.stdout and not root.exists()
    r = run_cli("install-service", "--root", str(root), "--exec", "/opt/ovs-mesh/bin/ovs-mesh")
    assert r.returncode == 0, r.stderr
    unit = (root / "etc/systemd/system/ovs-mesh.service").read_text()
    assert "ExecStart=/opt/ovs-mesh/bin/ovs-mesh --config /etc/ovs-mesh/config.yaml agent" in unit
    assert os.readlink(root / "opt/cni/bin/ovs-mesh-guard") == "/opt/ovs-mesh/bin/ovs-mesh-guard"
    config = root / "etc/ovs-mesh/config.yaml"
    # The example config is valid once local.node names one of its nodes.
    parse_config(yaml.safe_load(config.read_text()), {"node": "node-1"})
    config.write_text("# mine\n")
    r = run_cli("install-service", "--root", str(root), "--exec", "/opt/ovs-mesh/bin/ovs-mesh")
    assert r.returncode == 0 and "keep existing" in r.stdout and "unchanged" in r.stdout
    assert "unchanged " + str(root / "opt/cni/bin/ovs-mesh-guard") in r.stdout
    assert config.read_text() == "# mine\n"  # never overwritten
    # The start hook of ovs-vswitchd: a drop-in running the flow-restore script before each start.
    drop_in = (root / "etc/systemd/system/ovs-vswitchd.service.d/50-ovs-mesh-flow-restore.conf").read_text()
    assert "ExecStartPre=-/usr/local/lib/ovs-mesh/flow-restore --seconds 30 start" in drop_in
    hook = root / "usr/local/lib/ovs-mesh/flow-restore"
    assert os.stat(hook).st_mode & 0o777 == 0o755 and hook.read_text().startswith("#!/bin/sh")
    # The start of ovs-monitor-ipsec (IPsec): Debian's unit runs ovs-mesh's wrapper instead of ovs-ctl,
    # with ovs-ctl's arguments (pid file of Debian's unit, strongSwan, detached).
    monitor_drop_in = (root / "etc/systemd/system/openvswitch-ipsec.service.d/"
                       "50-ovs-mesh-ipsec-monitor.conf").read_text().splitlines()
    wrapper = root / "usr/local/lib/ovs-mesh/ovs-monitor-ipsec"
    assert monitor_drop_in[-2:] == ["ExecStart=", "ExecStart=/usr/local/lib/ovs-mesh/ovs-monitor-ipsec "
                                    "--pidfile=/run/openvswitch/ovs-monitor-ipsec.pid --ike-daemon=strongswan "
                                    "--log-file --detach unix:/run/openvswitch/db.sock"]
    assert os.stat(wrapper).st_mode & 0o777 == 0o755 and wrapper.read_text().startswith("#!/usr/bin/python3")
    r = run_cli("uninstall-service", "--root", str(root))
    assert r.returncode == 0, r.stderr
    assert not (root / "etc/systemd/system/ovs-mesh.service").exists() and not hook.exists()
    assert not (root / "etc/systemd/system/ovs-vswitchd.service.d").exists() and not wrapper.exists()
    assert not (root / "etc/systemd/system/openvswitch-ipsec.service.d").exists()
    assert not (root / "opt/cni/bin/ovs-mesh-guard").exists() and config.read_text() == "# mine\n"


KUBERNETES_VERSIONS = ("1.28.0", "1.33.0")


def manifests() -> list[dict]:
    with open(MANIFESTS) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def test_manifests_validate_against_kubernetes_schemas():
    kv = pytest.importorskip("kubernetes_validate")
    docs = manifests()
    assert sorted(d["kind"] for d in docs) == ["ClusterRole", "ClusterRoleBinding", "ConfigMap",
                                                "DaemonSet", "ServiceAccount"]
    # Named versions, not just the newest schema the installed kubernetes-validate knows: the
    # oldest Kubernetes the manifest is for, and a current one.
    for version in KUBERNETES_VERSIONS:
        for d in docs:
            kv.validate(d, version, strict=True)
    # strict validation does catch a misspelt field
    bad = next(d for d in docs if d["kind"] == "DaemonSet")
    bad = {**bad, "spec": {**bad["spec"], "templat": {}}}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, KUBERNETES_VERSIONS[-1], strict=True)


def test_manifests_say_what_the_agent_needs():
    docs = {d["kind"]: d for d in manifests()}
    # list + watch only: the agent lists the Nodes and watches them; it never reads one Node alone.
    assert docs["ClusterRole"]["rules"] == [{"apiGroups": [""], "resources": ["nodes"],
                                             "verbs": ["list", "watch"]}]
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and {"operator": "Exists"} in pod["tolerations"]
    c = pod["containers"][0]
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in c["env"]
    assert c["command"][-3:] == ["--node", "$(NODE_NAME)", "agent"]
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/var/run/openvswitch", "/etc/cni/net.d", "/etc/ovs-mesh", "/var/lib/ovs-mesh"} <= mounts
    assert {"name": "STATE_DIRECTORY", "value": "/var/lib/ovs-mesh"} in c["env"]   # the last good inventory
    config = parse_config(yaml.safe_load(docs["ConfigMap"]["data"]["config.yaml"]), {"node": "worker-1"})
    assert config.source == "kubernetes"


def test_sd_notify_over_real_sockets(tmp_path):
    # A filesystem socket...
    path = str(tmp_path / "notify.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    srv.settimeout(2)
    # ...and an abstract one ('@' in NOTIFY_SOCKET).
    name = f"ovsm-test-{uuid.uuid4().hex[:8]}"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    abstract.bind("\0" + name)
    abstract.settimeout(2)
    try:
        n = SdNotify({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())})
        assert n.watchdog_seconds == 3.0
        assert n.ready("converged: 2 peers")
        assert srv.recv(4096) == b"READY=1\nSTATUS=converged: 2 peers"
        assert n.watchdog() and srv.recv(4096) == b"WATCHDOG=1"
        assert n.stopping() and srv.recv(4096) == b"STOPPING=1"
        n.close()
        a = SdNotify({"NOTIFY_SOCKET": "@" + name})
        assert a.status("hello") and abstract.recv(4096) == b"STATUS=hello"
        a.close()
        # Not under systemd, or a watchdog meant for another process: no-ops.
        assert not SdNotify({}).ready()
        assert SdNotify({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_seconds is None
    finally:
        srv.close()
        abstract.close()


def test_agent_rejects_bad_config_and_flags(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cluster: {tunnel: ipip}\nnodes: []\nlocal: {node: n1}\n")
    r = run_cli("--config", str(cfg), "agent", "--metrics", "off")
    assert r.returncode == 2 and "cluster.tunnel: ipip: must be one of" in r.stderr
    r = run_cli("--config", str(cfg), "agent", "--resync", "0")
    assert r.returncode == 2 and "--resync: 0.0" in r.stderr
