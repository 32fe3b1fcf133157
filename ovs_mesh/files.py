"""Atomic file writes: a temp file in the same directory, fsync, rename.

Readers (the agent's inotify watch, CNI runtimes, `lab down` after a crash)
never see a half-written file.
"""
from __future__ import annotations

import os
import tempfile


def write_atomic(path: str, text: str, mode: int | None = None) -> None:
    """Replace `path` with `text`.  `mode`: the new file's permissions; None keeps
    the current file's, or 0o644 for a new file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    if mode is None:
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".ovs-mesh-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
