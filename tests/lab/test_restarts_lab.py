"""flow-restore-wait on the userspace datapath: the start hook sets it, the agent restores the
pipeline and clears it; without an agent the hook's guard clears it within its bound.

What this datapath allows: its flows live inside ovs-vswitchd, so a restart loses them whatever
the flag says (the kernel datapath keeps them: tests/vm/test_40_restarts.py measures that). Here
the handshake is proven: the flag is set by the start path before ovs-vswitchd starts, it is never
seen cleared while the agent's flows are incomplete, the agent clears it and traffic comes back,
and with no agent the guard clears it after the bound. The lab's underlay is itself an OVS bridge
(br-phy) on the same ovs-vswitchd: it waits as long as the flag is set, which is why it is bounded.
"""
import os
import subprocess
import time

import pytest

from ovs_mesh.agent.install import DATA
from ovs_mesh.host.neigh_hold import CALM, HOLD_PROBES
from ovs_mesh.lab import agents
from ovs_mesh.lab.daemons import OvsDaemons
from tests.helpers import wait_for
from tests.lab.conftest import flow_lab
from tests.lab.ping import Ping, ns, wait_ping
from tests.lab.test_agents import pod_of

HOOK = os.path.join(DATA, "flow-restore")
COOKIE = "cookie=0x6f76736d00000000/0xffffffff00000000"


@pytest.fixture(scope="module")
def lab():
    yield from flow_lab("rs")


def hook(ovs: OvsDaemons, *args: str) -> str:
    p = subprocess.run([HOOK, "--db", ovs.remote, *args], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout + p.stderr


def flag(ovs: OvsDaemons) -> tuple[str, str]:
    """(flow-restore-wait, ovs-mesh's mark) as OVSDB holds them ("" when unset)."""
    out = hook(ovs, "status")
    fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
    return fields["flow-restore-wait"], fields["mark"]


def our_flows(ovs: OvsDaemons) -> int | None:
    out = ovs.run("ovs-ofctl", "-O", "OpenFlow13", "dump-aggregate", ovs.mgmt("obr0"), COOKIE, check=False)
    return int(out.split("flow_count=")[1].split()[0]) if "flow_count=" in out else None


def log_since(node, offset: int) -> str:
    with open(node.agent_log, errors="replace") as f:
        f.seek(offset)
        return f.read()


def wait_for_quietly(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def ucast_solicit(node) -> str:
    """kbr0's unicast neighbour probes in the node's namespace (IPv4)."""
    return ns(node.ns, "cat", "/proc/sys/net/ipv4/neigh/kbr0/ucast_solicit").stdout.strip()


def restart_vswitchd_with_hook(ovs: OvsDaemons, *hook_args: str, while_down=None) -> float:
    """What the drop-in does on a real node: stop, the hook, start. Returns when it was up."""
    ovs.stop_daemon("ovs-vswitchd")
    if while_down is not None:
        while_down()
    out = hook(ovs, *hook_args, "start")
    assert flag(ovs)[0] == "true" and flag(ovs)[1], out   # set by the start path, with our mark
    ovs.start_vswitchd()
    return time.time()


def test_agent_restores_then_clears_the_flag(lab):
    node = lab.nodes[0]
    ovs = OvsDaemons(node.rundir, netns=node.ns)
    src, dst = pod_of(lab, "node-2"), pod_of(lab, "node-1")   # traffic across node-1
    wait_ping(src["ns"], dst["ip"])
    want = our_flows(ovs)
    assert want and flag(ovs) == ("", "")
    log_from = os.path.getsize(node.agent_log)
    ping = Ping(src["ns"], dst["ip"], 0.01)
    samples = []
    try:
        ping.wait_for(lambda r: len(r) >= 3, 10, "first replies")
        default = ucast_solicit(node)
        assert default != HOLD_PROBES

        def held():
            # While ovs-vswitchd is down the agent makes kbr0 keep probing its neighbours' MACs.
            if not wait_for_quietly(lambda: ucast_solicit(node) == HOLD_PROBES, 5):
                pytest.fail(f"kbr0's ucast_solicit still {ucast_solicit(node)} 5 s after ovs-vswitchd "
                            f"stopped:\n{log_since(node, log_from)[-3000:]}")

        t_up = restart_vswitchd_with_hook(ovs, "--guard", "background", "--seconds", "30", while_down=held)
        # Sampled as fast as the tools answer: the flag is never seen cleared before every flow is in.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            f, n = flag(ovs)[0], our_flows(ovs)
            samples.append((time.time() - t_up, f, n))
            if f == "" and n == want:
                break
        ping.wait_for(lambda r: r and r[-1] > t_up, 10, "a reply after ovs-vswitchd came back")
        first = next(t for t in ping.replies if t > t_up)
    finally:
        ping.kill()
    cleared = next((s for s in samples if s[1] == ""), None)
    assert cleared is not None, f"flow-restore-wait still set after 20 s: {samples[-3:]}"
    early = [s for s in samples if s[1] == "" and s[2] != want]
    assert not early, f"flag seen cleared with {early[0][2]} of {want} flows: {samples}"
    log = log_since(node, log_from)
    assert "flow-restore-wait cleared (restored)" in log, log[-3000:]
    wait_for(lambda: ucast_solicit(node) == default, CALM + 10,
             "kbr0's neighbour probes back to the default after the restore")
    print(f"ovs-vswitchd of {node.name} restarted with flow-restore-wait: cleared by the agent "
          f"{cleared[0]:.2f}s after it was up ({len(samples)} samples, flows {want}); first reply "
          f"{first - t_up:.2f}s after")
    assert first - t_up <= 5


def test_without_an_agent_the_guard_clears_the_flag_within_its_bound(lab):
    node = lab.nodes[0]
    ovs = OvsDaemons(node.rundir, netns=node.ns)
    src, dst = pod_of(lab, "node-2"), pod_of(lab, "node-1")
    agents.stop(node)
    try:
        bound = 4
        other = lab.nodes[1]
        underlay = f"ping -c1 -W1 {node.ip}"   # node-1's address lives on br-phy, another OVS bridge
        t_up = restart_vswitchd_with_hook(ovs, "--guard", "background", "--seconds", str(bound))
        time.sleep(1)   # no agent: nobody restores; the flag must still be there
        assert flag(ovs)[0] == "true"
        held = ns(other.ns, *underlay.split()).returncode != 0
        wait_for(lambda: flag(ovs) == ("", ""), bound + 10, "the guard to clear flow-restore-wait")
        took = time.time() - t_up
        wait_for(lambda: ns(other.ns, *underlay.split()).returncode == 0, 20, "node-1's underlay address")
        back = time.time() - t_up
        print(f"no agent: the guard cleared flow-restore-wait {took:.1f}s after ovs-vswitchd started "
              f"(bound {bound}s, counted from the hook); the underlay bridge br-phy "
              f"{'waited with it' if held else 'forwarded meanwhile'}, node-1's address answered {back:.1f}s "
              f"after the start")
        assert took <= bound + 3 and back <= bound + 10
    finally:
        pid, since = agents.start(lab, node)
        agents.wait_ready(node, pid, since)
    wait_ping(src["ns"], dst["ip"], timeout=60)
