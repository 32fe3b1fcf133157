"""The Prometheus view of peer health: counts always, per-peer series while the peers
are at most `health.peer_metrics_max` (a large cluster would otherwise export
thousands of series per node)."""
from __future__ import annotations

from collections.abc import Callable

from prometheus_client.core import GaugeMetricFamily

from .state import PeerHealth

FAMILIES = ("ipv4", "ipv6")
# (the verdicts per (peer, family), the largest peer count with per-peer series) or None
Source = Callable[[], "tuple[dict[tuple[str, str], PeerHealth], int] | None"]


class HealthCollector:
    def __init__(self, source: Source):
        self.source = source

    def describe(self):
        return []

    def collect(self):
        got = self.source()
        health, most = got if got is not None else ({}, 0)
        counts = {s: GaugeMetricFamily(f"ovs_mesh_{s}_peers", text, labels=["family"]) for s, text in (
            ("probed", "Peers this node probes through the overlay"),
            ("unreachable", "Peers whose probes went unanswered health.failures times in a row"),
            ("mtu_blackhole", "Peers that answer small probes but not full-MTU ones"))}
        for family in FAMILIES:
            states = [h.state for (_, f), h in health.items() if f == family]
            counts["probed"].add_metric([family], len(states))
            counts["unreachable"].add_metric([family], states.count("unreachable"))
            counts["mtu_blackhole"].add_metric([family], states.count("mtu-blackhole"))
        yield from counts.values()
        reachable = GaugeMetricFamily("ovs_mesh_peer_reachable", "1 when the peer answers full-MTU probes "
                                      "through the overlay, 0 when unreachable or an MTU black hole (no "
                                      "series before the first verdict)", labels=["peer", "family"])
        state = GaugeMetricFamily("ovs_mesh_peer_state", "The peer's probe verdict (1 = in that state)",
                                  labels=["peer", "family", "state"])
        rtt = GaugeMetricFamily("ovs_mesh_peer_rtt_seconds", "Round-trip time of the last answered probe "
                                "to the peer's gateway through the overlay", labels=["peer", "family"])
        if len({peer for peer, _ in health}) <= most:
            for (peer, family), h in sorted(health.items()):
                state.add_metric([peer, family, h.state], 1)
                if h.state != "unknown":
                    reachable.add_metric([peer, family], 1 if h.state == "reachable" else 0)
                if h.rtt is not None:
                    rtt.add_metric([peer, family], h.rtt)
        yield reachable
        yield state
        yield rtt
