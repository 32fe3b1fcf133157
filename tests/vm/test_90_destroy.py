"""`vagrant destroy` leaves nothing of the lab in libvirt: no domain, volume, network or QEMU."""
from __future__ import annotations

from tests.vm import libvirt
from tests.vm.vmlab import timed


def test_5_destroy_leaves_nothing(vm_lab):
    with timed("5. vagrant destroy -f"):
        vm_lab.vagrant("destroy", "-f", timeout=600)
    vm_lab.destroyed = True
    assert not [d for d in libvirt.names("domain") if d.startswith(vm_lab.prefix)]
    assert not [v for v in libvirt.names("volume") if v.startswith(vm_lab.prefix)]
    assert libvirt.names("network") - vm_lab.networks_before == set()
    libvirt.wait_gone(vm_lab.prefix, timeout=30)
    assert libvirt.qemu_pids(vm_lab.prefix) == []
