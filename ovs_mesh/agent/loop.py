"""The agent: reconcile forever, from the config file or the Kubernetes API.

Everything that can make OVS differ from the topology only *kicks* the agent
(a `Reason`): the file source, the Kubernetes source, the OVS watcher (our rows
changed, vswitchd restarted, flows lost, OVSDB reconnected), the periodic
resync timer and SIGHUP.  One worker (the main thread) runs the passes, so a
burst of a hundred events costs a few passes, and a converged node makes zero
changes.

Two kinds of pass.  A *full* pass observes everything, builds the whole desired
state, diffs and applies it, then rebuilds the record of what is installed
(`installed.Installed`); it runs at start, on every disruption the watcher
reports, on SIGHUP, on the periodic resync, after any failure and whenever the
change is not per-peer.  An *incremental* pass answers a source change that
only added, removed or changed peers: it diffs just those peers' parts against
the record and applies only that (no dump, no OVSDB read, no full build); the
record changes only after it succeeded.

The parts: `schedule.Scheduler` (when: coalescing, backoff, resync),
`session.Inventory` (what: the source and the last good topology, with
`last_good.LastGood`, its copy on disk for a start before the source answers),
`session.NodeSession` (with what: the node's clients), `watch.OvsWatcher`
(noticing drift), `restore.FlowRestore` (flow-restore-wait: the pipeline back
before a restarted ovs-vswitchd forwards), `metrics` and `sdnotify` (telling
others).  Failures are
classified: bad input is logged once and the last good topology stays
installed; everything else is transient and retried with capped exponential
backoff (reset when OVS comes back).  The agent never tears anything down:
SIGTERM stops the loop and leaves bridges, ports and flows in place, so a
restarted agent finds them converged.
"""
from __future__ import annotations

import functools
import gc
import itertools
import logging
import threading
import time

from topology.model import Config

from ..encryption import ipsec_state, wg_device, wg_keys
from ..health.passive import last_sent, peer_packets
from ..health.prober import Prober
from ..host.neigh_hold import NeighbourHold
from ..ovs.desired import tunnel_port_name
from ..ovs.model import OvsState
from ..ovs.monitor import FlowIndex
from ..reconcile.clients import OvsdbRows
from ..reconcile.families import family_stats
from ..reconcile.plan import Result
from ..reconcile.status_file import write_status
from ..sources import Source
from .installed import Installed, blocker, changed_names, delta, node_map, parts_reusing
from .last_good import LastGood
from .metrics import AgentMetrics, MetricsServer
from .restore import BOUND, FlowRestore
from .schedule import Pass, Reason, Scheduler
from .sdnotify import SdNotify
from .session import LOG, Inventory, NodeSession, NotReady, SayOnce
from .watch import Expectations, OvsWatcher


class Agent:
    def __init__(self, source: Source, *, resync: float = 60.0, metrics_address: str | None = None,
                 notifier: SdNotify | None = None, backoff: tuple[float, float] = (0.1, 10.0),
                 settle: float = 0.02, session: NodeSession | None = None, kube_factory=None,
                 watch: bool = True, probe: bool = False, state_dir: str | None = None,
                 restore_bound: float = BOUND, neigh_hold: NeighbourHold | None = None):
        self.source = source
        self.notifier = notifier or SdNotify()
        self.metrics = AgentMetrics(healthy_within=max(2 * resync + 30, 60))
        self.metrics.config_reads = getattr(source, "reads", None)
        self.metrics_address = metrics_address
        self.server: MetricsServer | None = None
        self.schedule = Scheduler(resync, backoff, settle)
        self.say = SayOnce(LOG)
        self.last_good = LastGood(state_dir)
        self.inventory = Inventory(source, self._on_source, self.say, kube_factory, self.last_good)
        self.metrics.inventory = lambda: (self.inventory.kept_out(), self.inventory.waiting)
        self.restore = FlowRestore(restore_bound, on_done=self.metrics.restored)
        self.neigh_hold = neigh_hold     # kbr0's neighbours through an ovs-vswitchd restart (the watcher's)
        self.metrics.restore_wait = lambda: (self.restore.flag, self.restore.waited())
        self.session = session or NodeSession()
        self.watch = watch
        self.expected = Expectations()   # what OVS should hold: shared with the watcher thread
        self.reconciles = 0
        self.passes = {"full": 0, "incremental": 0}   # successful passes by kind
        self.installed: Installed | None = None      # what the last successes installed
        self.full_due = True                         # the next pass must be a full one
        self._tunnels: dict[str, str] = {}   # peer -> its tunnel's health, for the metrics
        self.ready = False
        # peer health (ovs_mesh/health): probes on their own thread, fed the config after every pass
        self.prober: Prober | None = Prober() if probe else None
        self._rx: dict[str, int] = {}    # per peer: packets its receive flows counted at the last full pass
        self._peer_metrics_max = 0       # health.peer_metrics_max of the last pass's config
        if self.prober is not None:
            prober = self.prober
            self.metrics.peer_health = lambda: (prober.snapshot()[0], self._peer_metrics_max)
        self._heartbeat = time.monotonic()
        self._ovsdb_seen: OvsdbRows | None = None

    # -- events -----------------------------------------------------------
    def kick(self, reason: Reason, detail: str = "", reset_backoff: bool = False) -> None:
        self.schedule.kick(reason, detail, reset_backoff)

    def _on_source(self, *_args) -> None:
        self.kick(Reason.SOURCE, reset_backoff=True)

    def stop(self) -> None:
        self.schedule.stop()

    # -- main loop ----------------------------------------------------------
    def run(self) -> int:
        """Run until stop(); returns the exit code (0: stopped cleanly)."""
        if self.metrics_address:
            self.server = MetricsServer(self.metrics, self.metrics_address)
            self.server.start()
            LOG.info("metrics on http://%s/metrics, health on /healthz", self.server.address)
        self.source.start(self._on_source)
        cfg = self.source.config()
        if cfg is not None:
            self.expected.update(rundir=cfg.local.rundir)
        watcher = (OvsWatcher(self.expected, self.session, self.kick, restore=self.restore,
                              seen=self.metrics.ovs_restarted, neigh=self.neigh_hold) if self.watch else None)
        if watcher is not None:
            watcher.start()
        if self.notifier.watchdog_seconds:
            threading.Thread(target=self._watchdog, name="watchdog", daemon=True).start()
        if self.prober is not None:
            self.prober.start()
        self.notifier.status("starting: first reconcile")
        self.kick(Reason.START)
        try:
            while (due := self.schedule.wait(self._beat)) is not None:
                ok = self.reconcile_once(due)
                # While ovs-vswitchd waits for the pipeline, a failed pass is retried quickly.
                self.schedule.done(ok, 0.5 if self.restore.pending else None)
        finally:
            LOG.info("stopping; leaving bridges, ports and flows in place")
            self.notifier.stopping("stopping (the mesh stays installed)")
            if watcher is not None:
                watcher.stop()
            if self.prober is not None:
                self.prober.stop()
            self.source.stop()
            self.inventory.stop_kube()
            self.session.close()
            if self.server is not None:
                self.server.stop()
            self.notifier.close()
        return 0

    def _beat(self) -> None:
        self._heartbeat = time.monotonic()

    def _watchdog(self) -> None:
        seconds = self.notifier.watchdog_seconds
        assert seconds is not None   # started only under a systemd watchdog
        while not self.schedule.stopped.wait(seconds / 2):
            # Only vouch for a worker that is still going round its loop.
            if time.monotonic() - self._heartbeat < seconds:
                self.notifier.watchdog()

    # -- one pass ---------------------------------------------------------
    def reconcile_once(self, due: Pass | str = "event") -> bool:
        """One pass (incremental when it can be, else full); True when it succeeded
        (or there is nothing to do yet)."""
        why = str(due)
        start = time.monotonic()
        try:
            config = self.inventory.config()
        except NotReady as e:
            self.say.say("notready", logging.WARNING, "not reconciling: %s", e)
            self.notifier.status(f"waiting: {e}")
            return True
        except Exception as e:
            return self._failed(e, start)
        self.say.forget("notready")
        try:
            self.expected.update(rundir=config.local.rundir)
            node = self.session.open(config)
            if node.ovsdb is not self._ovsdb_seen:   # a new connection: nothing to compare with yet
                self._ovsdb_seen, self.installed = node.ovsdb, None
                self.expected.update(rows=None)
            if not node.ovsdb.connected():
                self.session.note_connected(False)
                raise ConnectionError(f"not connected to OVSDB at {config.local.ovsdb}")
            kind, result = "incremental", self._incremental(node, config, due)
            if result is None:
                kind, result = "full", self._full(node, config)
                self._restored(node, result)
        except Exception as e:
            self.full_due = True   # the record may no longer match OVS: the retry is a full pass
            return self._failed(e, start)
        self.passes[kind] += 1
        if kind == "full":
            freeze_long_lived()
        self._succeeded(config, result, kind, why, isinstance(due, Pass) and any(r.loud for r in due.reasons),
                        time.monotonic() - start)
        return True

    def _full(self, node, config: Config) -> Result:
        rec = node.reconciler(functools.partial(parts_reusing, self.installed))
        with self.expected.changing():
            result = rec.apply()
            observed = result.observed
            self.installed = Installed.after_full_pass(config, result.parts, observed.ofports,
                                                       (p.name for p in observed.ovs.ports))
            self.full_due = False
            # What the watcher compares with comes from the desired state, not from
            # a read after apply: a read could already miss a row or flow someone
            # deleted since, and so hide that loss.
            self.expected.update(flows=len(result.desired.flows),
                                 rows=OvsState(result.desired.bridge, result.desired.ports),
                                 index=FlowIndex(result.desired.flows))
        self._tunnels = {}
        self._update_tunnels(config, node, list(self.installed.peers))
        self._passive_health(node)
        return result

    def _passive_health(self, node) -> None:
        """Which peers sent us packets since the last full pass (their receive flows' counts)."""
        installed = self.installed
        if self.prober is None or installed is None:
            return
        counts = peer_packets(getattr(node.flows, "rx_packets", {}),
                              {name: part.flows for name, part in installed.peers.items()})
        self.prober.note_sent(last_sent(self._rx, counts, time.time()))
        self._rx = counts

    def _incremental(self, node, config: Config, due: Pass | str) -> Result | None:
        """The per-peer pass, or None when a full pass must run instead."""
        if (self.full_due or not isinstance(due, Pass) or due.reasons != {Reason.SOURCE}
                or self.restore.pending):
            return None
        nodes = node_map(config)
        why_not = blocker(self.installed, config, nodes)
        if why_not is not None:
            LOG.debug("full pass: %s", why_not)
            return None
        rec = self.installed
        assert rec is not None   # blocker() above said there is a record
        d = delta(rec, config, changed_names(rec, nodes), nodes)
        with self.expected.changing():
            result = node.reconciler().apply_delta(d.plan)
            if result.problems:   # a port not at its number: the flows would miss it
                raise IncrementalFailed("; ".join(result.problems))
            rec.commit(d)
            index = self.expected.now().index
            if index is not None:
                index.change([ch.old for ch in d.plan.flows if ch.old is not None],
                             [ch.new for ch in d.plan.flows if ch.new is not None])
            if d.plan.ovsdb:
                self.expected.update(flows=rec.flow_count, rows=rec.rows())
            else:
                self.expected.update(flows=rec.flow_count)
        self._update_tunnels(config, node, d.names)
        return result

    def _restored(self, node, result: Result) -> None:
        """After a full pass: when ovs-vswitchd waits for a restore (our flag), let it forward once
        it holds the whole pipeline (raises RestoreIncomplete, and the pass is retried, if not)."""
        desired = result.desired
        assert desired is not None   # a full pass
        self.restore.complete(node.ovsdb, node.flows, len(desired.flows),
                              {p.name: p.ofport_request for p in desired.ports if p.ofport_request})

    def _update_tunnels(self, config: Config, node, names: list[str]) -> None:
        """The metrics' tunnel states of the named peers (one pass over the Interface table)."""
        assert self.installed is not None   # a pass has just installed something
        peers = self.installed.peers
        for n in names:
            if n not in peers:
                self._tunnels.pop(n, None)
        ports = {n: (peers[n].ports[0].name if peers[n].ports else tunnel_port_name(config.cluster.tunnel))
                 for n in names if n in peers}
        health = node.ovsdb.health(set(ports.values())) if ports else {}
        self._tunnels.update({n: health[port].health for n, port in ports.items()})

    def _succeeded(self, config: Config, result, kind: str, why: str, loud: bool, seconds: float) -> None:
        self.reconciles += 1
        n = len(result.changes)
        flows = self.expected.now().flows
        self.metrics.record(True, seconds, n, peers=len(self._tunnels), flows=flows or 0,
                            tunnels=self._tunnels.items(), kind=kind,
                            families=self._family_stats(config))
        self.metrics.encryption = ipsec_state.peer_reader(config) or wg_device.peer_reader(config)
        if config.source == "kubernetes" and config.cluster.encryption == "wireguard":
            public = wg_keys.read_public_key(config.local.wireguard_key)   # made by this pass's host stage
            if public is not None:
                self.inventory.publish_wireguard_key(config.local.node, public)
        why = f"{why}; {kind}" if kind != "full" else why
        if self.say.forget("error"):
            LOG.info("reconcile recovered")
        if n:
            LOG.info("reconcile (%s): %d changes in %.3fs: %s", why, n, seconds,
                     ", ".join(str(c) for c in result.changes[:20]) + (" ..." if n > 20 else ""))
        else:
            LOG.log(logging.INFO if (not self.ready or loud) else logging.DEBUG,
                    "reconcile (%s): converged, 0 changes in %.3fs", why, seconds)
        if result.problems:
            self.say.say("problems", logging.WARNING, "after reconcile: %s", "; ".join(result.problems))
        elif self.say.forget("problems"):
            LOG.info("problems after reconcile are gone")
        write_status(config.local.rundir, result, kind)
        if not self.inventory.stale:
            self.last_good.save(config, force=kind == "full")
        if self.prober is not None:
            self.prober.rundir = config.local.rundir
            self._peer_metrics_max = config.health.peer_metrics_max
            self.prober.update(config)
        status = f"converged: {len(self._tunnels)} peers, {flows} flows"
        if not self.ready:
            self.ready = True
            self.notifier.ready(status)
            LOG.info("ready: %s", status)
        else:
            self.notifier.status(status)

    def _family_stats(self, config: Config):
        """The per-family metrics, computed at the first scrape after this pass (0.3 s at 35 000
        flows) and kept for the next ones, from what this pass left installed (the parts are frozen
        values; the list is a snapshot a later pass cannot change)."""
        assert self.installed is not None   # called after a successful pass
        fixed, peers = self.installed.fixed, list(self.installed.peers.values())
        return functools.cache(lambda: family_stats(config, itertools.chain(fixed.flows, *(p.flows for p in peers))))

    def _failed(self, e: Exception, start: float) -> bool:
        text = f"{type(e).__name__}: {e}"
        self.metrics.record(False, time.monotonic() - start, error=text)
        self.say.say("error", logging.WARNING, "reconcile failed (will retry with backoff): %s", text,
                     exc_info=LOG.isEnabledFor(logging.DEBUG))
        self.notifier.status(f"retrying: {text}"[:200])
        return False


def freeze_long_lived() -> None:
    """Keep what a full pass leaves (the config, the record, the flows of thousands of peers) out of
    the cyclic garbage collector's walks: without this its oldest generation walks them all every
    few events (at 5000 peers ~4 ms an event on average, as one stall of tens of ms every ~20
    events).  What became garbage since the last full pass is collected first, so a cycle frozen
    then is freed at the next full pass (the periodic resync at the latest)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class IncrementalFailed(Exception):
    """An incremental pass left OVS other than its record says: a full pass follows."""
