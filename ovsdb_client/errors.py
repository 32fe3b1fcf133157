"""The OVSDB client's errors, placed in the shared hierarchy (topology/errors.py)."""
from __future__ import annotations

from topology.errors import NotOurs, Transient


class OvsdbUnavailable(Transient):
    """The OVSDB server could not be reached (transient: retry later)."""


class OwnershipError(NotOurs):
    """A row we would have to change exists but is not ours."""
