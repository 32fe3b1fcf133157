"""This node's WireGuard private key: made here on first use, kept, never shown (the only I/O of it).

The key lives in `local.wireguard_key` (default /var/lib/ovs-mesh/wireguard/private.key, under the
unit's StateDirectory, so it survives restarts and reboots).  It is created with O_EXCL at mode
0600 in a 0700 directory, from os.urandom, clamped; an existing file must be a key (base64 of 32
bytes), owned by root (or the user ovs-mesh runs as) and readable by nobody else, else it is
refused as ``local.wireguard_key: PATH: reason`` (exit 2) and left as it is.  Only the public key
ever leaves this module.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import os

from topology.checker import ConfigError
from topology.errors import Problem

from ..config.secrets import secret_mode_problem, stat_file
from .wireguard import new_private_key, public_key


def _problem(path: str, reason: str) -> ConfigError:
    return ConfigError([Problem("local.wireguard_key", path, reason)])


def read_private_key(path: str) -> str | None:
    """The key in `path` (None when there is no file); ConfigError for a file that is not one."""
    if not os.path.lexists(path):
        return None
    st, why = stat_file(path)
    if st is None:
        raise _problem(path, why or "unreadable")
    mode = secret_mode_problem(st)
    if mode:
        raise _problem(path, mode)
    try:
        with open(path, "rb") as f:
            text = f.read(200).decode("ascii").strip()
        raw = base64.b64decode(text, validate=True)
    except (OSError, UnicodeDecodeError, binascii.Error, ValueError):
        raise _problem(path, "not a WireGuard key (base64 of 32 bytes, as `wg genkey` writes)") from None
    if len(raw) != 32:
        raise _problem(path, "not a WireGuard key (base64 of 32 bytes, as `wg genkey` writes)")
    return text


def read_public_key(path: str) -> str | None:
    """The public key of the private key in `path` (None when there is no file)."""
    key = read_private_key(path)
    return None if key is None else public_key(key)


def remove_private_key(path: str) -> None:
    """teardown: the key file goes (a node set up again gets a new key pair)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def ensure_private_key(path: str) -> tuple[str, bool]:
    """(this node's public key, whether the private key was made now)."""
    key = read_private_key(path)
    if key is not None:
        return public_key(key), False
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    key = new_private_key(os.urandom(32))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:   # made meanwhile by another ovs-mesh: take that one
        return ensure_private_key(path)
    try:
        os.write(fd, (key + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return public_key(key), True


def rotate_private_key(path: str) -> tuple[str, str | None]:
    """Replace this node's private key with a new one: (the new public key, the old one or None).
    The old file must be a key (ConfigError otherwise: nothing is replaced).  The new key is written
    beside it (O_EXCL, 0600) and renamed over it, so a reader sees the old key or the new one, never
    a part; the old key is gone once this returns."""
    old = read_private_key(path)
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    key = new_private_key(os.urandom(32))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.new-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            os.write(fd, (key + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return public_key(key), None if old is None else public_key(old)
