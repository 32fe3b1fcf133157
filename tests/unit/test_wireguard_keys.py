"""This node's WireGuard key: made on first use (0600 in a 0700 directory), kept across runs, only
the public key ever printed; a file that is not a key, or that others can read, is refused (exit 2)."""
import base64
import os
import stat

from ovs_mesh.cli.main import main
from ovs_mesh.encryption.wg_keys import ensure_private_key
from ovs_mesh.encryption.wireguard import public_key
from tests.helpers import base_config, write_config


def cli(tmp_path, capsys, key_path, *extra):
    data = base_config()
    data["local"]["wireguard_key"] = str(key_path)
    path = write_config(str(tmp_path / "config.yaml"), data)
    code = main(["--config", path, "wireguard-key", *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_made_once_kept_and_only_the_public_key_shown(tmp_path, capsys):
    key = tmp_path / "state" / "wireguard" / "private.key"
    code, out, err = cli(tmp_path, capsys, key)
    assert code == 0 and f"made a new private key in {key} (mode 0600)" in err
    private = key.read_text().strip()
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(key.parent).st_mode) == 0o700
    assert out.strip() == public_key(private) and private not in out + err
    assert len(base64.b64decode(out.strip())) == 32
    code, again, err = cli(tmp_path, capsys, key)      # a restart: the same key
    assert code == 0 and again == out and "made" not in err
    assert ensure_private_key(str(key)) == (out.strip(), False)


def test_a_key_others_can_read_is_refused(tmp_path, capsys):
    key = tmp_path / "private.key"
    ensure_private_key(str(key))
    os.chmod(key, 0o644)
    code, out, err = cli(tmp_path, capsys, key)
    assert code == 2 and out == ""
    assert f"local.wireguard_key: {key}: mode 0644: readable or writable by others than its owner" in err
    assert key.read_text().strip() not in err


def test_a_file_that_is_not_a_key_is_refused_and_left(tmp_path, capsys):
    key = tmp_path / "private.key"
    key.write_text("hello\n")
    os.chmod(key, 0o600)
    code, _, err = cli(tmp_path, capsys, key)
    assert code == 2 and f"local.wireguard_key: {key}: not a WireGuard key (base64 of 32 bytes" in err
    assert key.read_text() == "hello\n"


def test_rotate_replaces_the_key_whole_and_shows_only_public_keys(tmp_path, capsys):
    key = tmp_path / "state" / "wireguard" / "private.key"
    _, first, _ = cli(tmp_path, capsys, key)
    old_private = key.read_text().strip()
    code, out, err = cli(tmp_path, capsys, key, "--rotate")
    new_private = key.read_text().strip()
    assert code == 0 and new_private != old_private
    assert out.strip() == public_key(new_private) != first.strip()
    assert f"public key was {first.strip()}" in err
    assert old_private not in out + err and new_private not in out + err
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert os.listdir(key.parent) == ["private.key"]          # no temporary file left beside it
    code, again, _ = cli(tmp_path, capsys, key)               # the new key is kept from now on
    assert again == out


def test_rotate_refuses_a_file_that_is_not_a_key_and_leaves_it(tmp_path, capsys):
    key = tmp_path / "private.key"
    key.write_text("hello\n")
    os.chmod(key, 0o600)
    code, out, err = cli(tmp_path, capsys, key, "--rotate")
    assert code == 2 and out == "" and f"local.wireguard_key: {key}: not a WireGuard key" in err
    assert key.read_text() == "hello\n" and os.listdir(tmp_path).count("private.key") == 1
