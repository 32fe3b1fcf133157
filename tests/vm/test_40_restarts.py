"""Day-2 operations under traffic, on the kernel datapath: Open vSwitch restarted, upgraded (its
package reinstalled: the postinst restarts it), ovs-vswitchd killed, the agent upgraded and rolled
back, and the agent stopped while Open vSwitch restarts.

A 0.1 s ping and an iperf3 TCP stream run between pods on node-1 and node-2 through every step.
Each step records the longest gap between ping replies, the pings lost and the longest stall of the
TCP stream (0.2 s intervals without a byte) next to the figure before ovs-mesh kept traffic through
restarts (`systemctl restart openvswitch-switch` cost 10.7-18.4 s and 94-151 pings under the old
unit, measured by test_20_systemd before this change). After each step every unit is active, the
agent converged (`ovs-mesh plan`: no changes) and the TCP stream is still the same connection.
Everything happens on node-1 (pod A's node); the module leaves the VMs as it found them.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.helpers import REPO, wait_for
from tests.vm.vmlab import OVS_MESH, TIMES, timed

NODE = "node-1"
VENV = "/opt/ovs-mesh/venv"
UNITS = "openvswitch-switch ovsdb-server ovs-vswitchd ovs-mesh"
# The figures before ovs-mesh kept traffic through restarts: `systemctl restart openvswitch-switch`
# under Requires= (measured by test_20_systemd then; a package upgrade and a crashed ovs-vswitchd
# restart OVS the same way), and a restart of the agent alone, which never touched the flows.
BEFORE = "before: 10.7-18.4 s gap, 94-151 lost"
BEFORE_AGENT = "before: 0 of 200 lost (the agent restarted, flows untouched)"
IPERF_LOG = "/tmp/rs-iperf.log"
# The goal for steps 1-4 (0 pings lost, gaps under 0.5 s, no TCP stall over 1 s) is recorded and
# printed next to the figure before, not asserted: what passes is what the issue calls pass (every
# unit active, the agent converged, the flag cleared within its bound, the TCP stream alive).
GOAL = {"lost": 0, "gap": 0.5, "stall": 1.0}


def _wheel2(tmp: str) -> str:
    """A second ovs-mesh wheel: another version string, and one flow more on obr0 (a drop at
    priority 1 in table 30, under the table's own priority-0 drop): its flows differ."""
    src = os.path.join(tmp, "src2")
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info",
                                                             ".mypy_cache", ".ruff_cache", "build"))
    init = os.path.join(src, "ovs_mesh", "__init__.py")
    with open(init) as f:
        text = f.read()
    with open(init, "w") as f:
        f.write(re.sub(r'__version__ = "([^"]+)"', r'__version__ = "\1+restarts2"', text))
    desired = os.path.join(src, "ovs_mesh", "ovs", "desired.py")
    with open(desired) as f:
        text = f.read()
    old = '        Flow(T_TO_LOCAL, 0, "", "drop"),\n'
    assert old in text, "the second wheel's extra flow has no anchor in ovs/desired.py"
    with open(desired, "w") as f:
        f.write(text.replace(old, old + '        Flow(T_TO_LOCAL, 1, "", "drop"),\n'))
    out = os.path.join(tmp, "wheels2")
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
                        "--no-build-isolation", "-w", out, src], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    (wheel,) = glob.glob(os.path.join(out, "ovs_mesh-*.whl"))
    return wheel


def _scp(lab, path: str, dest: str) -> None:
    p = subprocess.run(["scp", "-q", "-F", lab.ssh_config, "-o", "BatchMode=yes", path, f"{NODE}:{dest}"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr


def _iperf_start(lab, a, b) -> float:
    lab.ssh("node-2", f"ip netns exec {b['ns']} iperf3 -s -D -1 -p 5201 -I /tmp/rs-iperf-server.pid "
                      "--logfile /tmp/rs-iperf-server.log")
    wait_for(lambda: ":5201" in lab.ssh("node-2", f"ip netns exec {b['ns']} ss -Hltn", check=False).stdout,
             30, "the iperf3 server", interval=0.5)
    out = lab.ssh(NODE, f"rm -f {IPERF_LOG}; date +%s.%N; "
                        f"nohup ip netns exec {a['ns']} iperf3 -c {b['ip']} -p 5201 -t 1800 -i 0.2 -b 20M "
                        f"--forceflush >{IPERF_LOG} 2>&1 </dev/null & echo $! >/tmp/rs-iperf.pid").stdout
    start = float(out.split()[0])
    wait_for(lambda: " sec " in lab.ssh(NODE, f"cat {IPERF_LOG}", check=False).stdout, 60,
             "iperf3's first interval", interval=0.5)
    return start


def _iperf_alive(lab) -> None:
    out = lab.ssh(NODE, f"kill -0 $(cat /tmp/rs-iperf.pid) && echo alive; tail -3 {IPERF_LOG}", check=False).stdout
    assert out.startswith("alive") and "error" not in out.lower(), f"the iperf3 stream died:\n{out}"


def _stall(lab, start: float, since: float, until: float) -> float:
    """The longest run of iperf3 intervals without a byte that overlaps [since, until] (VM clock)."""
    out = lab.ssh(NODE, f"cat {IPERF_LOG}").stdout
    longest = run = 0.0
    for m in re.finditer(r"^\[\s*\d+\]\s+(\d+\.\d+)-(\d+\.\d+)\s+sec\s+([\d.]+)\s+(\w?)Bytes", out, re.M):
        t0, t1 = start + float(m.group(1)), start + float(m.group(2))
        if t1 < since or t0 > until:
            continue
        run = run + (t1 - t0) if float(m.group(3)) == 0 else 0.0
        longest = max(longest, run)
    return round(longest, 2)


def _clock(lab) -> float:
    return float(lab.ssh(NODE, "date +%s.%N").stdout)


def _vswitchd(lab) -> str:
    return lab.ssh(NODE, "cat /var/run/openvswitch/ovs-vswitchd.pid", check=False).stdout.strip()


def _evidence(lab, name: str, since: float, ports_before: str) -> None:
    """With OVS_MESH_VM_LOGS set: the step's ping log, journal (agent, OVS, the guard) and
    ovs-vswitchd.log kept there, to tell where a gap went."""
    keep = os.environ.get("OVS_MESH_VM_LOGS")
    if not keep:
        return
    os.makedirs(keep, exist_ok=True)
    out = lab.ssh(NODE, f"journalctl --no-pager -o short-precise --since @{int(since)} -u ovs-mesh -u ovs-vswitchd "
                        f"-u ovsdb-server -u openvswitch-switch -u 'ovs-mesh-flow-restore-guard*'; "
                        f"echo ===== kernel; journalctl -k --no-pager -o short-precise --since @{int(since)}; "
                        f"echo ===== datapath ports after; ovs-dpctl show | grep port; "
                        f"echo ===== ovs-vswitchd.log; tail -n 200 /var/log/openvswitch/ovs-vswitchd.log",
                  check=False).stdout
    with open(os.path.join(keep, "rs-step-" + re.sub(r"[^A-Za-z0-9]+", "-", name)[:40] + ".log"), "w") as f:
        f.write(getattr(lab, "last_ping", "") + "\n===== datapath ports before\n" + ports_before
                + "\n===== journal\n" + out)


def _tunnel_port(ports: str) -> str | None:
    """The datapath port number of the kernel tunnel device (vxlan_sys_4789, gre_sys, ...)."""
    m = re.search(r"port (\d+): \w+_sys", ports)
    return m.group(1) if m else None


def _step(lab, a, b, start, name: str, command: str, goal: bool = True,
          restart: bool = False, before: str = BEFORE) -> tuple[float, int, float]:
    """COMMAND under the ping and the stream; then every unit active, the agent converged, the stream
    alive. Records and returns (longest ping gap, pings lost, longest TCP stall). RESTART: the command
    restarts ovs-vswitchd, and the agent restored the pipeline and cleared flow-restore-wait."""
    since, pid = _clock(lab), _vswitchd(lab)
    ports = lab.ssh(NODE, "ovs-dpctl show | grep port", check=False).stdout
    with timed(f"40. {name}"):
        gap, lost = lab.traffic_gap(a, b, command)
    until = _clock(lab)
    stall = _stall(lab, start, since, until)
    after = lab.ssh(NODE, "ovs-dpctl show | grep port", check=False).stdout
    moved = _tunnel_port(ports) != _tunnel_port(after)
    _evidence(lab, name, since, ports)
    TIMES[f"40.   {name}: longest ping gap s ({before})"] = gap
    TIMES[f"40.   {name}: pings lost (0.1 s interval)"] = lost
    TIMES[f"40.   {name}: longest TCP stall s (0.2 s intervals)"] = stall
    wait_for(lambda: lab.ssh(NODE, f"systemctl is-active {UNITS}", check=False).stdout.split() == ["active"] * 4,
             120, f"{UNITS} active after {name}", interval=1)
    lab.wait_converged(int(since), nodes=[NODE])
    _iperf_alive(lab)
    if restart:
        assert _vswitchd(lab) != pid, f"{name}: ovs-vswitchd was not restarted (pid {pid})"
        log = lab.ssh(NODE, f"journalctl -u ovs-mesh --no-pager -o cat --since @{int(since)}").stdout
        m = re.search(r"flow-restore-wait cleared \(restored\) after ([\d.]+) s", log)
        assert m, f"{name}: the agent did not clear flow-restore-wait:\n{log[-3000:]}"
        TIMES[f"40.   {name}: flow-restore-wait set for s (the agent restored, then cleared it)"] = float(m.group(1))
    met = lost <= GOAL["lost"] and gap < GOAL["gap"] and stall <= GOAL["stall"]
    if goal:
        TIMES[f"40.   {name}: goal met (0 lost, gap < 0.5 s, stall <= 1 s): 1 yes, 0 no"] = float(met)
    where = f"; the tunnel moved from datapath port {_tunnel_port(ports)} to {_tunnel_port(after)}" if moved else ""
    print(f"\n40. {name}: {lost} pings lost, longest gap {gap} s, TCP stall {stall} s"
          f"{'' if not goal else ' (goal met)' if met else ' (goal not met)'}; {before}{where}", flush=True)
    return gap, lost, stall


@pytest.fixture
def pods(vm_lab):
    lab = vm_lab
    a, b = lab.pods(NODE, "rsvm"), lab.pods("node-2", "rsvm")
    try:
        yield a, b
    finally:
        lab.ssh(NODE, "kill -INT $(cat /tmp/rs-iperf.pid) 2>/dev/null; rm -f /tmp/rs-iperf.pid", check=False)
        lab.ssh("node-2", "kill $(cat /tmp/rs-iperf-server.pid) 2>/dev/null; rm -f /tmp/rs-iperf-server.pid",
                check=False)
        for node in (NODE, "node-2"):
            lab.ssh(node, f"{OVS_MESH} lab down --name rsvm", check=False)


def test_6_day2_operations_keep_pod_traffic(vm_lab, pods):
    lab = vm_lab
    a, b = pods
    tmp = tempfile.mkdtemp(prefix="rs-vm-", dir=lab.tmp)
    wheel2 = _wheel2(tmp)
    wheel1 = lab.ssh(NODE, "ls /opt/ovs-mesh/wheels/ovs_mesh-*.whl | tail -n1").stdout.strip()
    debs = [f for f in glob.glob("/var/cache/apt/archives/openvswitch-*_amd64.deb")
            if re.search(r"/openvswitch-(switch|common)_", f)]
    if len(debs) != 2:
        debs = _download_debs(tmp)
    for f in [wheel2, *debs]:
        _scp(lab, f, "/tmp/")
    probe = f"ip netns exec {a['ns']} ping -c1 -W2 {b['ip']}"
    wait_for(lambda: lab.ssh(NODE, probe, check=False).returncode == 0, 300, f"{a['ip']} -> {b['ip']}", interval=2)
    start = _iperf_start(lab, a, b)
    upgraded = False
    try:
        # A tunnel device's datapath port comes back at the lowest free number, so the first restart
        # after the tunnel type changed may move it and cost traffic until the agent's restore (the
        # step says so when it moved); in the whole tier test_20 restarts OVS first, so this one
        # shows a restart in the steady state.
        _step(lab, a, b, start, "1. systemctl restart openvswitch-switch", "systemctl restart openvswitch-switch",
              restart=True)
        deb_args = " ".join("/tmp/" + os.path.basename(d) for d in debs)
        _step(lab, a, b, start, "2. package upgrade (apt-get install --reinstall openvswitch-switch/-common)",
              f"DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --reinstall --allow-downgrades "
              f"-o Dpkg::Options::=--force-confold {deb_args} >/tmp/rs-apt.log 2>&1; echo $? >/tmp/rs-apt.rc",
              restart=True)
        assert lab.ssh(NODE, "cat /tmp/rs-apt.rc").stdout.strip() == "0", lab.ssh(NODE, "cat /tmp/rs-apt.log").stdout
        _step(lab, a, b, start, "3. kill -9 ovs-vswitchd (systemd restarts it)",
              "old=$(cat /var/run/openvswitch/ovs-vswitchd.pid); kill -9 $old; i=0; "
              "until [ \"$(cat /var/run/openvswitch/ovs-vswitchd.pid)\" != \"$old\" ] "
              "&& [ \"$(systemctl is-active ovs-vswitchd)\" = active ] || [ $i -ge 300 ]; do "
              "sleep 0.2; i=$((i+1)); done",
              restart=True)
        w2 = "/tmp/" + os.path.basename(wheel2)
        pip = (f"{VENV}/bin/pip install -q --disable-pip-version-check --no-compile --no-index --no-deps "
               "--force-reinstall")
        with timed("40. 4. pip install of the second wheel (not under the ping)"):
            lab.ssh(NODE, f"{pip} {w2}")
        upgraded = True
        version = lab.ssh(NODE, f"{VENV}/bin/python -c 'import ovs_mesh; print(ovs_mesh.__version__)'").stdout
        assert "+restarts2" in version, version
        _step(lab, a, b, start, "4a. agent upgrade (other flows): systemctl restart ovs-mesh",
              "systemctl restart ovs-mesh", before=BEFORE_AGENT)
        assert "priority=1 actions=drop" in lab.ssh(NODE, "ovs-ofctl -O OpenFlow13 dump-flows obr0 table=30").stdout
        lab.ssh(NODE, f"{pip} {wheel1}")
        upgraded = False
        _step(lab, a, b, start, "4b. agent rollback: systemctl restart ovs-mesh", "systemctl restart ovs-mesh",
              before=BEFORE_AGENT)
        assert "priority=1 actions=drop" not in lab.ssh(NODE, "ovs-ofctl -O OpenFlow13 dump-flows obr0 table=30").stdout
        # 5. No agent: the flag must not stay set. Pods keep the cached flows until the guard clears it
        # (the datapath is then flushed and obr0's tables are empty until the agent is back).
        _step(lab, a, b, start, "5. agent disabled + restart openvswitch-switch (guard clears; agent back)",
              "systemctl disable --now ovs-mesh 2>/dev/null; systemctl restart openvswitch-switch; "
              # the bound runs from the hook's mark (the Unix second it set the flag)
              "mark=$(ovs-vsctl --if-exists get Open_vSwitch . external_ids:ovs-mesh-flow-restore | tr -d '\"'); "
              "i=0; while [ -n \"$(ovs-vsctl --if-exists get Open_vSwitch . other_config:flow-restore-wait)\" ] "
              "&& [ $i -lt 300 ]; do sleep 0.2; i=$((i+1)); done; "
              "echo \"$(date +%s.%N) ${mark:-none}\" | awk '{print ($2 == \"none\") ? \"none\" : $1-$2}' "
              ">/tmp/rs-flag-seconds; "
              "systemctl enable --now ovs-mesh 2>/dev/null", goal=False)
        out = lab.ssh(NODE, "cat /tmp/rs-flag-seconds").stdout.strip()
        assert out != "none", "the start hook did not set flow-restore-wait with its mark"
        flag = float(out)
        TIMES["40.   5. flow-restore-wait set without an agent for s (bound 30)"] = round(flag, 1)
        # The guard fires 30 s after it is armed (just after the mark, a whole second), within 1 s, and
        # clears with two ovs-vsctl calls: 2-4 s more under emulation (about 33 s from the mark in a run).
        assert flag <= 35, f"flow-restore-wait stayed set {flag} s without an agent (bound 30 s + the guard's latency)"
        journal = lab.ssh(NODE, "journalctl -b --no-pager -o cat -u ovs-mesh-flow-restore-guard.service "
                                "| tail -n 50").stdout
        assert "cleared flow-restore-wait" in journal, journal[-3000:]
    finally:
        lab.ssh(NODE, "systemctl enable --now ovs-mesh", check=False)
        if upgraded:
            lab.ssh(NODE, f"{VENV}/bin/pip install -q --no-index --no-deps --force-reinstall {wheel1} && "
                          "systemctl restart ovs-mesh", check=False)
        lab.wait_converged(nodes=[NODE])


def _download_debs(tmp: str) -> list[str]:
    """openvswitch-switch and -common of the version the host has, from the host's apt (the VMs
    have no package lists)."""
    out = os.path.join(tmp, "debs")
    os.makedirs(out, exist_ok=True)
    p = subprocess.run(["apt-get", "download", "openvswitch-switch", "openvswitch-common"], cwd=out,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return sorted(glob.glob(os.path.join(out, "*.deb")))
