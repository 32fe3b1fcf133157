"""Peer health: the verdicts, the jittered schedule, the per-second cap, the prober's
checks of each answer (against fake sockets and a fake clock), the passive evidence,
the metrics and the config keys."""
import os
import random
import struct

import pytest

from ovs_mesh.health import passive
from ovs_mesh.health.metrics import HealthCollector
from ovs_mesh.health.packets import checksum, echo, parse_reply
from ovs_mesh.health.prober import Prober, Target, targets
from ovs_mesh.health.record import peer_view
from ovs_mesh.health.state import Budget, PeerHealth, after_round, jittered, summary, worst
from ovs_mesh.ovs.model import Flow
from topology.config import ConfigError, parse_config

N = 3


def rounds(outcomes, h=None):
    """Apply (answered, mtu_ok) outcomes in order; the states after each."""
    h = PeerHealth() if h is None else h
    out = []
    for t, (answered, mtu_ok) in enumerate(outcomes):
        h = after_round(h, answered, mtu_ok, 0.001 if answered else None, float(t), N)
        out.append(h.state)
    return out, h


def test_unknown_until_n_failures_then_unreachable():
    states, h = rounds([(False, False)] * 4)
    assert states == ["unknown", "unknown", "unreachable", "unreachable"]
    assert h.failures == 4 and h.last_answer is None


def test_reachable_after_one_answer_and_unreachable_only_after_n_in_a_row():
    states, h = rounds([(True, True), (False, False), (False, False), (True, True),
                        (False, False), (False, False), (False, False), (True, True)])
    assert states == ["reachable", "reachable", "reachable", "reachable",
                      "reachable", "reachable", "unreachable", "reachable"]
    assert h.failures == 0 and h.rtt == 0.001 and h.last_answer == 7.0


def test_lost_full_size_probes_make_an_mtu_blackhole_and_one_answer_ends_it():
    states, h = rounds([(True, True), (True, False), (True, False), (True, False), (True, True)])
    assert states == ["reachable", "reachable", "reachable", "mtu-blackhole", "reachable"]
    states, _ = rounds([(True, False)] * 3 + [(False, False)] * 3)
    assert states == ["reachable", "reachable", "mtu-blackhole", "mtu-blackhole", "mtu-blackhole", "unreachable"]


def test_worst_state_and_summary():
    assert worst(["reachable", "unknown"]) == "unknown"
    assert worst(["reachable", "mtu-blackhole", "unreachable"]) == "unreachable"
    assert worst([]) == "unknown"
    states = {f"node-{k}": "reachable" for k in range(40)}
    states.update({"node-9": "unreachable", "node-7": "unreachable"})
    assert summary(states) == "2 of 40 peers unreachable: node-7, node-9"
    assert summary({"a": "reachable"}) == "all 1 peers reachable"
    assert summary({"a": "mtu-blackhole", "b": "reachable"}) == "1 of 2 peers with an MTU black hole: a"


def test_jitter_stays_within_ten_percent_and_spreads():
    rng = random.Random(1)
    values = [jittered(10.0, 0.1, rng.random()) for _ in range(1000)]
    assert 9.0 <= min(values) < 9.1 and 10.9 < max(values) <= 11.0
    assert len({round(v, 2) for v in values}) > 150   # spread over the whole range, not a few values


def test_budget_caps_packets_per_second():
    b, sent, t = Budget.full(100.0, 0.0), 0, 0.0
    while t < 10.0:
        ok, b = b.take(2, t)
        sent += 2 if ok else 0
        t += 0.001
    assert 1000 <= sent <= 1100   # 100/s for 10 s, plus one second's burst at most
    ok, b = Budget.full(10.0, 0.0).take(10, 0.0)
    assert ok and b.wait_for(2) == pytest.approx(0.2)
    ok, b = Budget.full(1.0, 0.0).take(2, 5.0)    # below one round a second: a round every 2 s
    assert ok and not b.take(2, 6.0)[0] and b.take(2, 7.0)[0]


# -- the prober against fake sockets and a fake clock --------------------------------


class FakeSocket:
    """What the prober needs of a raw socket: sendto, recvmsg (no kernel timestamps here: the
    prober takes its clock), close."""

    def __init__(self, family, src):
        self.family, self.src, self.sent, self.inbox = family, src, [], []
        self.r, self.w = os.pipe()

    def fileno(self):
        return self.r

    def sendto(self, data, addr):
        self.sent.append((data, addr[0]))

    def recvmsg(self, _n, _anc):
        if not self.inbox:
            raise BlockingIOError
        data, addr = self.inbox.pop(0)
        return data, [], 0, addr

    def deliver(self, data, src):
        self.inbox.append((data, (src, 0)))

    def close(self):
        os.close(self.r)
        os.close(self.w)


def reply_to(request: bytes, family="ipv4", token=None) -> bytes:
    """The echo reply a peer's kernel sends (IPv4: with a 20-byte IP header in front)."""
    kind = {"ipv4": 0, "ipv6": 129}[family]
    body = bytes([kind]) + request[1:8] + (token if token is not None else request[8:16]) + request[16:]
    return (b"\x45" + bytes(19) + body) if family == "ipv4" else body


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def config(nodes=4, **health):
    doc = {"cluster": {"cidr": "10.0.0.0/8,fd00:10:244::/48"}, "health": health,
           "local": {"node": "node-1"},
           "nodes": [{"name": f"node-{k}", "ip": f"192.168.{k // 200}.{10 + k % 200}",
                      "subnet": [f"10.{k // 256}.{k % 256}.0/24", f"fd00:10:244:{k:x}::/64"]}
                     for k in range(1, nodes + 1)]}
    return parse_config(doc)


@pytest.fixture
def probe():
    clock, socks = Clock(), {}

    def opener(family, src):
        socks[family] = FakeSocket(family, src)
        return socks[family]

    p = Prober(None, opener=opener, mtu=lambda: 1450, clock=clock, wall=clock, rand=random.Random(7).random)
    clock.t = 12345.0   # a monotonic clock starts anywhere
    yield p, clock, socks
    p.stop()


def run_for(p, clock, seconds, answer=None, step=0.05):
    """Turn the prober for `seconds` of fake time; `answer(sock, data, dst)` may deliver replies."""
    end = clock.t + seconds
    while clock.t < end:
        for s in list(p._socks.values()):
            new, s.sent = s.sent, []
            for data, dst in new:
                if answer:
                    answer(s, data, dst)
            if s.inbox:
                p._receive(s.family, s, clock.t)
        p.turn()
        clock.t += step


def test_targets_are_gateway_to_gateway_per_family():
    ts = targets(config(3))
    assert Target("node-2", "ipv4", "10.0.1.1", "10.0.2.1") in ts
    assert Target("node-3", "ipv6", "fd00:10:244:1::1", "fd00:10:244:3::1") in ts
    assert len(ts) == 4
    assert targets(config(3, enabled=False)) != [] and targets(parse_config({
        "local": {"node": "a", "host": False}, "nodes": [{"name": "a", "ip": "192.168.0.1", "subnet": "10.244.0.0/24"},
                                                         {"name": "b", "ip": "192.168.0.2"}]})) == []


def test_echo_packets_carry_the_token_and_a_valid_checksum():
    pkt = echo("ipv4", 0x1234, 7, b"T" * 8, 1430)
    assert len(pkt) == 1430 and pkt[0] == 8
    assert checksum(pkt) == 0
    assert parse_reply("ipv4", reply_to(pkt)) == (0x1234, 7, b"T" * 8)
    assert parse_reply("ipv6", reply_to(echo("ipv6", 1, 2, b"u" * 8, 64), "ipv6")) == (1, 2, b"u" * 8)
    assert parse_reply("ipv4", b"\x45" + bytes(19) + pkt) is None   # a request is not an answer


def test_answered_probes_make_peers_reachable_with_rtt_and_a_full_size_probe(probe):
    p, clock, socks = probe
    p.update(config(4, interval=1.0))
    sizes = set()

    def answer(sock, data, dst):
        sizes.add((sock.family, len(data)))
        sock.deliver(reply_to(data, sock.family), dst)

    run_for(p, clock, 1.5, answer)
    health, _ = p.snapshot()
    assert {h.state for h in health.values()} == {"reachable"} and len(health) == 6
    assert all(h.rtt is not None and h.rtt < 0.1 for h in health.values())
    assert sizes == {("ipv4", 64), ("ipv4", 1430), ("ipv6", 64), ("ipv6", 1410)}


def test_forged_answers_do_not_count(probe):
    """Wrong token, wrong source address, wrong identifier: none of them answers a probe."""
    p, clock, socks = probe
    p.update(config(2, interval=1.0, failures=2))
    forgeries = []

    def answer(sock, data, dst):
        r = bytearray(reply_to(data, sock.family))
        off = 20 if sock.family == "ipv4" else 0
        sock.deliver(reply_to(data, sock.family, token=b"guessed!"), dst)          # token a pod does not know
        sock.deliver(bytes(r), "10.0.1.7" if sock.family == "ipv4" else "fd00:10:244:1::7")  # a pod's source
        r[off + 4:off + 6] = struct.pack("!H", (p._ident + 1) & 0xFFFF)
        sock.deliver(bytes(r), dst)                                              # another prober's id
        forgeries.append(dst)

    run_for(p, clock, 3.5, answer)
    assert forgeries
    assert {h.state for h in p.snapshot()[0].values()} == {"unreachable"}


def test_lost_big_probes_show_an_mtu_blackhole_and_recover(probe):
    p, clock, socks = probe
    p.update(config(2, interval=1.0))
    small_only = {"on": True}

    def answer(sock, data, dst):
        if len(data) == 64 or not small_only["on"]:
            sock.deliver(reply_to(data, sock.family), dst)

    run_for(p, clock, 4.0, answer)
    assert {h.state for h in p.snapshot()[0].values()} == {"mtu-blackhole"}
    small_only["on"] = False
    run_for(p, clock, 1.2, answer)
    assert {h.state for h in p.snapshot()[0].values()} == {"reachable"}


def test_the_cap_spaces_rounds_out_with_many_peers(probe):
    p, clock, socks = probe
    p.update(config(300, interval=1.0, max_probes_per_second=100))   # 299 peers x 2 families x 2 probes
    run_for(p, clock, 10.0, step=0.01)
    assert 900 <= p.sent <= 1100   # 100 per second (plus one second's burst), not 1196 per second


def test_peers_that_leave_leave_the_verdicts(probe):
    p, clock, socks = probe
    p.update(config(3, interval=1.0))
    run_for(p, clock, 0.2)
    assert {k[0] for k in p.snapshot()[0]} == {"node-2", "node-3"}
    p.update(config(2, interval=1.0))
    run_for(p, clock, 0.2)
    assert {k[0] for k in p.snapshot()[0]} == {"node-2"}


# -- passive evidence, metrics, status view, config ---------------------------------


def test_receive_flow_counts_from_a_dump_with_statistics():
    from ovs_mesh.ovs.openflow import rx_counts

    line = (" cookie=0x6f76736d00000001, duration=12.3s, table=20, n_packets=5, n_bytes=420, "
            "priority=100,ip,tun_src=192.168.56.12,nw_src=10.244.2.0/24 actions=goto_table:30")
    assert rx_counts([line]) == {Flow(20, 100, "ip,tun_src=192.168.56.12,nw_src=10.244.2.0/24", "goto_table:30"): 5}


def test_a_socket_that_cannot_be_opened_leaves_its_peers_unknown_not_unreachable():
    clock = Clock()

    def refuse(family, src):
        raise PermissionError(1, "Operation not permitted")

    p = Prober(None, opener=refuse, mtu=lambda: 1450, clock=clock, wall=clock)
    try:
        p.update(config(3, interval=1.0))
        run_for(p, clock, 5.0)
        assert p.snapshot()[0] == {} and p.sent == 0
    finally:
        p.stop()


def test_passive_last_sent_from_receive_flow_counts():
    f1 = Flow(20, 100, "ip,tun_src=192.168.56.12,nw_src=10.244.2.0/24", "goto_table:30")
    f2 = Flow(20, 100, "arp,tun_src=192.168.56.12,arp_spa=10.244.2.0/24", "goto_table:30")
    out = Flow(10, 100, "ip,nw_dst=10.244.2.0/24", "output:10")
    g = Flow(20, 100, "ip,tun_src=192.168.56.13,nw_src=10.244.3.0/24", "goto_table:30")
    counts = passive.peer_packets({f1: 5, f2: 1, out: 99, g: 0}, {"node-2": [f1, f2, out], "node-3": [g]})
    assert counts == {"node-2": 6, "node-3": 0}
    assert passive.last_sent({}, counts, 50.0) == {"node-2": 50.0}
    assert passive.last_sent(counts, {"node-2": 6, "node-3": 2}, 60.0) == {"node-3": 60.0}


def test_metrics_per_peer_series_only_up_to_the_limit():
    health = {("node-2", "ipv4"): PeerHealth("reachable", rtt=0.002), ("node-3", "ipv4"): PeerHealth("unreachable", 3)}
    got = {m.name: m for m in HealthCollector(lambda: (health, 10)).collect()}
    assert [s.value for s in got["ovs_mesh_unreachable_peers"].samples if s.labels["family"] == "ipv4"] == [1]
    assert {s.labels["peer"]: s.value for s in got["ovs_mesh_peer_reachable"].samples} == {"node-2": 1, "node-3": 0}
    assert got["ovs_mesh_peer_rtt_seconds"].samples[0].value == 0.002
    got = {m.name: m for m in HealthCollector(lambda: (health, 1)).collect()}
    assert got["ovs_mesh_peer_reachable"].samples == [] and got["ovs_mesh_probed_peers"].samples


def test_peer_view_of_the_health_file():
    rec = {"time": 1000.0, "interval": 10, "peers": {"node-2": {
        "ipv4": {"state": "reachable", "rtt": 0.0213, "last_answer": 995.0},
        "ipv6": {"state": "unreachable", "rtt": None, "last_answer": None}, "last_sent": 990.0}}}
    v = peer_view(rec, "node-2", 1001.0)
    assert v == {"state": "unreachable", "families": {"ipv4": "reachable", "ipv6": "unreachable"},
                 "rtt_ms": 21.3, "since_answer_seconds": 6.0, "since_sent_seconds": 11.0}
    assert peer_view(rec, "node-2", 5000.0)["state"] == "unknown"   # a stale file (no agent) says nothing


def test_health_config_keys():
    c = config(2, interval=0.5, failures=5, max_probes_per_second=50, peer_metrics_max=0, enabled=False)
    h = c.health
    assert (h.interval, h.failures, h.max_probes_per_second, h.peer_metrics_max, h.enabled) == (0.5, 5, 50, 0, False)
    assert config(2).health.interval == 10.0 and config(2).health.timeout == 2.0
    for key, value, words in (("interval", 0, "between 0.2 and 3600"), ("interval", "fast", "number of seconds"),
                              ("failures", 0, "between 1 and 100"), ("max_probes_per_second", 1.5, "integer"),
                              ("enabled", "yes", "true or false"), ("every", 1, "unknown key")):
        with pytest.raises(ConfigError) as e:
            config(2, **{key: value})
        assert f"health.{key}: {value}" in str(e.value) and words in str(e.value)


def test_default_settings_probe_every_peer_within_one_interval(probe):
    p, clock, socks = probe
    p.update(config(3))

    def answer(sock, data, dst):
        sock.deliver(reply_to(data, sock.family), dst)

    run_for(p, clock, config(3).health.interval + 0.5, answer, step=0.1)
    assert {h.state for h in p.snapshot()[0].values()} == {"reachable"}


def test_the_agent_feeds_the_prober_and_the_passive_evidence(tmp_path):
    """After each full pass the agent hands the prober its config and the peers whose receive
    flows counted new packets; the metrics carry the prober's counts."""
    import threading

    from ovs_mesh.agent.loop import Agent
    from ovs_mesh.agent.schedule import Reason
    from ovs_mesh.agent.sdnotify import SdNotify
    from tests.helpers import wait_for
    from tests.unit.fakes import FakeFlows, FakeOvsdb, FakeSource, session
    from tests.unit.fakes import config as fake_config

    source, ovsdb, flows = FakeSource(fake_config(tmp_path, 3)), FakeOvsdb(), FakeFlows()
    agent = Agent(source, resync=3600, notifier=SdNotify(environ={}), session=session(ovsdb, flows),
                  watch=False, probe=True)
    t = threading.Thread(target=agent.run, daemon=True)
    t.start()
    try:
        wait_for(lambda: agent.ready, 10, "first convergence")
        rx = {f: 0 for f in flows.flows if f.table == 20}
        assert rx
        peer_flow = next(f for f in rx if f.priority == 100)   # a peer's, not the table's drop
        rx[peer_flow] = 7
        flows.rx_packets = rx
        done = agent.passes["full"]
        agent.kick(Reason.SIGHUP)
        wait_for(lambda: agent.passes["full"] > done and agent.prober.snapshot()[1], 10, "a full pass seeing packets")
        owner = next(name for name, part in agent.installed.peers.items() if peer_flow in part.flows)
        assert set(agent.prober.snapshot()[1]) == {owner}
        assert agent.metrics.registry.get_sample_value("ovs_mesh_probed_peers", {"family": "ipv4"}) == 0
    finally:
        agent.stop()
        t.join(10)
