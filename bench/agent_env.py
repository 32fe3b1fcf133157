"""The agent benchmark's world: a sandbox OVS, a node source, a running agent, watchers.

`Session` is one sandbox OVS (`ovs_mesh.lab.daemons.OvsDaemons`, dummy datapath) with
a real `ovs-mesh agent` process (`tests.agent_process.AgentProc`) reconciling it
from either source:

- `file`: the topology file as block YAML (`yaml.safe_dump`), every edit written
  whole and put in place by an atomic rename (what a generator or a ConfigMap swap does);
- `json`: the same file written as JSON (`json.dump`: what many generators write);
- `kube`: `source: kubernetes` against the test API server
  (`tests.kube.fake_apiserver`, real HTTP list/watch through the real client), with
  Nodes shaped like a kubelet's (`kubelet_node`: about 9 KB each, 40 images).

"Installed" is observed from OVS, not from the agent: `ovs-ofctl monitor`
streams every change to table 10 (to peers) as it is committed, and
`ovsdb-client monitor` every change of an Interface's options (a port-mode IP
change touches no flow); a reader thread timestamps each line on arrival.
The agent's CPU (its own and its reaped children's: every ovs-ofctl it runs)
and peak RSS come from /proc.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

from bench.control_plane import CLUSTER_CIDR, NODE_PREFIX, config_data, model_config, node

LOCAL = "node-00000"
TICK = os.sysconf("SC_CLK_TCK")


def node_lines(x: dict) -> str:
    return f"- name: {x['name']}\n  ip: {x['ip']}\n  subnet: {x['subnet']}\n"


class Topology:
    """The nodes of the mesh (local node-00000 and peers), as the sources show them."""

    def __init__(self, n: int):
        self.nodes: dict[str, dict] = {}
        self.lines: dict[str, str] = {}   # name -> its YAML lines (a 5000-node file in ~1 ms)
        self.json: dict[str, str] = {}    # name -> its JSON text, as json.dumps writes it in the list
        self.next = 0   # index of the next node to join
        for _ in range(n + 1):
            self.join()

    def join(self) -> dict:
        x = node(self.next)
        self.next += 1
        self.nodes[x["name"]], self.lines[x["name"]], self.json[x["name"]] = x, node_lines(x), json.dumps(x)
        return x

    def leave(self, name: str) -> dict:
        del self.lines[name], self.json[name]
        return self.nodes.pop(name)

    def move(self, name: str, ip: str) -> dict:
        x = self.nodes[name] = {**self.nodes[name], "ip": ip}
        self.lines[name], self.json[name] = node_lines(x), json.dumps(x)
        return x

    def data(self, mode: str, remote: str) -> dict:
        return config_data(list(self.nodes.values()), mode, remote)


def config_text(topo: Topology | None, mode: str, remote: str, kubeconfig: str | None = None,
                layout: str = "yaml") -> str:
    """The topology file: block YAML, or (`layout="json"`) exactly what `json.dumps` writes of it."""
    if layout == "json":
        head = json.dumps({"cluster": {"cidr": str(CLUSTER_CIDR), "node_prefix": NODE_PREFIX, "tunnel": "vxlan",
                                       "mode": mode}})[:-1]
        local = json.dumps({"local": {"node": LOCAL, "ovsdb": remote, "datapath": "dummy", "host": False}})[1:]
        return head + ', "nodes": [' + ", ".join(topo.json.values()) + "], " + local
    head = (f"cluster:\n  cidr: {CLUSTER_CIDR}\n  node_prefix: {NODE_PREFIX}\n  tunnel: vxlan\n"
            f"  mode: {mode}\n")
    local = f"local:\n  node: {LOCAL}\n  ovsdb: {remote}\n  datapath: dummy\n  host: false\n"
    if kubeconfig:
        return head + f"source: kubernetes\nkubernetes:\n  kubeconfig: {kubeconfig}\n" + local
    return head + "nodes:\n" + "".join(topo.lines.values()) + local


def expected_flows(topo: Topology, mode: str) -> int:
    from ovs_mesh.ovs import desired

    return len(desired.build(model_config(topo.data(mode, "unix:/nonexistent")), 1450, {}).flows)


class Stream:
    """A child whose output lines are timestamped on arrival by a reader thread (ovs-ofctl monitor
    prints the flow updates on stderr)."""

    def __init__(self, argv: list[str], env: dict):
        self.lines: list[tuple[float, str]] = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append((time.monotonic(), line))
                self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.lines)

    def wait(self, pred, start: int, timeout: float) -> float | None:
        """The arrival time of the first line from index `start` on that pred() accepts."""
        deadline = time.monotonic() + timeout
        i = start
        with self.cond:
            while True:
                for t, line in self.lines[i:]:
                    if pred(line):
                        return t
                i = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Session:
    """One sandbox OVS + one source + one running agent (see the module doc)."""

    def __init__(self, workdir: str, source: str, mode: str, n: int):
        self.source, self.mode = source, mode
        self.layout = "json" if source == "json" else "yaml"
        self.dir = tempfile.mkdtemp(prefix=f"fb-agent-{source}-{mode}-{n}-", dir=workdir)
        self.topo = Topology(n)
        self.ovs = self.api = self.agent = None
        self.streams: list[Stream] = []

    # -- lifecycle ----------------------------------------------------------------
    def start(self, timeout: float = 180) -> Session:
        from ovs_mesh.lab.daemons import OvsDaemons
        from tests.agent_process import AgentProc

        self.ovs = OvsDaemons(os.path.join(self.dir, "ovs"), dummy=True).start()
        kubeconfig = None
        if self.source == "kube":
            from tests.kube.fake_apiserver import FakeApiServer, kubelet_node

            self.api = FakeApiServer()
            self.api.add_many([kubelet_node(x["name"], x["ip"], x["subnet"]) for x in self.topo.nodes.values()])
            kubeconfig = self.api.kubeconfig(os.path.join(self.dir, "kubeconfig"))
        text = config_text(self.topo, self.mode, self.ovs.remote, kubeconfig, self.layout)
        self.agent = AgentProc(self.ovs, self.dir, text, resync=3600).start()
        self.wait_converged(timeout)
        self.flows = Stream(["ovs-ofctl", "-O", "OpenFlow13", "monitor", self.ovs.mgmt("obr0"),
                             "watch:!initial,table=10"], self.ovs.env)
        self.rows = Stream(["ovsdb-client", "monitor", self.ovs.remote, "Open_vSwitch", "Interface",
                            "name,options"], self.ovs.env)
        self.streams = [self.flows, self.rows]
        time.sleep(0.3)  # both monitors registered (their first reply) before any event
        return self

    def stop(self) -> None:
        for s in self.streams:
            s.stop()
        if self.agent is not None:
            self.agent.kill()
            self.agent.notify.close()
        if self.api is not None:
            self.api.close()
        if self.ovs is not None:
            self.ovs.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- what the agent installed -------------------------------------------------
    def flow_count(self) -> int:
        from ovs_mesh.ovs.model import COOKIE_MATCH

        out = self.ovs.ofctl("dump-aggregate", self.ovs.mgmt("obr0"), COOKIE_MATCH, check=False)
        m = re.search(r"flow_count=(\d+)", out)
        return int(m.group(1)) if m else -1

    def wait_converged(self, timeout: float, interval: float = 0.02) -> float:
        """Poll until our flows are exactly the expected number; the time it was first seen."""
        want = expected_flows(self.topo, self.mode)
        deadline = time.monotonic() + timeout
        while True:
            if self.flow_count() == want:
                return time.monotonic()
            if self.agent.proc.poll() is not None:
                self.agent.fail("the agent exited")
            if time.monotonic() > deadline:
                self.agent.fail(f"not converged to {want} flows after {timeout}s (have {self.flow_count()})")
            time.sleep(interval)

    def cpu_seconds(self) -> float:
        """utime + stime of the agent and of its reaped children (the ovs-ofctl it ran)."""
        with open(f"/proc/{self.agent.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / TICK

    def peak_rss_mb(self, field: str = "VmHWM") -> float:
        """The agent's peak RSS (VmHWM), or with field="VmRSS" its RSS now."""
        with open(f"/proc/{self.agent.proc.pid}/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
        return kb / 1024

    # -- events -----------------------------------------------------------------
    def event(self, kind: str, name: str | None = None, ip: str | None = None) -> tuple[dict, float]:
        """Make one event happen through the source: (the node, the time it was made)."""
        if kind == "join":
            x = self.topo.join()
        elif kind == "leave":
            x = self.topo.leave(name)
        else:
            x = self.topo.move(name, ip)
        if self.source == "kube":
            t0 = self.kube_event(kind, x)
        else:
            t0 = self.write()
        return x, t0

    def write(self) -> float:
        path = self.agent.config
        tmp = path + ".new"
        with open(tmp, "w") as f:
            f.write(config_text(self.topo, self.mode, self.ovs.remote, layout=self.layout))
        t0 = time.monotonic()
        os.replace(tmp, path)
        return t0

    def kube_event(self, kind: str, x: dict) -> float:
        from tests.kube.fake_apiserver import kubelet_node

        t0 = time.monotonic()
        if kind == "join":
            self.api.add(kubelet_node(x["name"], x["ip"], x["subnet"]))
        elif kind == "leave":
            self.api.delete(x["name"])
        else:
            self.api.set_ip(x["name"], x["ip"])
        return t0

    def seen(self, kind: str, x: dict, start: tuple[int, int], timeout: float = 60) -> float | None:
        """When the event's change was committed in OVS (see the module doc)."""
        subnet = f"nw_dst={x['subnet']}"
        if kind == "join":
            return self.flows.wait(lambda l: "event=ADDED" in l and subnet in l, start[0], timeout)
        if kind == "leave":
            return self.flows.wait(lambda l: "event=DELETED" in l and subnet in l, start[0], timeout)
        if self.mode == "flow":
            new = f"{x['ip']}->tun_dst"
            return self.flows.wait(lambda l: new in l and subnet in l, start[0], timeout)
        return self.rows.wait(lambda l: f'"{x["ip"]}"' in l or f"={x['ip']}" in l, start[1], timeout)

    def marks(self) -> tuple[int, int]:
        return self.flows.mark(), self.rows.mark()

    def joins(self, k: int) -> float:
        """k nodes join in one event (one file write, or one burst of ADDED); its time."""
        xs = [self.topo.join() for _ in range(k)]
        if self.source != "kube":
            return self.write()
        from tests.kube.fake_apiserver import kubelet_node

        objs = [kubelet_node(x["name"], x["ip"], x["subnet"]) for x in xs]
        t0 = time.monotonic()
        self.api.add_many(objs)
        return t0
