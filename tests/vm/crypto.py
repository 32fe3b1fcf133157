"""What the VM tier's encryption modules share (IPsec: test_50_encryption, WireGuard:
test_55_wireguard): the module's pods, config edits under a pod ping, the underlay capture that counts
plaintext tunnel packets, tunnel packets forged from the host on the underlay, the agent killed."""
from __future__ import annotations

import re
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers import wait_for
from tests.vm.test_30_health import METRICS
from tests.vm.vmlab import OVS_MESH, TIMES, ping_result, timed

UNDERLAY = "192.168.56"
PLAINTEXT = "udp port 4789 or udp port 6081 or ip proto 47"
CAPTURE = "/tmp/ec-underlay.pcap"
POD_NAME = "ecp"


def underlay_dev(lab, node: str) -> str:
    return lab.ssh(node, f"ip -o -4 addr show to {UNDERLAY}.0/24 | awk '{{print $2}}'").stdout.split()[0]


def node_ip(node: str) -> str:
    return f"{UNDERLAY}.{10 + int(node.rsplit('-', 1)[1])}"


ESP = "ip proto 50"
WIREGUARD = "udp port 51820"


def capture_start(lab, encrypted: str = ESP) -> None:
    """tcpdump on every VM's underlay: plaintext tunnel packets and the ENCRYPTED ones."""
    lab.on_all(f"rm -f {CAPTURE}; nohup tcpdump -i $(ip -o -4 addr show to {UNDERLAY}.0/24 | awk '{{print $2}}') "
               f"-n -U -w {CAPTURE} '{PLAINTEXT} or {encrypted}' >/dev/null 2>&1 & echo $! > {CAPTURE}.pid")
    for node in lab.nodes:
        wait_for(lambda node=node: lab.ssh(node, f"test -s {CAPTURE}", check=False).returncode == 0,
                 timeout=30, interval=0.5, what=f"{node}: tcpdump on the underlay")


def capture_stop(lab, encrypted: str = ESP) -> tuple[int, int]:
    """(plaintext tunnel packets the VMs sent, ENCRYPTED packets seen) over the capture."""
    plain = esp = 0
    for node in lab.nodes:
        lab.ssh(node, f"kill -INT $(cat {CAPTURE}.pid); while kill -0 $(cat {CAPTURE}.pid) 2>/dev/null; "
                      "do sleep 0.1; done")
        count = f"tcpdump -r {CAPTURE} -n"
        plain += int(lab.ssh(node, f"{count} 'src host {node_ip(node)} and ({PLAINTEXT})' 2>/dev/null | wc -l").stdout)
        esp += int(lab.ssh(node, f"{count} '{encrypted}' 2>/dev/null | wc -l").stdout)
        lab.ssh(node, f"rm -f {CAPTURE} {CAPTURE}.pid")
    return plain, esp


def host_underlay_iface() -> str | None:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show", "to", f"{UNDERLAY}.0/24"], capture_output=True,
                         text=True).stdout.split()
    return out[1] if len(out) > 1 else None


def forged_delivered(lab, pods: dict, subnet2: str, drops_of, tunnel: str = "gre",
                     outer_src: str | None = None) -> tuple[int, int]:
    """From the host on the underlay: 20 plaintext tunnel packets (GRE key 0 with Ethernet inside, as
    OVS's GRE ports send, or VXLAN VNI 0 to udp/4789) with node-2's address (or OUTER_SRC) as outer
    source, to node-1, carrying UDP from node-2's pod subnet to node-1's pod; then one legitimate
    packet from node-2's pod the same way.  Once the legitimate one arrived (sent last), returns
    (forged packets the pod received, drops counted on node-1 meanwhile by DROPS_OF(lab, node))."""
    from scapy.all import IP, UDP, Ether, Raw, conf, sendp  # the host's scapy (test requirements)
    from scapy.layers.l2 import GRE
    from scapy.layers.vxlan import VXLAN

    iface = host_underlay_iface()
    assert iface, f"the host has no address on {UNDERLAY}.0/24: it cannot play the attacker"
    dev = underlay_dev(lab, "node-1")
    mac = lab.ssh("node-1", f"cat /sys/class/net/{dev}/address").stdout.strip()
    pod1, pod2 = pods["node-1"], pods["node-2"]
    pod_mac = lab.ssh("node-1", f"ip netns exec {pod1['ns']} cat /sys/class/net/eth0/address").stdout.strip()
    log = "/tmp/ec-forged.txt"
    lab.ssh("node-1", f"rm -f {log}; nohup ip netns exec {pod1['ns']} tcpdump -i eth0 -n -l -A 'udp port 9999' "
                      f">{log} 2>&1 & echo $! > {log}.pid")
    wait_for(lambda: "listening on" in lab.ssh("node-1", f"cat {log}").stdout, timeout=30, interval=0.5,
             what="tcpdump in node-1's pod")
    drops = drops_of(lab, "node-1")
    inner_src = subnet2.split("/")[0].rsplit(".", 1)[0] + ".77"
    marker = f"ec-forged-{tunnel}".encode()
    inner = (Ether(src="0a:58:00:00:00:77", dst=pod_mac) / IP(src=inner_src, dst=pod1["ip"])
             / UDP(sport=5555, dport=9999) / Raw(marker))
    outer = IP(src=outer_src or node_ip("node-2"), dst=node_ip("node-1"))
    if tunnel == "gre":
        pkt = Ether(dst=mac) / outer / GRE(proto=0x6558, key_present=1, key=0) / inner
    else:
        pkt = Ether(dst=mac) / outer / UDP(sport=40001, dport=4789) / VXLAN(vni=0, flags=0x08) / inner
    conf.verb = 0
    sendp(pkt, iface=iface, count=20, inter=0.01)
    legit = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
             f"s.sendto(b'ec-legit-marker', ('{pod1['ip']}', 9999))")

    def marker_arrived() -> bool:
        lab.ssh("node-2", f"ip netns exec {pod2['ns']} python3 -c {shlex.quote(legit)}")
        return "ec-legit-marker" in lab.ssh("node-1", f"cat {log}").stdout
    wait_for(marker_arrived, timeout=60, interval=1,
             what="the legitimate packet from node-2's pod (sent after the forged ones)")
    got = lab.ssh("node-1", f"kill $(cat {log}.pid); cat {log}; rm -f {log} {log}.pid").stdout
    return got.count(marker.decode()), drops_of(lab, "node-1") - drops


PING_LOG = "/tmp/ec-ping.log"
PING_LOG2 = PING_LOG + "2"   # a second background ping beside the first


def ping_start(lab, a: dict, b: dict, log: str = PING_LOG) -> None:
    """A 0.1 s ping from pod A (on node-1) to pod B, in the background, with reply timestamps
    (LOG: another file for a second ping at the same time)."""
    lab.ssh("node-1", f"rm -f {log}; nohup ip netns exec {a['ns']} ping -D -n -i 0.1 -W 1 {b['ip']} "
                      f">{log} 2>&1 & echo $! > {log}.pid")


def ping_stop(lab, log: str = PING_LOG) -> tuple[float, int]:
    """(longest gap between two replies in s, pings lost) of the background ping."""
    out = lab.ssh("node-1", f"kill -INT $(cat {log}.pid); while kill -0 $(cat {log}.pid) 2>/dev/null; "
                            f"do sleep 0.1; done; cat {log}; rm -f {log} {log}.pid").stdout
    return ping_result(out)


def shown(lab, secret: str) -> bool:
    """Whether SECRET appears in node-1's status, plan, metrics or agent journal."""
    assert secret
    out = lab.ssh("node-1", f"{OVS_MESH} status --json; {OVS_MESH} plan --json; {METRICS}; "
                            "journalctl -u ovs-mesh --no-pager -n 1000", check=False)
    return secret in out.stdout + out.stderr


def switch_under_ping(lab, pods: dict, edits: dict, what: str) -> tuple[float, int]:
    """EDITS to every agent's config under a 0.1 s pod ping node-1 -> node-2, until every agent
    converged and pod traffic flows: (longest gap s, pings lost)."""
    ping_start(lab, pods["node-1"], pods["node-2"])
    set_and_converge(lab, edits, what)
    lab.ssh("node-1", f"ip netns exec {pods['node-1']['ns']} ping -c 3 -W 2 {pods['node-2']['ip']}")
    return ping_stop(lab)


def stop_background(lab) -> None:
    """What a failed step may have left running: the background ping and tcpdumps, by their pids."""
    pidfiles = f"{PING_LOG}.pid {PING_LOG2}.pid {CAPTURE}.pid /tmp/ec-forged.txt.pid /tmp/ec-exchange-*.txt.pid"
    lab.on_all(f"for f in {pidfiles}; do [ -f $f ] && kill -INT $(cat $f) 2>/dev/null; rm -f $f; done; true",
               check=False)


def set_and_converge(lab, edits: dict, what: str) -> None:
    with timed(f"5. {what} -> every agent converged"):
        lab.wait_converged(lab.set_config(edits))


def agent_killed(lab, pods: dict, what: str, crypto_state) -> None:
    """`systemctl kill -s KILL ovs-mesh` on node-1 under a 0.1 s pod ping: no ping lost, and once
    systemd restarted the agent and it has nothing to change, CRYPTO_STATE() (the SAs, the device)
    is what it was."""
    before = crypto_state()
    with timed(f"5. systemctl kill -s KILL ovs-mesh under a ping ({what})"):
        gap, lost = lab.traffic_gap(pods["node-1"], pods["node-2"], "systemctl kill -s KILL ovs-mesh")
    TIMES[f"5.   pings lost, agent killed, {what}"] = lost
    TIMES[f"5.   longest gap (s), agent killed, {what}"] = gap
    assert lost == 0
    wait_for(lambda: lab.ssh("node-1", "systemctl is-active ovs-mesh", check=False).stdout.strip() == "active",
             timeout=120, interval=1, what="systemd to restart the agent")
    wait_for(lambda: "no changes" in lab.ssh("node-1", f"{OVS_MESH} plan", check=False).stdout,
             timeout=120, interval=2, what="node-1: nothing to change after the agent's restart")
    assert crypto_state() == before, f"the agent's restart replaced {what}'s state"


def check_under_capture(lab, pods: dict, what: str, encrypted: str) -> tuple[int, int]:
    """check.sh with the underlay captured: (plaintext tunnel packets sent, ENCRYPTED packets).
    check.sh's pods draw their addresses from the node's one host-local pool, beside the module's."""
    capture_start(lab, encrypted)
    try:
        with timed(f"5. check.sh ({what})"):
            lab.check()
    finally:
        plain, seen = capture_stop(lab, encrypted)
    return plain, seen


@pytest.fixture
def pods(vm_lab):
    made = {}
    try:
        for node in vm_lab.nodes:
            made[node] = vm_lab.pods(node, POD_NAME)
        yield made
    finally:
        vm_lab.on_all(f"{OVS_MESH} lab down --name {POD_NAME} >/dev/null 2>&1", check=False)


def warm_up_pods(lab, pods: dict, what: str, timeout: float = 120) -> None:
    """Until every pod answers a ping from every other VM's pod."""
    for a in lab.nodes:
        for b in lab.nodes:
            if a != b:
                wait_for(lambda a=a, b=b: lab.ssh(a, f"ip netns exec {pods[a]['ns']} ping -c1 -W2 {pods[b]['ip']}",
                                                  check=False).returncode == 0,
                         timeout=timeout, interval=1, what=f"pod on {a} -> pod on {b} through {what}")


def exchanged(lab, pods: dict, a: str, b: str) -> tuple[int, int]:
    """10 pings each way between the pods on A and B, each pod counting what arrives from the other:
    (replies either side received, packets either pod got from the other)."""
    logs = {x: f"/tmp/ec-exchange-{a}-{b}.txt" for x in (a, b)}
    for x, y in ((a, b), (b, a)):
        lab.ssh(x, f"rm -f {logs[x]}; nohup ip netns exec {pods[x]['ns']} tcpdump -i eth0 -n -l "
                   f"'src host {pods[y]['ip']}' >{logs[x]} 2>&1 & echo $! > {logs[x]}.pid")
    for x in (a, b):
        wait_for(lambda x=x: "listening on" in lab.ssh(x, f"cat {logs[x]}").stdout, timeout=30, interval=0.5,
                 what=f"tcpdump in {x}'s pod")
    replies = seen = 0
    for x, y in ((a, b), (b, a)):
        out = lab.ssh(x, f"ip netns exec {pods[x]['ns']} ping -n -c 10 -i 0.2 -W 1 {pods[y]['ip']}",
                      check=False).stdout
        replies += int(re.search(r"(\d+) received", out).group(1))
    for x, y in ((a, b), (b, a)):
        got = lab.ssh(x, f"kill -INT $(cat {logs[x]}.pid); while kill -0 $(cat {logs[x]}.pid) 2>/dev/null; "
                         f"do sleep 0.1; done; cat {logs[x]}; rm -f {logs[x]} {logs[x]}.pid").stdout
        seen += sum(1 for line in got.splitlines() if f"{pods[y]['ip']} >" in line)
    return replies, seen


def isolated(lab, pods: dict, node: str, what: str) -> None:
    """NODE's pod and every other VM's pod exchange not one packet (each pair at once): the counts
    are recorded under WHAT."""
    others = [n for n in lab.nodes if n != node]
    with ThreadPoolExecutor(len(others)) as pool:
        results = dict(zip(others, pool.map(lambda peer: exchanged(lab, pods, node, peer), others)))
    for peer, (_replies, seen) in results.items():
        TIMES[f"{what}: pod packets between {node} and {peer} (of 40)"] = seen
    assert all(r == (0, 0) for r in results.values()), results
