"""The VM tier's ping figures (tests/vm/vmlab.py ping_result): the longest gap between replies and
the pings lost, where a ping still in flight when the ping is stopped is not counted as lost."""
import pytest

from tests.vm.vmlab import ping_result

pytestmark = pytest.mark.unit


def reply(t: float, seq: int) -> str:
    return f"[{t:.6f}] 64 bytes from 10.244.2.5: icmp_seq={seq} ttl=62 time=2.31 ms"


def test_gap_and_lost_from_the_sequence_numbers():
    out = "\n".join(["PING 10.244.2.5 (10.244.2.5) 56(84) bytes of data.",
                     *(reply(100 + s / 10, s) for s in (1, 2, 5, 6)), "",
                     "7 packets transmitted, 4 received, 42% packet loss, time 600ms"])
    assert ping_result(out) == (0.3, 2)   # 3 and 4 lost; 7, in flight at the stop, is not


def test_duplicates_count_once_and_no_reply_is_an_error():
    out = "\n".join([reply(1.0, 1), reply(1.1, 2), reply(1.1, 2) + " (DUP!)", reply(1.2, 3)])
    assert ping_result(out) == (0.1, 0)
    with pytest.raises(AssertionError):
        ping_result("3 packets transmitted, 0 received, 100% packet loss")
