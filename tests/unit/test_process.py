"""ovs_mesh.process: the one liveness check and the one stop-by-pid for the whole project."""
import os
import signal
import subprocess
import sys
import time

from ovs_mesh.process import alive, stop_pid
from tests.helpers import wait_for

IGNORE_TERM = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
               "print('ready', flush=True); time.sleep(60)")


def _child(code: str = "import time; print('ready', flush=True); time.sleep(60)") -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"   # its signal handlers are in place
    return p


def test_alive_and_zombie():
    assert alive(os.getpid())
    p = _child()
    try:
        assert alive(p.pid)
        os.kill(p.pid, signal.SIGKILL)
        # Not reaped yet: a zombie, which is dead for every caller.
        wait_for(lambda: not alive(p.pid), 5, "the killed child to count as dead")
        assert os.path.exists(f"/proc/{p.pid}")
    finally:
        p.kill()
        p.wait()
    assert not alive(p.pid)


def test_stop_pid_term_kill_and_gone():
    p = _child()
    t0 = time.monotonic()
    assert stop_pid(p.pid, timeout=5) is False           # exited on SIGTERM: not killed
    assert time.monotonic() - t0 < 5 and p.wait(5) == -signal.SIGTERM

    p = _child(IGNORE_TERM)
    assert stop_pid(p.pid, timeout=0.3) is True          # ignored SIGTERM: SIGKILL after the timeout
    assert p.wait(5) == -signal.SIGKILL

    assert stop_pid(p.pid, timeout=0.3) is False         # gone (and reaped): nothing to do
