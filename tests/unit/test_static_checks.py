"""The linter and the type checker pass on the whole repository, configured in pyproject.toml:
`ruff check` over every Python file and `mypy` over ovs_mesh, ovsdb_client and topology."""
import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
# Caches per user and checkout, outside the tree: mypy's incremental cache makes a rerun take
# seconds, and a tree written by root stays usable by the fast loop without root.
CACHE = pathlib.Path(tempfile.gettempdir()) / (
    f"ovs-mesh-checks-{os.getuid()}-{hashlib.sha256(str(REPO).encode()).hexdigest()[:12]}")
COMMANDS = {
    "ruff": [sys.executable, "-m", "ruff", "check", "--no-fix", "--output-format", "concise",
             "--cache-dir", str(CACHE / "ruff"), "."],
    "mypy": [sys.executable, "-m", "mypy", "--cache-dir", str(CACHE / "mypy")],
}
BY_HAND = {"ruff": ".venv/bin/ruff check .", "mypy": ".venv/bin/mypy"}   # from the repository root


@pytest.fixture(scope="module")
def results() -> dict[str, subprocess.CompletedProcess]:
    """Both checkers, run side by side (each reads its settings from pyproject.toml)."""
    CACHE.mkdir(mode=0o700, parents=True, exist_ok=True)
    procs = {name: subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name, cmd in COMMANDS.items()}
    out = {}
    for name, p in procs.items():
        stdout, _ = p.communicate(timeout=600)
        out[name] = subprocess.CompletedProcess(p.args, p.returncode, stdout)
    return out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_clean(results, name):
    r = results[name]
    if r.returncode != 0:
        pytest.fail(f"{name} found problems (`{BY_HAND[name]}` shows them again):\n{r.stdout}", pytrace=False)
