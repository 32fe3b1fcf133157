"""Pings the lab tests run inside namespaces: one-shot until reachable, and a background
`ping -D` that counts every reply (restarts must lose none).  Works for IPv4 and IPv6
targets alike (iputils ping picks the family from the address)."""
import re
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

from ovs_mesh.lab import agents, build
from tests.helpers import wait_for


def ns(space, *args, timeout=30):
    return subprocess.run(["ip", "netns", "exec", space, *args], capture_output=True, text=True, timeout=timeout)


def wait_ping(src_ns, ip, timeout=20):
    wait_for(lambda: ns(src_ns, "ping", "-c1", "-W1", ip).returncode == 0, timeout,
             f"{ip} to answer a ping from {src_ns}", interval=0)


class Ping:
    """A background `ping -D` whose replies (wall-clock times) are collected as they arrive."""
    REPLY = re.compile(r"^\[(\d+\.\d+)\] .*icmp_seq=(\d+)")

    def __init__(self, src_ns, ip, interval):
        self.proc = subprocess.Popen(["ip", "netns", "exec", src_ns, "ping", "-D", "-i", str(interval), ip],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.replies: list[float] = []
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            m = self.REPLY.match(line)
            with self.cond:
                self.lines.append(line)
                if m:
                    self.replies.append(float(m.group(1)))
                self.cond.notify_all()

    def wait_for(self, pred, timeout, what):
        with self.cond:
            ok = self.cond.wait_for(lambda: pred(self.replies), timeout=timeout)
        assert ok, f"ping: no {what} within {timeout}s; last output: {self.lines[-5:]}"

    def stop(self):
        """SIGINT (ping prints its summary); returns (transmitted, received)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=10)
        self.thread.join(timeout=10)
        text = "".join(self.lines)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", text)
        assert m, text[-2000:]
        return int(m.group(1)), int(m.group(2))

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def restart_agents_under_ping(st, src: dict, dst_ip: str, interval: float = 0.1) -> tuple[int, int]:
    """Ping dst_ip from pod `src` every `interval` s while every node's agent is SIGKILLed and
    restarted, then SIGTERMed and restarted (each new agent converging with 0 changes); assert
    not one reply is missing.  Returns (sent, received)."""
    wait_ping(src["ns"], dst_ip)
    ping = Ping(src["ns"], dst_ip, interval)
    try:
        ping.wait_for(lambda r: len(r) >= 3, 10, "first replies")
        restarts = []
        for sig in (signal.SIGKILL, signal.SIGTERM):
            with ThreadPoolExecutor(max_workers=len(st.nodes)) as ex:
                results = list(ex.map(lambda n: build.restart_agent(st, n, sig), st.nodes))
            for n, r in zip(st.nodes, results):
                restarts.append((n.name, sig.name, r))
                assert r["old_pid"] and r["pid"] != r["old_pid"], r
                assert r["changes"] == 0 and not r["problems"], (n.name, sig.name, r)
                assert agents.pid_of(n) == r["pid"]
        # Keep pinging a while longer: a restart that broke something would show up now.
        seen = len(ping.replies)
        ping.wait_for(lambda r: len(r) >= seen + 10, 10, "replies after the restarts")
        sent, received = ping.stop()
    finally:
        ping.kill()
    for name, sig, r in restarts:
        print(f"{name}: {sig} pid {r['old_pid']} -> pid {r['pid']} converged in {r['seconds']:.2f}s, "
              f"{r['changes']} changes")
    print(f"ping -i {interval} {src['name']} -> {dst_ip} during {len(restarts)} agent restarts: "
          f"{sent} sent, {received} received")
    assert sent >= 20 and received == sent, f"{sent - received} of {sent} lost"
    for n in st.nodes:  # what the restarted agents said
        log = open(n.agent_log).read()
        assert log.count("reconcile (start): converged, 0 changes") >= 2, agents.log_tail(n)
    return sent, received
