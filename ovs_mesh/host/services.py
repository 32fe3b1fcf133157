"""The system services an encryption mode needs, started through systemd (the only I/O here).

cluster.encryption ipsec needs ovs-monitor-ipsec, which Debian's openvswitch-ipsec ships as
`openvswitch-ipsec.service` (it starts strongSwan's charon itself).  ovs-mesh starts it when
IPsec is wanted and records that it did (host state file), so it stops only a service it
started; one an administrator runs stays running.  It is never enabled: the agent starts it
after every boot, only while the config asks for IPsec.

Before stopping the monitor, ovs-mesh waits (bounded) until the monitor has dropped the
connections of the ports that were removed just before: the monitor removes a tunnel's
policies when its port goes, and a monitor stopped before that would leave strongSwan's
policies (and the drop policies of ipsec_skb_mark) behind, which would drop the tunnels'
plaintext packets after encryption was switched off.
"""
from __future__ import annotations

import os
import subprocess
import time

IPSEC_UNIT = "openvswitch-ipsec.service"
MONITOR = "ovs-monitor-ipsec"
SYSTEMD_DIR = "/run/systemd/system"   # present when systemd is PID 1 (sd_booted)
MONITOR_SCRIPT = "/usr/share/openvswitch/scripts/ovs-monitor-ipsec"
XFRM_STAT = "/proc/net/xfrm_stat"     # present when the kernel has XFRM
# `ovs-mesh install-service`'s drop-in: the unit starts the monitor through ovs-mesh's wrapper
# (ovs_mesh/agent/data/ovs-monitor-ipsec), which reads VXLAN/Geneve connection names right.
MONITOR_DROP_IN = "/etc/systemd/system/openvswitch-ipsec.service.d/50-ovs-mesh-ipsec-monitor.conf"
# The line of Open vSwitch 3.1's monitor that reads `<port>-in` for a VXLAN/Geneve connection's
# port (the wrapper's BUGGY, kept equal by a unit test).
GREEDY = r're.match(r"(.*)(-in-\d+|-out-\d+|-\d+).*", tunnel_name[0])'


def systemd_running() -> bool:
    return os.path.isdir(SYSTEMD_DIR)


def monitor_reads_names(script: str = MONITOR_SCRIPT, drop_in: str = MONITOR_DROP_IN) -> bool:
    """Does the monitor the unit starts tell a VXLAN/Geneve connection's port right?  Yes when it
    starts through the wrapper, or when the installed script lacks the greedy pattern."""
    if os.path.exists(drop_in):
        return True
    try:
        with open(script, encoding="utf-8", errors="replace") as f:
            return GREEDY not in f.read()
    except OSError:
        return True   # no monitor: said by its own check


def active(unit: str) -> bool:
    """Running, or on its way (a start the agent queued: starting it again would change nothing)."""
    try:
        state = subprocess.run(["systemctl", "is-active", unit], capture_output=True, text=True, timeout=30)
        return state.stdout.strip() in ("active", "activating", "reloading")
    except (OSError, subprocess.TimeoutExpired):
        return False


def start(unit: str) -> None:
    """Queue the start and return: the monitor restarts strongSwan as it starts, which took 30-40 s
    in emulated VMs, longer than the agent's watchdog allows a pass.  The next pass sees the unit
    running (until then `plan` still lists it)."""
    subprocess.run(["systemctl", "start", "--no-block", unit], check=True, capture_output=True, timeout=60)


def monitor_tunnels(rundir: str) -> int | None:
    """How many tunnels ovs-monitor-ipsec holds (None: it does not answer)."""
    try:
        p = subprocess.run(["ovs-appctl", "-t", MONITOR, "tunnels/show"], capture_output=True, text=True,
                           timeout=10, env={**os.environ, "OVS_RUNDIR": rundir})
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode != 0:
        return None
    return p.stdout.count("Interface name:")


def stop(unit: str, rundir: str, drain_timeout: float = 10.0) -> None:
    """Stop `unit` once the monitor has removed its tunnels (or after `drain_timeout` s); the stop
    itself is queued, not waited for (the agent's watchdog)."""
    if unit == IPSEC_UNIT:
        deadline = time.monotonic() + drain_timeout
        while time.monotonic() < deadline:
            n = monitor_tunnels(rundir)
            if not n:
                break
            time.sleep(0.2)
    subprocess.run(["systemctl", "stop", "--no-block", unit], check=True, capture_output=True, timeout=60)
