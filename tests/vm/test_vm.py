"""The Vagrant lab boots for real — Debian 12 VMs, the kernel datapath, ovs-mesh.service
under systemd. The steps share one `vagrant up` (conftest.vm_lab) and run in this order.
"""
from __future__ import annotations

import json
import re
import subprocess

from tests.helpers import wait_for
from tests.vm import libvirt
from tests.vm.vmlab import TIMES, timed

OVS_MESH = "/opt/ovs-mesh/venv/bin/ovs-mesh --config /etc/ovs-mesh/config.yaml"
VPORT = {"vxlan": "vxlan_sys_4789", "gre": "gre_sys", "geneve": "genev_sys_6081"}
# What a sandboxing option that blocks the agent looks like in its journal.
SANDBOX_ERRORS = re.compile(r"Permission denied|Operation not permitted|Read-only file system|EPERM|EACCES|"
                            r"Traceback|Failed to set up|status=2[0-9][0-9]/", re.I)


def assert_kernel_vport(lab, tunnel):
    for node in lab.nodes:
        out = lab.ssh(node, "ovs-dpctl show").stdout
        assert VPORT[tunnel] in out, f"{node}: no {VPORT[tunnel]} in ovs-dpctl show:\n{out}"
        assert lab.ssh(node, "ovs-vsctl get bridge obr0 datapath_type").stdout.strip() in ('""', "system")


def test_1_up_check_kernel_datapath(vm_lab):
    with timed("1. check.sh (vxlan)"):
        out = vm_lab.check().stdout
    assert "node-3" in out
    assert_kernel_vport(vm_lab, "vxlan")
    assert vm_lab.ssh("node-1", "lsmod").stdout.count("openvswitch") >= 1


def test_2_every_tunnel_type_on_the_kernel_datapath(vm_lab):
    for tunnel in ("gre", "geneve"):
        with timed(f"2. vagrant provision ({tunnel}; the 3 VMs at once)"):
            vm_lab.provision_all(OVS_MESH_TUNNEL=tunnel)
        vm_lab.env["OVS_MESH_TUNNEL"] = tunnel  # later steps keep this setting
        with timed(f"2. check.sh ({tunnel})"):
            vm_lab.check()
        assert_kernel_vport(vm_lab, tunnel)


def _show(lab, node):
    out = lab.ssh(node, "systemctl show ovs-mesh -p Type -p WatchdogUSec -p NotifyAccess -p MainPID "
                        "-p NRestarts -p ActiveState -p SubState").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _pods(lab, node):
    out = lab.ssh(node, f"{OVS_MESH} lab down --name omvp >/dev/null 2>&1; {OVS_MESH} lab pods --name omvp").stdout
    return json.loads(out)["pods"][0]


def test_3_systemd(vm_lab):
    lab = vm_lab
    for node in lab.nodes:
        assert lab.ssh(node, "systemctl is-active ovs-mesh").stdout.strip() == "active"
    show = _show(lab, "node-1")
    assert show["Type"] == "notify" and show["NotifyAccess"] == "main", show
    assert show["WatchdogUSec"] not in ("0", "infinity", ""), show
    a, b = _pods(lab, "node-1"), _pods(lab, "node-2")
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
                              and s["SubState"] == "running")(_show(lab, "node-1")),
                     timeout=300, interval=1, what="systemd to restart ovs-mesh")
        after = _show(lab, "node-1")
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
                gap, lost = _traffic_gap(lab, a, b, command)
            TIMES[f"3.   pod traffic gap during `{how}`"] = gap
            TIMES[f"3.   pings lost (0.1 s interval) during `{how}`"] = lost
            units = "openvswitch-switch ovsdb-server ovs-vswitchd ovs-mesh"
            wait_for(lambda: lab.ssh("node-1", f"systemctl is-active {units}", check=False).stdout.split()
                     == ["active"] * 4, timeout=300, interval=1, what=f"{units} active after `{how}`")
            # The agent reconciled the restarted switch: a pass after the command, with no problem left.
            wait_for(lambda: _reconciled_since(lab, "node-1", before), timeout=300, interval=2,
                     what=f"an ovs-mesh pass without problems after `{how}`")
        assert lab.ssh("node-2", f"ip netns exec {b['ns']} ping -c3 -i 0.2 -W2 {a['ip']}").returncode == 0
    finally:
        for node in ("node-1", "node-2"):
            lab.ssh(node, f"{OVS_MESH} lab down --name omvp", check=False)
    journal = lab.ssh("node-1", "journalctl -b -u ovs-mesh --no-pager -o cat").stdout
    bad = [line for line in journal.splitlines() if SANDBOX_ERRORS.search(line)]
    assert not bad, "\n".join(bad)


def _reconciled_since(lab, node, since: int) -> bool:
    out = lab.ssh(node, "cat /var/run/openvswitch/ovs-mesh.status.json", check=False).stdout
    try:
        status = json.loads(out)
    except ValueError:
        return False
    return status.get("time", 0) >= since and status.get("problems") == []


def _traffic_gap(lab, a, b, command):
    """Run COMMAND on node-1 under a 0.1 s ping from pod A to pod B (another VM) and wait (at most
    180 s) until B answers again. Returns (longest gap between two replies in s, pings lost)."""
    out = lab.ssh("node-1", f"""
        log=$(mktemp); ip netns exec {a['ns']} ping -D -n -i 0.1 -W 1 {b['ip']} >"$log" 2>&1 & p=$!
        deadline=$(( $(date +%s) + 60 ))   # traffic flows before the command: 10 replies
        until [ "$(grep -c 'bytes from' "$log")" -ge 10 ] || [ "$(date +%s)" -gt "$deadline" ]; do sleep 0.2; done
        {command}
        echo "command-done $(date +%s.%N)"
        # Back = 20 more replies after the command returned (while it runs, the old flows may still answer).
        after=$(grep -c 'bytes from' "$log")
        deadline=$(( $(date +%s) + 180 ))
        until [ "$(grep -c 'bytes from' "$log")" -gt "$((after + 20))" ] || [ "$(date +%s)" -gt "$deadline" ]; do
          sleep 0.5
        done
        kill -INT $p; wait $p; cat "$log"; rm -f "$log"
    """, timeout=400, check=False).stdout
    stamps = [float(m) for m in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", out, re.M)]
    done = re.search(r"^command-done (\d+\.\d+)", out, re.M)
    sent = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert done and sent and stamps, f"`{command}` under ping:\n{out[-3000:]}"
    assert stamps[-1] > float(done.group(1)), f"no pod traffic after `{command}` within 180 s:\n{out[-3000:]}"
    gap = max((b2 - b1 for b1, b2 in zip(stamps, stamps[1:])), default=0.0)
    return round(gap, 2), int(sent.group(1)) - int(sent.group(2))


def test_4_reboot_rejoins(vm_lab):
    with timed("4. vagrant reload node-2"):
        vm_lab.vagrant("reload", "node-2", timeout=1800)
    vm_lab.refresh_ssh()
    with timed("4. node-2: ovs-mesh active after the reboot"):
        wait_for(lambda: vm_lab.ssh("node-2", "systemctl is-active ovs-mesh", check=False).stdout.strip()
                 == "active", timeout=600, interval=2, what="ovs-mesh.service active on node-2 after reboot")
    with timed("4. check.sh after the reboot"):
        vm_lab.check()


def test_5_destroy_leaves_nothing(vm_lab):
    with timed("5. vagrant destroy -f"):
        vm_lab.vagrant("destroy", "-f", timeout=600)
    vm_lab.destroyed = True
    assert not [d for d in libvirt.names("domain") if d.startswith(vm_lab.prefix)]
    assert not [v for v in libvirt.names("volume") if v.startswith(vm_lab.prefix)]
    assert libvirt.names("network") - vm_lab.networks_before == set()
    libvirt.wait_gone(vm_lab.prefix, timeout=30)
    assert libvirt.qemu_pids(vm_lab.prefix) == []
