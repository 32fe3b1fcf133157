"""The locks in requirements/ match setup.cfg, and this virtualenv matches the lock.

setup.cfg keeps compatible ranges for people who install ovs-mesh into their own environments;
./run installs exactly requirements/test.txt (hashed pins), and the wheelhouse exactly
requirements/agent.txt.  A dependency added to or narrowed in setup.cfg without `./run lock`, a
lock edited by hand without a hash, or a virtualenv that drifted from the lock fails here.
"""
from __future__ import annotations

import configparser
import os
import re
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.helpers import REPO

REQS = os.path.join(REPO, "requirements")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock(name: str) -> dict[str, tuple[Version, list[str]]]:
    """{package: (version, hashes)} of requirements/NAME."""
    out: dict[str, tuple[Version, list[str]]] = {}
    current = None
    with open(os.path.join(REQS, name)) as f:
        for line in f:
            if re.match(r"^[A-Za-z0-9]", line):
                req = line.split("\\")[0].strip()
                pkg, _, ver = req.partition("==")
                assert ver, f"{name}: {req}: not pinned with =="
                current = _norm(pkg)
                out[current] = (Version(ver), [])
            elif current and line.strip().startswith("--hash=sha256:"):
                out[current][1].append(line.strip().split(":", 1)[1].rstrip(" \\"))
    return out


def _setup_cfg() -> tuple[list[Requirement], list[Requirement]]:
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, "setup.cfg"))

    def reqs(text):
        return [Requirement(x) for x in text.strip().splitlines() if x.strip()]
    return reqs(cfg["options"]["install_requires"]), reqs(cfg["options.extras_require"]["test"])


@pytest.mark.parametrize("lock", ["agent.txt", "test.txt", "tools.txt"])
def test_every_pin_is_hashed(lock):
    pins = _lock(lock)
    assert pins
    assert not [p for p, (_, hashes) in pins.items() if not hashes]


def test_the_locks_satisfy_setup_cfg():
    runtime, test = _setup_cfg()
    agent, full = _lock("agent.txt"), _lock("test.txt")
    problems = []
    for lock_name, lock, reqs in (("agent.txt", agent, runtime), ("test.txt", full, runtime + test)):
        for req in reqs:
            pin = lock.get(_norm(req.name))
            if pin is None:
                problems.append(f"{lock_name}: {req.name}: in setup.cfg, not in the lock (run ./run lock)")
            elif not req.specifier.contains(pin[0], prereleases=True):
                problems.append(f"{lock_name}: {req.name}=={pin[0]}: outside setup.cfg's {req} (run ./run lock)")
    assert not problems, "\n".join(problems)


def test_the_test_lock_pins_the_agent_lock_as_it_is():
    agent, full = _lock("agent.txt"), _lock("test.txt")
    differ = {p: (str(v), str(full.get(p, (None,))[0])) for p, (v, _) in agent.items()
              if p not in full or full[p][0] != v}
    assert not differ, differ


def test_python_ovs_is_the_release_series_of_the_ovs_we_run():
    """constraints.in: its C parser is built against Debian's OVS 3.1 source."""
    version = _lock("agent.txt")["ovs"][0]
    assert (version.major, version.minor) == (3, 1), version


def test_this_virtualenv_holds_the_locked_versions():
    """What ./run installed is what the lock says (a stale or hand-changed .venv fails here)."""
    wrong = {}
    for pkg, (version, _) in _lock("test.txt").items():
        try:
            installed = Version(metadata.version(pkg))
        except metadata.PackageNotFoundError:
            wrong[pkg] = (str(version), None)
            continue
        if installed != version:
            wrong[pkg] = (str(version), str(installed))
    assert not wrong, f"(locked, installed): {wrong}; run ./run test to sync the virtualenv"


def test_python_ovs_has_its_c_json_parser():
    """./run compiles python-ovs with ovs._json (requirements/pins.sh); without it every OVSDB
    reply is parsed in pure Python."""
    import ovs.json

    assert type(ovs.json.Parser()).__module__ == "ovs._json"
