"""`lab up --encryption` is refused: the namespace lab's userspace datapath cannot encrypt (the
kernel's XFRM and WireGuard never see its packets).  Nothing is built."""
import os

import pytest

from tests.helpers import run_cli


@pytest.mark.parametrize("mode, what", [("ipsec", "IPsec (XFRM)"), ("wireguard", "WireGuard")])
def test_lab_up_with_encryption_is_refused(mode, what, tmp_path):
    name = f"ec{mode[:2]}{os.getpid() % 10000}"
    env = {"OVS_MESH_LAB_DIR": str(tmp_path)}
    p = run_cli("lab", "up", "--name", name, "--encryption", mode, env=env)
    assert p.returncode == 2, p.stderr
    assert f"--encryption {mode}: the namespace lab runs Open vSwitch's userspace datapath (netdev)" in p.stderr
    assert f"{what} acts only on packets of the kernel datapath" in p.stderr
    assert not os.listdir(tmp_path)                   # no lab record, nothing built


def test_lab_up_help_names_the_choice():
    out = run_cli("lab", "up", "--help").stdout
    assert "--encryption {none,ipsec,wireguard}" in out
