"""A node as a network namespace with its own OVS (userspace datapath) and an
underlay veth to a second namespace (the "peer", standing for the rest of the
network).  Everything is named omh-<random> and removed on the way out.

`node6`: a node namespace for the IPv6 / dual-stack host layer,
without OVS: the host stage runs alone (hostctl.py); a veth named obr0 in kbr0
leads to a third namespace standing for another node's pods (10.244.2.5,
fd00:10:244:2::5) as the tunnels would; the underlay and the peer have both
families.  Named v6h-<random>."""
from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile

import pytest

from ovs_mesh.host import cni
from ovs_mesh.lab.daemons import OvsDaemons
from tests.helpers import REPO, need, run_cli, write_config

NODE_IP, PEER_IP, PREFIX = "192.168.77.11", "192.168.77.2", 24
SUBNET, GATEWAY = "10.244.1.0/24", "10.244.1.1"
NODE_IP6, PEER_IP6 = "fd00:77::11", "fd00:77::2"
SUBNET6, GATEWAY6 = "fd00:10:244:1::/64", "fd00:10:244:1::1"
REMOTE_POD, REMOTE_POD6 = "10.244.2.5", "fd00:10:244:2::5"   # node-2's pod, behind obr0
CNI_BIN = "/usr/lib/cni"


def sh(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    p = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")
    return p


def in_ns(ns: str, *args: str, **kw) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *args, **kw)


@dataclasses.dataclass
class Host:
    ns: str
    peer_ns: str
    underlay: str          # the node's underlay interface (a veth)
    tmp: str
    cni_conf: str
    created: list = dataclasses.field(default_factory=list)  # extra namespaces to delete

    def sh(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return in_ns(self.ns, *args, **kw)

    def sysctl(self, name: str) -> str:
        return self.sh("sysctl", "-n", name).stdout.strip()

    def cni_plugin(self, command: str, pod_ns: str) -> dict:
        """Run the reference `bridge` plugin from the conflist ovs-mesh wrote, as a
        runtime would (IPAM leases kept in this test's temp dir)."""
        with open(self.cni_conf) as f:
            conf = cni.plugin_config(f.read())
        conf["ipam"]["dataDir"] = os.path.join(self.tmp, "ipam")
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": f"{pod_ns}-c", "CNI_NETNS": f"/var/run/netns/{pod_ns}",
               "CNI_IFNAME": "eth0", "CNI_PATH": CNI_BIN}
        p = subprocess.run(["ip", "netns", "exec", self.ns, os.path.join(CNI_BIN, conf["type"])],
                           input=json.dumps(conf), capture_output=True, text=True, timeout=60,
                           env={**os.environ, **env})
        assert p.returncode == 0, f"CNI {command}: {p.stdout} {p.stderr}"
        return json.loads(p.stdout) if p.stdout.strip() else {}

    def add_pod(self, suffix: str) -> tuple[str, dict]:
        """A pod namespace attached by the CNI plugin: (netns, CNI result)."""
        if not os.path.exists(os.path.join(CNI_BIN, "bridge")):
            pytest.skip("containernetworking-plugins is not installed")
        pod = self.ns.replace("-n", f"-{suffix}")
        sh("ip", "netns", "add", pod)
        self.created.append(pod)
        return pod, self.cni_plugin("ADD", pod)



@dataclasses.dataclass(kw_only=True)
class Node(Host):
    ovs: OvsDaemons
    config_path: str
    config: dict

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """`ovs-mesh --config <node config> ARGS` inside the node's namespace."""
        return run_cli("--config", self.config_path, *args, netns=self.ns, timeout=timeout)

    def rewrite(self, **local) -> None:
        self.config["local"].update(local)
        write_config(self.config_path, self.config)


def underlay_pair(ns: str, peer: str, u: str, p: str, ipv6: bool = False) -> None:
    """Namespaces `ns` (the node) and `peer` joined by veth u <-> p, with the
    node's default route via the peer (both families with `ipv6`)."""
    sh("ip", "netns", "add", ns)
    sh("ip", "netns", "add", peer)
    sh("ip", "link", "add", u, "type", "veth", "peer", "name", p)
    sh("ip", "link", "set", u, "netns", ns)
    sh("ip", "link", "set", p, "netns", peer)
    in_ns(ns, "ip", "link", "set", "lo", "up")
    # A new netns copies the root namespace's IPv4 settings: start from the kernel default.
    in_ns(ns, "sysctl", "-qw", "net.ipv4.ip_forward=0")
    in_ns(ns, "ip", "addr", "add", f"{NODE_IP}/{PREFIX}", "dev", u)
    in_ns(ns, "ip", "link", "set", u, "up")
    in_ns(ns, "ip", "route", "add", "default", "via", PEER_IP, "dev", u)
    in_ns(peer, "ip", "link", "set", "lo", "up")
    in_ns(peer, "ip", "addr", "add", f"{PEER_IP}/{PREFIX}", "dev", p)
    in_ns(peer, "ip", "link", "set", p, "up")
    in_ns(peer, "ethtool", "-K", p, "tx", "off")
    if ipv6:
        in_ns(ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=0")
        in_ns(ns, "ip", "-6", "addr", "add", f"{NODE_IP6}/64", "dev", u, "nodad")
        in_ns(ns, "ip", "-6", "route", "add", "default", "via", PEER_IP6, "dev", u)
        in_ns(peer, "ip", "-6", "addr", "add", f"{PEER_IP6}/64", "dev", p, "nodad")


@dataclasses.dataclass
class Node6(Host):
    remote_ns: str = ""    # node-2's pods, behind the veth obr0

    def ctl(self, family: str, command: str, *flags: str) -> subprocess.CompletedProcess:
        """The host stage for a v6config.config(family) inside the node's namespace."""
        return subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-m", "tests.host.hostctl", family,
                               self.cni_conf, self.tmp, command, *flags],
                              capture_output=True, text=True, timeout=120, cwd=REPO)


@pytest.fixture
def node6():
    need("ip", "nft", root=True)
    sfx = secrets.token_hex(3)
    ns, peer, remote = f"v6h-{sfx}-n", f"v6h-{sfx}-p", f"v6h-{sfx}-r"
    tmp = tempfile.mkdtemp(prefix=f"v6h-{sfx}-")
    n = Node6(ns, peer, f"v6h{sfx}u", tmp, os.path.join(tmp, "cni", "10-ovs-mesh.conflist"), remote_ns=remote)
    try:
        underlay_pair(ns, peer, n.underlay, f"v6h{sfx}p", ipv6=True)
        sh("ip", "netns", "add", remote)
        sh("ip", "link", "add", "obr0", "netns", ns, "type", "veth", "peer", "name", "rp", "netns", remote)
        in_ns(remote, "ip", "link", "set", "lo", "up")
        in_ns(remote, "ip", "addr", "add", f"{REMOTE_POD}/24", "dev", "rp")
        in_ns(remote, "ip", "-6", "addr", "add", f"{REMOTE_POD6}/64", "dev", "rp", "nodad")
        in_ns(remote, "ip", "link", "set", "rp", "up")
        in_ns(remote, "ip", "route", "add", "10.244.0.0/16", "dev", "rp")
        in_ns(remote, "ip", "-6", "route", "add", "fd00:10:244::/56", "dev", "rp")
        yield n
    finally:
        for name in (*n.created, remote, ns, peer):
            sh("ip", "netns", "del", name, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def node():
    need("ovs-vswitchd", "ovsdb-server", "ip", "ethtool", root=True)
    sfx = secrets.token_hex(3)
    ns, peer = f"omh-{sfx}-n", f"omh-{sfx}-p"
    u, p = f"omh{sfx}u", f"omh{sfx}p"
    tmp = tempfile.mkdtemp(prefix=f"omh-{sfx}-")
    ovs = OvsDaemons(os.path.join(tmp, "ovs"), netns=ns)
    n = None
    try:
        underlay_pair(ns, peer, u, p)
        in_ns(peer, "ip", "route", "add", SUBNET, "via", NODE_IP)
        ovs.start()
        cni_conf = os.path.join(tmp, "cni", "10-ovs-mesh.conflist")
        config = {
            "cluster": {"cidr": "10.244.0.0/16", "node_prefix": 24, "tunnel": "vxlan", "mode": "flow",
                        "masquerade": True},
            "nodes": [{"name": "node-1", "ip": NODE_IP, "subnet": SUBNET},
                      {"name": "node-2", "ip": "192.168.77.12", "subnet": "10.244.2.0/24"}],
            "local": {"node": "node-1", "ovsdb": ovs.remote, "datapath": "netdev", "host": True,
                      "underlay_bridge": "br-phy", "underlay_interface": u, "cni_conf": cni_conf},
        }
        path = write_config(os.path.join(tmp, "config.yaml"), config)
        n = Node(ns, peer, u, tmp, cni_conf, ovs=ovs, config_path=path, config=config)
        yield n
    finally:
        ovs.stop()
        for extra in (n.created if n else []):
            sh("ip", "netns", "del", extra, check=False)
        sh("ip", "netns", "del", ns, check=False)
        sh("ip", "netns", "del", peer, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
