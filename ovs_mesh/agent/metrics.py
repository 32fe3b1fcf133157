"""Prometheus metrics and /healthz for the agent, on local.metrics (HOST:PORT).

Counters and the duration histogram are prometheus_client objects updated by
the worker; the point-in-time values (peers, flows, tunnels) come from the
snapshot taken after the last reconcile, through a custom collector, so a peer
that left the mesh also leaves the metrics.  Where the address family matters
the gauges carry a `family` label ("ipv4", "ipv6"; both always present, 0 where
the cluster has none): peers with a pod subnet of the family, the overlay routes
(table-10 rules) and flows of the family, this node's pod subnets and gateways
and its underlay address (`*_info` gauges, value 1).  /healthz answers 200 while the last
reconcile succeeded recently, 503 otherwise.

The Nodes the Kubernetes source keeps out and whether the local node holds the
agent back are read live at each scrape (`inventory`), not from the last pass: a
kept-out Node changes no peer, so it causes no pass.  Their series stay bounded
whatever the API holds: a count per reason (a fixed set), and one series per
Node for the first KEPT_OUT_SERIES Nodes by name only.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..health.metrics import HealthCollector
from ..reconcile.families import FamilyStats
from ..sources.kube_nodes import REASONS

LOG = logging.getLogger(__name__)
KEPT_OUT_SERIES = 20   # Nodes named in ovs_mesh_node_kept_out; the count has them all


class AgentMetrics:
    def __init__(self, healthy_within: float):
        self.healthy_within = healthy_within
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reconciles = Counter("ovs_mesh_reconcile", "Reconcile passes attempted", registry=r)
        self.errors = Counter("ovs_mesh_reconcile_errors", "Reconcile passes that failed", registry=r)
        self.changes = Counter("ovs_mesh_reconcile_changes", "Changes applied by reconcile passes",
                               registry=r)
        self.passes = Counter("ovs_mesh_reconcile_passes", "Successful passes by kind: full (observe "
                              "everything) or incremental (only the peers that changed)", ["kind"],
                              registry=r)
        for kind in ("full", "incremental"):
            self.passes.labels(kind=kind)
        self.duration = Histogram("ovs_mesh_reconcile_duration_seconds", "Reconcile pass duration",
                                  buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30),
                                  registry=r)
        self.ovs_restarts = Counter("ovs_mesh_ovs_restarts", "Open vSwitch restarts the agent saw: a new "
                                    "ovs-vswitchd process, or the OVSDB connection back (ovsdb-server "
                                    "restarted or the connection dropped)", ["daemon"], registry=r)
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            self.ovs_restarts.labels(daemon=daemon)
        self.restores = Counter("ovs_mesh_flow_restores", "Restarts of ovs-vswitchd that waited for the "
                                "pipeline (flow-restore-wait), by how the wait ended: restored (the agent "
                                "installed everything, then cleared it) or bound (cleared after the bound "
                                "without a complete restore)", ["result"], registry=r)
        for result in ("restored", "bound"):
            self.restores.labels(result=result)
        self.restore_seconds = Histogram("ovs_mesh_flow_restore_duration_seconds", "From flow-restore-wait "
                                         "set (the start of ovs-vswitchd) to cleared, per restore",
                                         buckets=(.1, .25, .5, 1, 2, 5, 10, 20, 30, 60), registry=r)
        # () -> (the flag as last read: ovsdb_client.rows.RestoreWait, seconds a flag of ours has been set)
        self.restore_wait: Callable[[], tuple] = lambda: (None, 0.0)
        self._lock = threading.Lock()
        self.peers = 0
        self.flows = 0
        self.tunnels: list[tuple[str, str]] = []   # (peer, state)
        self.families: FamilyStats | Callable[[], FamilyStats] | None = None
        self.last_success: float | None = None     # wall clock
        self.last_ok = False
        self.last_error: str | None = None
        # () -> ((node, reason, message) of the Nodes kept out, why the local node holds the agent back or None)
        self.inventory: Callable[[], tuple[tuple, str | None]] = lambda: ((), None)
        # The file source's good reads by how they were parsed ({"incremental": n, "whole": n}), read
        # when scraped; None without a file source.
        self.config_reads: dict[str, int] | None = None
        # a function giving each peer's PeerIpsec (encryption.ipsec_state) or PeerWireguard
        # (encryption.wg_device), read when scraped
        self.encryption: Callable[[], dict] | None = None
        r.register(_Snapshot(self))
        # peer health: the agent sets `peer_health` to a function returning the verdicts
        self.peer_health: Callable[[], tuple | None] = lambda: None
        r.register(HealthCollector(lambda: self.peer_health()))

    def record(self, ok: bool, seconds: float, changes: int = 0, error: str | None = None,
               peers: int | None = None, flows: int | None = None, tunnels=None,
               kind: str = "full", families: FamilyStats | Callable[[], FamilyStats] | None = None) -> None:
        """`families`: the per-family numbers, or a function that computes them when
        scraped (so a pass does not pay for counting thousands of flows)."""
        self.reconciles.inc()
        self.duration.observe(seconds)
        if ok:
            self.changes.inc(changes)
            self.passes.labels(kind=kind).inc()
        else:
            self.errors.inc()
        with self._lock:
            self.last_ok, self.last_error = ok, error
            if ok:
                self.last_success = time.time()
            if peers is not None:
                self.peers = peers
            if flows is not None:
                self.flows = flows
            if tunnels is not None:
                self.tunnels = list(tunnels)
            if families is not None:
                self.families = families

    def ovs_restarted(self, daemon: str) -> None:
        self.ovs_restarts.labels(daemon=daemon).inc()

    def restored(self, seconds: float, how: str) -> None:
        self.restores.labels(result=how).inc()
        self.restore_seconds.observe(seconds)

    def health(self) -> tuple[bool, str]:
        with self._lock:
            if self.last_success is None:
                return False, "no successful reconcile yet" + (f": {self.last_error}" if self.last_error else "")
            age = time.time() - self.last_success
            if not self.last_ok:
                return False, f"last reconcile failed: {self.last_error}"
            if age > self.healthy_within:
                return False, f"last successful reconcile {age:.0f}s ago"
            return True, f"ok: last reconcile {age:.1f}s ago, {self.peers} peers, {self.flows} flows"

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Snapshot:
    def __init__(self, m: AgentMetrics):
        self.m = m

    def describe(self):
        return []

    def collect(self):
        m = self.m
        with m._lock:
            peers, flows, tunnels, last, families = m.peers, m.flows, list(m.tunnels), m.last_success, m.families
        yield GaugeMetricFamily("ovs_mesh_peers", "Peers this node tunnels to", value=peers)
        yield GaugeMetricFamily("ovs_mesh_flows", "OpenFlow rules ovs-mesh owns on obr0", value=flows)
        t = GaugeMetricFamily("ovs_mesh_tunnels", "Tunnel to each peer, by state (1 = in that state)",
                              labels=["peer", "state"])
        up = GaugeMetricFamily("ovs_mesh_tunnel_up", "1 when the tunnel to the peer is up", labels=["peer"])
        for peer, state in tunnels:
            t.add_metric([peer, state], 1)
            up.add_metric([peer], 1 if state == "up" else 0)
        yield t
        yield up
        yield GaugeMetricFamily("ovs_mesh_last_reconcile_timestamp_seconds",
                                "Unix time of the last successful reconcile", value=last or 0)
        if families is not None:
            yield from _family_metrics(families() if callable(families) else families)
        reads = m.config_reads
        if reads is not None:
            c = CounterMetricFamily("ovs_mesh_config_reads", "Good contents of the topology file read, by how "
                                    "they were parsed: incremental (only the entries that changed) or whole "
                                    "(a layout the incremental parse does not take)", labels=["parse"])
            for parse, n in sorted(dict(reads).items()):
                c.add_metric([parse], n)
            yield c
        yield from _inventory_metrics(*m.inventory())
        flag, waited = m.restore_wait()
        yield _restore_gauge(flag)
        yield GaugeMetricFamily("ovs_mesh_flow_restore_wait_seconds", "How long the flow-restore-wait that "
                                "ovs-mesh set has been waiting (0 when none)", value=round(waited, 3))
        if m.encryption is not None:
            yield from _encryption_metrics(m.encryption())


def _restore_gauge(flag) -> GaugeMetricFamily:
    g = GaugeMetricFamily("ovs_mesh_flow_restore_wait", "1 while other_config:flow-restore-wait is set "
                          "(ovs-vswitchd keeps the datapath's flows and waits for the pipeline), by who set "
                          "it: ovs-mesh (its start hook; the agent clears it) or other (e.g. ovs-ctl restart)",
                          labels=["by"])
    g.add_metric(["ovs-mesh"], 1 if flag is not None and flag.ours else 0)
    g.add_metric(["other"], 1 if flag is not None and flag.set and not flag.ours else 0)
    return g


def _encryption_metrics(states: dict):
    """Per peer: encrypted, its child SAs up (both directions: an IKE SA alone is not up), their age;
    WireGuard: the peer on the device, a handshake in the last 180 s, the handshake's age.
    No key, SPI or secret is ever a label or a value."""
    enc = GaugeMetricFamily("ovs_mesh_peer_encrypted", "1 when a policy requires ESP for the tunnel traffic "
                            "to the peer (cluster.encryption ipsec), or the WireGuard device has the peer "
                            "(cluster.encryption wireguard)", labels=["peer"])
    up = GaugeMetricFamily("ovs_mesh_peer_sa_up", "1 when an ESP child SA exists in both directions with the peer "
                           "(ipsec), or its latest WireGuard handshake is less than 180 s old (wireguard)",
                           labels=["peer"])
    age = GaugeMetricFamily("ovs_mesh_peer_sa_age_seconds", "Seconds since the newest outbound ESP SA to the "
                            "peer was installed (a rekey restarts it), or since its latest WireGuard handshake",
                            labels=["peer"])
    for peer, s in sorted(states.items()):
        enc.add_metric([peer], 1 if s.policy else 0)
        up.add_metric([peer], 1 if s.state == "up" else 0)
        if s.sa_age_seconds is not None:
            age.add_metric([peer], s.sa_age_seconds)
    yield enc
    yield up
    yield age


def _inventory_metrics(kept_out, waiting):
    pairs = sorted({(name, reason) for name, reason, _ in kept_out})   # a Node counts once per reason
    g = GaugeMetricFamily("ovs_mesh_nodes_kept_out", "Nodes that are not peers, by reason: subnet-taken, "
                          "address-taken (another Node holds it), invalid, incomplete", labels=["reason"])
    for reason in REASONS:
        g.add_metric([reason], sum(1 for _, r in pairs if r == reason))
    yield g
    g = GaugeMetricFamily("ovs_mesh_node_kept_out", f"1 per Node kept out and reason (the first "
                          f"{KEPT_OUT_SERIES} Nodes by name; ovs_mesh_nodes_kept_out counts them all)",
                          labels=["node", "reason"])
    named = set(sorted({name for name, _ in pairs})[:KEPT_OUT_SERIES])
    for name, reason in pairs:
        if name in named:
            g.add_metric([name, reason], 1)
    yield g
    yield GaugeMetricFamily("ovs_mesh_local_node_waiting", "1 while the local node's own Node (not in the "
                            "topology, or without its subnet) holds the agent back", value=1 if waiting else 0)


def _family_metrics(f: FamilyStats):
    for name, text, values in (
            ("ovs_mesh_peers_with_subnet", "Peers this node tunnels to that have a pod subnet of the family",
             f.peers_with_subnet),
            ("ovs_mesh_overlay_routes", "Peer pod subnets of the family routed into the tunnels (table 10)",
             f.overlay_routes),
            ("ovs_mesh_family_flows", "OpenFlow rules ovs-mesh owns on obr0 that match the family", f.flows)):
        g = GaugeMetricFamily(name, text, labels=["family"])
        for family, value in values.items():
            g.add_metric([family], value)
        yield g
    g = GaugeMetricFamily("ovs_mesh_pod_subnet_info", "This node's pod subnet and gateway (kbr0 address) "
                          "of each family, value 1", labels=["family", "subnet", "gateway"])
    for family, subnet, gateway in f.subnets:
        g.add_metric([family, subnet, gateway], 1)
    yield g
    g = GaugeMetricFamily("ovs_mesh_underlay_info", "The family and address of this node's underlay "
                          "(the tunnels' endpoint), value 1", labels=["family", "address"])
    if f.underlay is not None:
        g.add_metric(list(f.underlay), 1)
    yield g


class MetricsServer:
    """A tiny threaded HTTP server: /metrics and /healthz, nothing else."""

    def __init__(self, metrics: AgentMetrics, address: str):
        host, _, port = address.rpartition(":")
        metrics_ref = metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # http.server's naming
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, metrics_ref.render(), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/readyz"):
                    ok, text = metrics_ref.health()
                    self._send(200 if ok else 503, (text + "\n").encode(), "text/plain; charset=utf-8")
                else:
                    self._send(404, b"not found: try /metrics or /healthz\n", "text/plain")

            def _send(self, code, body, ctype):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt, *args):  # keep scrapes out of the journal
                LOG.debug("http: " + fmt, *args)

        self.httpd = ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
