"""The agent's scheduler on a fake clock: coalescing, capped backoff, reset, resync."""
from ovs_mesh.agent.schedule import Reason, Scheduler


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def sched(**kw):
    clock = Clock()
    return Scheduler(resync=60, backoff=(0.5, 4.0), settle=0, clock=clock, **kw), clock


def test_kicks_before_a_pass_coalesce_into_one():
    s, _ = sched()
    for _i in range(100):
        s.kick(Reason.SOURCE)
    s.kick(Reason.FLOWS, "3 flows with our cookie, expected 7")
    due = s.wait()
    assert due.reasons == {Reason.SOURCE, Reason.FLOWS}
    assert str(due) == "source changed, 3 flows with our cookie, expected 7"
    s.done(True)
    s.kick(Reason.SIGHUP)
    assert str(s.wait()) == "SIGHUP"


def test_backoff_doubles_to_the_cap_and_resets():
    s, clock = sched()
    s.kick(Reason.START)
    s.wait()
    delays = []
    for _ in range(5):
        s.done(False)
        delays.append(s.retry_at - clock.now)
        clock.now = s.retry_at
        assert str(s.wait()) == "retry"
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]
    s.done(False)                                   # a retry is pending 4 s out...
    s.kick(Reason.VSWITCHD_STARTED, reset_backoff=True)
    due = s.wait()                                  # ...but OVS came back: at once
    assert str(due) == "retry" and s.backoff == 0.5
    s.done(True)
    assert s.retry_at is None and s.backoff == 0.5


def test_periodic_resync_when_idle():
    s, clock = sched()
    clock.now += 61
    assert s.wait().reasons == {Reason.RESYNC}


def test_stop_ends_wait():
    s, _ = sched()
    s.stop()
    assert s.wait() is None


def test_a_lone_kick_runs_at_once_and_a_burst_settles():
    slept = []
    clock = Clock()
    s = Scheduler(resync=60, settle=0.02, clock=clock, sleep=slept.append)
    s.kick(Reason.SOURCE)
    s.wait()
    assert slept == []   # idle: at once
    clock.now += 0.005
    s.kick(Reason.SOURCE)   # came during the pass
    s.done(True)
    s.wait()
    assert slept == [0.02]   # right after a pass: the rest of the burst first
    clock.now += 1.0
    s.done(True)
    clock.now += 0.5
    s.kick(Reason.SOURCE)
    s.wait()
    assert slept == [0.02]
