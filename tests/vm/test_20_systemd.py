"""ovs-mesh.service under real systemd: its type and watchdog, the agent killed under traffic, and
what an Open vSwitch restart or reload costs the pods."""
from __future__ import annotations

import re
import subprocess

from tests.helpers import wait_for
from tests.vm.vmlab import OVS_MESH, TIMES, timed

# What a sandboxing option that blocks the agent looks like in its journal.
SANDBOX_ERRORS = re.compile(r"Permission denied|Operation not permitted|Read-only file system|EPERM|EACCES|"
                            r"Traceback|Failed to set up|status=2[0-9][0-9]/", re.I)


def test_3_systemd(vm_lab):
    lab = vm_lab
    for node in lab.nodes:
        assert lab.ssh(node, "systemctl is-active ovs-mesh").stdout.strip() == "active"
    show = lab.unit_show("node-1")
    assert show["Type"] == "notify" and show["NotifyAccess"] == "main", show
    assert show["WatchdogUSec"] not in ("0", "infinity", ""), show
    a, b = lab.pods("node-1"), lab.pods("node-2")
    try:
        # SIGKILL the agent under a 0.1 s ping between pods on different VMs: nothing lost, systemd restarts it.
        # First the path to the fresh pod must work (run 3 lost pings 1-154 before the kill: the pod was new).
        probe = f"ip netns exec {a['ns']} ping -c1 -W2 {b['ip']}"
        wait_for(lambda: lab.ssh("node-1", probe, check=False).returncode == 0,
                 timeout=300, interval=2, what=f"pod {a['ip']} -> {b['ip']} to answer before the kill")
        ping = subprocess.Popen(["ssh", "-F", lab.ssh_config, "-o", "BatchMode=yes", "node-1", "sudo", "ip", "netns",
                                 "exec", a["ns"], "ping", "-i", "0.1", "-c", "200", "-W", "2", b["ip"]],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        first = ping.stdout.readline()  # ping's header: it runs (ssh login is slow under emulation)
        assert first.startswith("PING"), first
        with timed("3. systemctl kill -s KILL ovs-mesh -> active again"):
            lab.ssh("node-1", "systemctl kill -s KILL ovs-mesh")
            wait_for(lambda: (lambda s: s["MainPID"] not in ("0", show["MainPID"]) and s["ActiveState"] == "active"
                              and s["SubState"] == "running")(lab.unit_show("node-1")),
                     timeout=300, interval=1, what="systemd to restart ovs-mesh")
        after = lab.unit_show("node-1")
        assert int(after["NRestarts"]) > int(show["NRestarts"]), (show, after)
        out = first + ping.communicate(timeout=300)[0]
        assert " 0% packet loss" in out, out
        assert "200 received" in out, out

        # Restart Open vSwitch (the kernel datapath's flows are gone): how long is pod traffic cut?
        # Then Debian's flow-preserving way for comparison: `systemctl reload openvswitch-switch`
        # (ovs-systemd-reload: saves the flows, restarts both daemons through systemd with
        # flow-restore-wait, restores them). Not `systemctl reload ovs-vswitchd`: its `ovs-ctl restart`
        # forks a new ovs-vswitchd behind systemd's back, systemd sees the old main PID exit and its
        # ExecStop then stops the new one (seen in run 3: ovs-vswitchd down, the kernel's cached flows
        # still answering the ping).
        for how, command in (("systemctl restart openvswitch-switch", "systemctl restart openvswitch-switch"),
                             ("systemctl reload openvswitch-switch (flow-restore-wait)",
                              "systemctl reload openvswitch-switch")):
            before = int(lab.ssh("node-1", "date +%s").stdout)
            with timed(f"3. {how} -> pod traffic back"):
                gap, lost = lab.traffic_gap(a, b, command)
            TIMES[f"3.   pod traffic gap during `{how}`"] = gap
            TIMES[f"3.   pings lost (0.1 s interval) during `{how}`"] = lost
            units = "openvswitch-switch ovsdb-server ovs-vswitchd ovs-mesh"
            wait_for(lambda: lab.ssh("node-1", f"systemctl is-active {units}", check=False).stdout.split()
                     == ["active"] * 4, timeout=300, interval=1, what=f"{units} active after `{how}`")
            # The agent reconciled the restarted switch: a pass after the command, with no problem left.
            lab.wait_converged(before, nodes=["node-1"], plan=False)
        assert lab.ssh("node-2", f"ip netns exec {b['ns']} ping -c3 -i 0.2 -W2 {a['ip']}").returncode == 0
    finally:
        for node in ("node-1", "node-2"):
            lab.ssh(node, f"{OVS_MESH} lab down --name omvp", check=False)
    journal = lab.ssh("node-1", "journalctl -b -u ovs-mesh --no-pager -o cat").stdout
    bad = [line for line in journal.splitlines() if SANDBOX_ERRORS.search(line)]
    assert not bad, "\n".join(bad)
