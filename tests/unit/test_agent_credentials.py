"""The agent's inventory hands the pass a config whose credential files are checked and whose PSK
is read (the agent's sources do not, unlike `ovs-mesh apply`): switching a running agent to a PSK
works, a bad file keeps the last good config, and the files are read again only when they change."""
import dataclasses
import os

import pytest

from ovs_mesh.agent.session import Inventory, SayOnce
from ovs_mesh.config import secrets
from tests.helpers import base_config
from topology.config import parse_config
from topology.errors import InputError

pytestmark = pytest.mark.unit


class Source:
    def __init__(self, config):
        self.cfg = config

    def config(self):
        return self.cfg


def psk_config(path):
    data = base_config(3, encryption="ipsec", ipsec_auth="psk")
    data["local"].update(datapath="system", psk_file=str(path))
    c = parse_config(data, require_local=False)
    return dataclasses.replace(c, local=dataclasses.replace(c.local, datapath="dummy"))


def write_psk(path, key, mode=0o600):
    path.write_text(key + "\n")
    os.chmod(path, mode)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))   # a rewrite within one tick


def test_the_psk_is_read_for_the_pass_and_again_only_when_the_file_changes(tmp_path, monkeypatch):
    psk = tmp_path / "ipsec.psk"
    write_psk(psk, "a" * 24)
    inv = Inventory(Source(psk_config(psk)), lambda *a: None, SayOnce())
    reads = []
    real = secrets.read_psk
    monkeypatch.setattr(secrets, "read_psk", lambda p: reads.append(p) or real(p))
    assert inv.config().local.psk == "a" * 24
    assert inv.config().local.psk == "a" * 24 and len(reads) == 1     # unchanged file: not read again
    write_psk(psk, "b" * 24)
    assert inv.config().local.psk == "b" * 24 and len(reads) == 2


def test_a_bad_psk_file_keeps_the_last_good_config_and_is_refused_without_one(tmp_path):
    psk = tmp_path / "ipsec.psk"
    write_psk(psk, "a" * 24)
    inv = Inventory(Source(psk_config(psk)), lambda *a: None, SayOnce())
    good = inv.config()
    write_psk(psk, "short")
    assert inv.config() is good                                         # logged, the last good kept
    fresh = Inventory(Source(psk_config(psk)), lambda *a: None, SayOnce())
    with pytest.raises(InputError, match="local.psk_file"):
        fresh.config()
    write_psk(psk, "c" * 24, mode=0o644)
    with pytest.raises(InputError, match="mode 0644"):
        fresh.config()


def test_without_ipsec_nothing_is_read(tmp_path):
    data = base_config(3)
    c = parse_config(data, require_local=False)
    inv = Inventory(Source(c), lambda *a: None, SayOnce())
    assert inv.config().local == c.local
