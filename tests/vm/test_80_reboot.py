"""A VM rebooted: ovs-mesh.service comes back by itself and the mesh passes check.sh again."""
from __future__ import annotations

from tests.helpers import wait_for
from tests.vm.vmlab import timed


def test_4_reboot_rejoins(vm_lab):
    with timed("4. vagrant reload node-2"):
        vm_lab.vagrant("reload", "node-2", timeout=1800)
    vm_lab.refresh_ssh()
    with timed("4. node-2: ovs-mesh active after the reboot"):
        wait_for(lambda: vm_lab.ssh("node-2", "systemctl is-active ovs-mesh", check=False).stdout.strip()
                 == "active", timeout=600, interval=2, what="ovs-mesh.service active on node-2 after reboot")
    with timed("4. check.sh after the reboot"):
        vm_lab.check()
