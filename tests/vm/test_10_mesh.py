"""The Vagrant lab boots for real: Debian 12 VMs, the kernel datapath, ovs-mesh.service under
systemd. Every module of tests/vm shares one `vagrant up` (conftest.vm_lab); they run in file-name
order, and each leaves the VMs as it found them: VXLAN, flow mode, IPv4, no encryption, every unit
active, the agents converged.
"""
from __future__ import annotations

from tests.vm.vmlab import timed

VPORT = {"vxlan": "vxlan_sys_4789", "gre": "gre_sys", "geneve": "genev_sys_6081"}


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
    """Another tunnel type the way an operator changes it: edit the config on every node; the
    agents follow (no re-provisioning)."""
    try:
        for tunnel in ("gre", "geneve"):
            with timed(f"2. cluster.tunnel: {tunnel} in the config -> every agent converged"):
                vm_lab.wait_converged(vm_lab.set_config({"cluster.tunnel": tunnel}))
            with timed(f"2. check.sh ({tunnel})"):
                vm_lab.check()
            assert_kernel_vport(vm_lab, tunnel)
    finally:
        with timed("2. cluster.tunnel: vxlan again -> every agent converged"):
            vm_lab.wait_converged(vm_lab.set_config({"cluster.tunnel": "vxlan"}))
    assert_kernel_vport(vm_lab, "vxlan")
