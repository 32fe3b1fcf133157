"""The VM tier's one lab: NODES=3 Debian VMs booted by vagrant-libvirt once, shared by every module of
tests/vm and always destroyed at the end, also on failure. The modules run in file-name order
(test_10_mesh, test_20_systemd, ..., test_80_reboot, test_90_destroy); each changes settings the way
an operator does (Lab.set_config edits the agents' config; they follow) and leaves the VMs as it
found them: VXLAN, flow mode, IPv4, no encryption, every unit active, the agents converged.

The box is vagrant/box/build.sh's `ovs-mesh/bookworm` (cached, built from Debian packages); ovs-mesh
reaches the VMs as a wheelhouse built here (`pip --no-index` inside, nothing compiled there). The
libvirt driver is qemu (software emulation) unless OVS_MESH_LIBVIRT_DRIVER says otherwise.
Every step's wall time is recorded and printed at the end of the run.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from tests.conftest import need_root
from tests.helpers import REPO
from tests.vm import libvirt
from tests.vm.vmlab import BOX, LOADS, TIMES, TOOLS, VAGRANT_DIR, Lab, run_logged, timed

# Modules written for the lab that have not passed on the VMs yet (pending/README.md): collected
# only when asked for.
collect_ignore_glob = [] if os.environ.get("OVS_MESH_VM_PENDING") else ["pending/*"]


def pytest_terminal_summary(terminalreporter):
    if TIMES:
        terminalreporter.section("VM tier: wall time per step (s), load average when it ended")
        for name, seconds in TIMES.items():
            terminalreporter.write_line(f"{name:<58} {seconds:>7.1f}   {LOADS.get(name, '')}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed step gets the VMs' state attached: units, journal, datapath, consoles, vagrant's log."""
    outcome = yield
    report = outcome.get_result()
    lab = item.funcargs.get("vm_lab") if hasattr(item, "funcargs") else None
    if report.when == "call" and report.failed and lab is not None and not lab.destroyed:
        report.sections.append(("VM diagnostics", lab.diagnostics()))


def _need_tools():
    need_root()
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing tools (./run installs them): {', '.join(missing)}")
    plugins = subprocess.run(["vagrant", "plugin", "list"], capture_output=True, text=True).stdout
    if "vagrant-libvirt" not in plugins:
        pytest.skip("vagrant-libvirt is not installed (apt-get install vagrant-libvirt)")


def _remove_leftovers(prefix: str) -> None:
    """What a failed `vagrant destroy` may leave: the lab's domains and volumes."""
    for dom in libvirt.names("domain"):
        if dom.startswith(prefix):
            libvirt.virsh("destroy", dom, check=False)
            libvirt.virsh("undefine", dom, "--remove-all-storage", "--nvram", check=False)
    for vol in libvirt.names("volume"):
        if vol.startswith(prefix):
            libvirt.virsh("vol-delete", "--pool", "default", vol, check=False)
    libvirt.wait_gone(prefix)


@pytest.fixture(scope="session")
def vm_lab():
    _need_tools()
    # Not tmp_path_factory: pytest runs in parallel (other worktrees) prune old basetemps under us.
    tmp = tempfile.mkdtemp(prefix="vmt-", dir="/tmp")
    start = time.monotonic()
    try:
        yield from _lab(tmp)
    finally:
        keep = os.environ.get("OVS_MESH_VM_LOGS")  # a directory: vagrant's log and the VMs' consoles kept there
        if keep:
            shutil.copytree(tmp, keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("wheels", "dot", "cm-*"))
        shutil.rmtree(tmp, ignore_errors=True)
        TIMES["VM tier total"] = round(time.monotonic() - start, 1)


def _lab(tmp):
    with libvirt.Libvirt(tmp, hide_kvm=os.environ.get("OVS_MESH_LIBVIRT_DRIVER", "qemu") == "qemu"):
        networks_before = libvirt.names("network")
        prefix = "vmt" + secrets.token_hex(3) + "_"
        with timed("box: vagrant/box/build.sh (cached unless the recipe changed)"):
            p = subprocess.run([os.path.join(VAGRANT_DIR, "box", "build.sh")], capture_output=True, text=True,
                               timeout=1800)
            assert p.returncode == 0, p.stdout + p.stderr
        wheels = os.path.join(tmp, "wheels")
        with timed("wheelhouse: ovs-mesh + the pinned dependencies (requirements/pins.sh)"):
            # The wheelhouse air-gapped nodes get: exactly the pinned run-time dependencies
            # (requirements/agent.txt), python-ovs with its C parser, and ovs-mesh.
            p = subprocess.run(["bash", "-c", 'source requirements/pins.sh && build_wheels "$1" "$2"', "wheels",
                                wheels, sys.executable], cwd=REPO, capture_output=True, text=True, timeout=900)
            assert p.returncode == 0, p.stdout + p.stderr
        lab = Lab(tmp, prefix, wheels)
        lab.networks_before = networks_before
        try:
            try:
                with timed("1. vagrant up (3 VMs in parallel, provisioned)"):
                    lab.vagrant("up", "--provider", "libvirt", timeout=2700)
                lab.refresh_ssh()
            except BaseException:
                try:
                    lab.refresh_ssh()  # the VMs that did come up can still tell why
                except AssertionError:
                    pass
                print(lab.diagnostics(), file=sys.stderr)
                raise
            yield lab
        finally:
            lab.close_ssh()
            if not lab.destroyed:
                try:
                    run_logged(["vagrant", "destroy", "-f"], lab.log, 600, "vagrant destroy", cwd=VAGRANT_DIR,
                               env=lab.env)
                except AssertionError as e:
                    print(e, file=sys.stderr)
            _remove_leftovers(prefix)
            # The box's copy in the storage pool (vagrant-libvirt uploads it once): the next run re-uploads.
            for vol in libvirt.names("volume"):
                if vol.startswith(BOX.replace("/", "-VAGRANTSLASH-") + "_vagrant_box_image_"):
                    libvirt.virsh("vol-delete", "--pool", "default", vol, check=False)
