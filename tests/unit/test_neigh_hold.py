"""kbr0's neighbour probes through an ovs-vswitchd restart (host/neigh_hold.py), with fake sysctls."""
import pytest

from ovs_mesh.host.neigh_hold import HOLD_PROBES, NeighbourHold

pytestmark = pytest.mark.unit

V4, V6 = "net.ipv4.neigh.kbr0.ucast_solicit", "net.ipv6.neigh.kbr0.ucast_solicit"
D4, D6 = "net.ipv4.neigh.default.ucast_solicit", "net.ipv6.neigh.default.ucast_solicit"


class Sysctls(dict):
    def __init__(self):
        super().__init__({V4: "3", V6: "3", D4: "3", D6: "3"})
        self.writes: list[tuple[str, str]] = []

    def write(self, name, value):
        if name not in self:
            raise FileNotFoundError(name)
        self.writes.append((name, value))
        self[name] = value


class Clock:
    t = 100.0

    def __call__(self):
        return self.t


def hold_of(s: Sysctls, clock=None) -> NeighbourHold:
    return NeighbourHold(read=s.get, write=s.write, clock=clock or Clock(), calm=5.0)


def test_held_while_vswitchd_is_down_or_waiting_released_after_calm():
    s, clock = Sysctls(), Clock()
    h = hold_of(s, clock)
    h.tick(vswitchd_up=True, waiting=False, connected=True)
    clock.t += 10
    h.tick(vswitchd_up=True, waiting=False, connected=True)
    assert s.writes == []                          # nothing held: nothing written in steady state
    h.tick(vswitchd_up=False, waiting=False, connected=False)
    assert s[V4] == s[V6] == HOLD_PROBES and h.holding()
    h.tick(vswitchd_up=False, waiting=False, connected=False)
    assert len(s.writes) == 2                      # held once, not rewritten every tick
    h.tick(vswitchd_up=True, waiting=True, connected=True)    # up, but flow-restore-wait set
    clock.t += 20
    h.tick(vswitchd_up=True, waiting=True, connected=True)
    assert s[V4] == HOLD_PROBES                    # still waiting: still held
    h.tick(vswitchd_up=True, waiting=False, connected=True)   # the flag cleared
    clock.t += 4.9
    h.tick(vswitchd_up=True, waiting=False, connected=True)
    assert s[V4] == HOLD_PROBES                    # not calm long enough yet
    clock.t += 0.2
    h.tick(vswitchd_up=True, waiting=False, connected=True)
    assert s[V4] == s[V6] == "3" and not h.holding()
    n = len(s.writes)
    clock.t += 60
    h.tick(vswitchd_up=True, waiting=False, connected=True)
    assert len(s.writes) == n


def test_no_release_while_the_flag_cannot_be_read():
    s, clock = Sysctls(), Clock()
    h = hold_of(s, clock)
    h.tick(vswitchd_up=False, waiting=False, connected=False)
    for _ in range(10):                            # ovs-vswitchd up, ovsdb-server not reconnected yet
        clock.t += 1
        h.tick(vswitchd_up=True, waiting=False, connected=False)
    assert s[V4] == HOLD_PROBES


def test_released_to_the_default_tables_value_not_to_a_constant():
    s, clock = Sysctls(), Clock()
    s[D4] = s[V4] = "5"
    h = hold_of(s, clock)
    h.tick(vswitchd_up=False, waiting=False, connected=False)
    h.tick(vswitchd_up=True, waiting=False, connected=True)
    clock.t += 6
    h.tick(vswitchd_up=True, waiting=False, connected=True)
    assert s[V4] == "5" and s[V6] == "3"


def test_a_hold_left_by_a_killed_agent_is_released_by_the_next():
    s, clock = Sysctls(), Clock()
    s[V4] = s[V6] = HOLD_PROBES
    h = hold_of(s, clock)
    assert h.holding()
    h.tick(vswitchd_up=True, waiting=False, connected=True)
    clock.t += 5
    h.tick(vswitchd_up=True, waiting=False, connected=True)
    assert s[V4] == s[V6] == "3"


def test_an_admins_default_of_the_hold_value_is_left_alone():
    s, clock = Sysctls(), Clock()
    s[D4] = s[V4] = HOLD_PROBES
    h = hold_of(s, clock)
    assert not h.holding()
    h.tick(vswitchd_up=True, waiting=False, connected=True)
    clock.t += 6
    h.tick(vswitchd_up=True, waiting=False, connected=True)
    assert s[V4] == HOLD_PROBES and s.writes == []


def test_without_kbr0_or_ipv6_nothing_is_written():
    s = Sysctls()
    del s[V4], s[V6]
    h = hold_of(s)
    h.tick(vswitchd_up=False, waiting=False, connected=False)
    assert s.writes == []
    s = Sysctls()
    del s[V6], s[D6]                               # a host without IPv6
    h = hold_of(s)
    h.tick(vswitchd_up=False, waiting=False, connected=False)
    assert s.writes == [(V4, HOLD_PROBES)]


def test_in_a_namespace_without_a_default_table_released_to_the_kernels_default():
    s, clock = Sysctls(), Clock()
    del s[D4], s[D6]
    h = hold_of(s, clock)
    h.tick(vswitchd_up=False, waiting=False, connected=False)
    assert s[V4] == s[V6] == HOLD_PROBES
    h.tick(vswitchd_up=True, waiting=False, connected=True)
    clock.t += 6
    h.tick(vswitchd_up=True, waiting=False, connected=True)
    assert s[V4] == s[V6] == "3"
