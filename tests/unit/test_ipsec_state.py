"""Per-peer IPsec state from the kernel's XFRM tables (pure parse): up only with an ESP SA both
ways (an IKE SA without a child SA carries nothing), the age of the newest outbound SA, and no key
material in what status and the metrics show."""
import time

from ovs_mesh.agent.metrics import AgentMetrics
from ovs_mesh.cli.status import render
from ovs_mesh.encryption.ipsec_state import PeerIpsec, parse_policies, parse_states, peer_states

KEY = "0x5f3c9a1b2d4e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8"


def state(src, dst, added):
    return f"""src {src} dst {dst}
\tproto esp spi 0xc2d5b8f1(3268786417) reqid 1(0x00000001) mode transport
\treplay-window 0 seq 0x00000000 flag  (0x00000000)
\taead rfc4106(gcm(aes)) {KEY} 128
\tanti-replay context: seq 0x0, oseq 0x5, bitmap 0x00000000
\tsel src {src}/32 dst {dst}/32 proto udp dport 4789
\tlifetime config:
\t  limit: soft (INF)(bytes), hard (INF)(bytes)
\tlifetime current:
\t  1234(bytes), 12(packets)
\t  add {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(added))} use -
\tstats:
\t  replay-window 0 replay 0 failed 0
"""


POLICIES = """src 192.168.56.11/32 dst 192.168.56.12/32 proto udp dport 4789
\tdir out priority 366463 ptype main
\ttmpl src 0.0.0.0 dst 0.0.0.0
\t\tproto esp reqid 1 mode transport
src 192.168.56.11/32 dst 192.168.56.13/32 proto udp dport 4789
\tdir out priority 366463 ptype main
\ttmpl src 0.0.0.0 dst 0.0.0.0
\t\tproto esp reqid 2 mode transport
src 0.0.0.0/0 dst 0.0.0.0/0 proto udp sport 4789
\tdir out action block priority 1
"""


def test_up_needs_an_esp_sa_each_way():
    now = 1_800_000_000.0
    states = (state("192.168.56.11", "192.168.56.12", now - 30) + state("192.168.56.12", "192.168.56.11", now - 31)
              + state("192.168.56.11", "192.168.56.12", now - 400)     # the SA a rekey replaced
              + state("192.168.56.11", "192.168.56.13", now - 5))      # only outbound: not up
    peers = peer_states("192.168.56.11", ["192.168.56.12", "192.168.56.13", "192.168.56.14"], states, POLICIES, now)
    assert peers["192.168.56.12"] == PeerIpsec(True, True, True, 30.0)
    assert peers["192.168.56.12"].state == "up"
    assert peers["192.168.56.13"].state == "no-sa" and peers["192.168.56.13"].policy
    assert peers["192.168.56.14"].state == "no-policy" and not peers["192.168.56.14"].policy


def test_drop_shunts_are_not_encryption():
    assert parse_policies(POLICIES) == {("192.168.56.11", "192.168.56.12"), ("192.168.56.11", "192.168.56.13")}


def test_parse_states_keeps_only_addresses_and_ages():
    parsed = parse_states(state("192.168.56.11", "192.168.56.12", 1000.0), 1010.0)
    assert parsed == {("192.168.56.11", "192.168.56.12"): 10.0}
    assert KEY not in repr(parsed)


def test_status_row_and_metrics_show_state_not_secrets():
    peer = {"name": "node-2", "ip": "192.168.56.12", "subnets": ["10.244.2.0/24"], "port": "obr0-vxlan",
            "ofport": 10, "health": "up",
            "probe": {"state": "reachable", "rtt_ms": 1.0, "since_answer_seconds": 1, "since_sent_seconds": 1,
                      "families": {"ipv4": "reachable"}},
            "encryption": PeerIpsec(True, True, True, 42.0).as_dict()}
    d = {"node": "node-1", "tunnel": "vxlan", "mode": "flow", "encryption": "ipsec", "peers": [peer], "flows": 9,
         "converged": True, "pending_changes": 0, "families": ["ipv4"], "subnets": ["10.244.1.0/24"],
         "underlay_family": "ipv4", "ip": "192.168.56.11", "last_reconcile": None,
         "health": {"probing": True, "summary": "1 reachable"}, "problems": []}
    text = render(d)
    assert "vxlan tunnels, encrypted by ipsec" in text and "ipsec:up 42s" in text and "ENCRYPTION" in text
    m = AgentMetrics(healthy_within=60)
    m.encryption = lambda: {"node-2": PeerIpsec(True, True, True, 42.0), "node-3": PeerIpsec(True, False, True, None)}
    out = m.render().decode()
    assert 'ovs_mesh_peer_encrypted{peer="node-2"} 1.0' in out
    assert 'ovs_mesh_peer_sa_up{peer="node-2"} 1.0' in out and 'ovs_mesh_peer_sa_up{peer="node-3"} 0.0' in out
    assert 'ovs_mesh_peer_sa_age_seconds{peer="node-2"} 42.0' in out and 'sa_age_seconds{peer="node-3"}' not in out
    assert "ovs_mesh_peer_encrypted" not in AgentMetrics(healthy_within=60).render().decode()
