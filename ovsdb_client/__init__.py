"""The only code that speaks OVSDB: connect, read what ovs-mesh owns, apply a change set.

Imports no ovs_mesh module: the row vocabulary (rows.py) lives here.  The client (and with it
the `ovs` and `ovsdbapp` libraries) is imported on first use, so that the row vocabulary costs
no OVSDB library import (commands such as `validate` never connect).
"""
from .errors import OvsdbUnavailable, OwnershipError  # noqa: F401


def __getattr__(name: str):
    if name == "OvsdbClient":
        from .connection import OvsdbClient
        return OvsdbClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
