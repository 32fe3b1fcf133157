"""The credential files cluster.encryption names: checked before anything uses them.

`topology.config` checks which files the encryption needs (pure); this module
opens them.  Every file must exist and be readable; the secrets (an IPsec
private key, the pre-shared key file) must be owned by root (or the user the
agent runs as) and readable by nobody else (mode 0600 or stricter), so a key
the agent would hand to strongSwan was never readable by an unprivileged user.
A PSK file holds one line of at least MIN_PSK characters.  Problems are
``local.<key>: <path>: reason``; a secret's content is never part of one.
"""
from __future__ import annotations

import calendar
import dataclasses
import os
import re
import stat
import subprocess
import time

from topology.checker import ConfigError
from topology.errors import Problem
from topology.model import Config

MIN_PSK = 16
MAX_FILE = 1 << 20


def stat_file(path: str) -> tuple[os.stat_result | None, str | None]:
    try:
        st = os.stat(path)
    except OSError as e:
        return None, e.strerror or str(e)
    if not stat.S_ISREG(st.st_mode):
        return None, "not a regular file"
    if st.st_size > MAX_FILE:
        return None, f"larger than {MAX_FILE} bytes"
    return st, None


def _read(path: str) -> tuple[bytes | None, str | None]:
    try:
        with open(path, "rb") as f:
            return f.read(MAX_FILE + 1), None
    except OSError as e:
        return None, e.strerror or str(e)


def secret_mode_problem(st: os.stat_result) -> str | None:
    """Why a secret file with this owner and mode is readable by others than root."""
    if st.st_uid not in (0, os.geteuid()):
        return f"owned by uid {st.st_uid}: a secret must be owned by root"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return f"mode {mode:04o}: readable or writable by others than its owner (chmod 600 it)"
    return None


def file_problems(key: str, path: str, secret: bool, marker: bytes | None = None) -> list[Problem]:
    """The problems of one credential file named by local.<key>."""
    st, why = stat_file(path)
    if st is None:
        return [Problem(f"local.{key}", path, why or "unreadable")]
    if secret and secret_mode_problem(st):
        return [Problem(f"local.{key}", path, secret_mode_problem(st) or "")]
    data, why = _read(path)
    if data is None:
        return [Problem(f"local.{key}", path, why or "unreadable")]
    if marker is not None and marker not in data:
        return [Problem(f"local.{key}", path, f"not PEM: no line with {marker.decode()}")]
    return []


def read_psk(path: str) -> str:
    """The pre-shared key in `path` (its one line, stripped); call after `credential_problems`."""
    with open(path, "rb") as f:
        return f.read(MAX_FILE).decode().strip()


def psk_problems(path: str) -> list[Problem]:
    problems = file_problems("psk_file", path, secret=True)
    if problems:
        return problems
    data, _ = _read(path)
    assert data is not None
    try:
        lines = data.decode("ascii").strip().splitlines()
    except UnicodeDecodeError:
        return [Problem("local.psk_file", path, "not ASCII")]
    if len(lines) != 1:
        return [Problem("local.psk_file", path, f"must hold one line (the key), it has {len(lines)}")]
    key = lines[0].strip()
    if len(key) < MIN_PSK:
        return [Problem("local.psk_file", path, f"the key is too short (at least {MIN_PSK} characters)")]
    if any(ch.isspace() or not ch.isprintable() or ch == '"' for ch in key):
        return [Problem("local.psk_file", path, "the key may hold printable characters only, "
                                                "no spaces or double quotes")]
    return []


def certificate_facts(path: str) -> tuple[str | None, list[str], float | None, bool] | None:
    """(CN, DNS subjectAltNames, notAfter as Unix time, whether ovs-monitor-ipsec finds the CN) of a
    PEM certificate, read with the openssl command; None when openssl is missing or cannot read it
    (then only the file checks hold).  The monitor takes the CN with `CN=(.+?),` from the RFC 2253
    subject: a subject of the CN alone is not read (the monitor then configures no tunnel)."""
    try:
        p = subprocess.run(["openssl", "x509", "-noout", "-subject", "-enddate", "-ext", "subjectAltName",
                            "-nameopt", "RFC2253", "-in", path], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode != 0:
        return None
    cn = re.search(r"^subject=.*?\bCN=([^,\n]+)", p.stdout, re.M)
    end = re.search(r"^notAfter=(.+)$", p.stdout, re.M)
    expires = None
    if end:
        try:
            expires = calendar.timegm(time.strptime(end.group(1).strip(), "%b %d %H:%M:%S %Y GMT"))
        except ValueError:
            expires = None
    monitor_reads = bool(re.search(r"^subject=.*?CN=(.+?),", p.stdout, re.M))
    return cn.group(1) if cn else None, re.findall(r"DNS:([^,\s]+)", p.stdout), expires, monitor_reads


def identity_problems(path: str, node: str, now: float) -> list[Problem]:
    """This node's certificate must name it (peers accept it as remote_name = its node name: CN and
    a DNS subjectAltName, which strongSwan matches) and must not have expired."""
    facts = certificate_facts(path)
    if facts is None:
        return []
    cn, dns, expires, monitor_reads = facts
    out = []
    if cn == node and not monitor_reads:
        out.append(Problem("local.certificate", path, "its subject is the CN alone: ovs-monitor-ipsec needs "
                                                      f"another attribute in it (e.g. /O=my cluster/CN={node})"))
    if cn != node:
        out.append(Problem("local.certificate", path, f"its CN is {cn or 'missing'}, not this node's name {node} "
                                                      "(peers accept a certificate whose CN is the node name)"))
    elif node not in dns:
        out.append(Problem("local.certificate", path, f"no DNS subjectAltName {node} (strongSwan matches the "
                                                      "node name against it)"))
    if expires is not None and expires <= now:
        out.append(Problem("local.certificate", path, "expired at "
                           + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expires))
                           + ": make a new one with the same CA"))
    return out


def credential_problems(config: Config) -> list[Problem]:
    """Every problem of the files this node's encryption reads (none without encryption).
    The WireGuard private key is not checked here: ovs-mesh makes it (ovs_mesh.crypt.wireguard)."""
    c, l = config.cluster, config.local
    if c.encryption != "ipsec":
        return []
    if c.ipsec_auth == "psk":
        return psk_problems(l.psk_file) if l.psk_file else []
    out: list[Problem] = []
    for key, secret, marker in (("certificate", False, b"-----BEGIN CERTIFICATE-----"),
                                ("private_key", True, b"PRIVATE KEY-----"),
                                ("ca_cert", False, b"-----BEGIN CERTIFICATE-----")):
        path = getattr(l, key)
        if path:
            out += file_problems(key, path, secret, marker)
    if l.certificate and not out:
        out += identity_problems(l.certificate, l.node, time.time())
    return out


def credentials_key(config: Config, now: float) -> tuple:
    """What `with_credentials(config)` depends on: the local settings, the encryption settings,
    each credential file's identity and metadata, and the hour (a certificate expires)."""
    c, l = config.cluster, config.local
    if c.encryption != "ipsec":
        return (l, c.encryption)
    paths = [l.psk_file] if c.ipsec_auth == "psk" else [l.certificate, l.private_key, l.ca_cert]
    files = []
    for path in paths:
        try:
            st = os.stat(path) if path else None
        except OSError:
            st = None
        files.append((path, None if st is None else (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                                                     st.st_mode, st.st_uid)))
    return (l, c.encryption, c.ipsec_auth, tuple(files), int(now // 3600))


def with_credentials(config: Config) -> Config:
    """`config` once its credential files pass (ConfigError otherwise), with the PSK read
    into `local.psk` (kept out of every repr, log and plan)."""
    problems = credential_problems(config)
    if problems:
        raise ConfigError(problems)
    l = config.local
    if config.cluster.encryption == "ipsec" and config.cluster.ipsec_auth == "psk" and l.psk_file:
        return dataclasses.replace(config, local=dataclasses.replace(l, psk=read_psk(l.psk_file)))
    return config
