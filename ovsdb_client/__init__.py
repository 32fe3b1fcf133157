"""The only code that speaks OVSDB: connect, read what ovs-mesh owns, apply a change set.

Imports no ovs_mesh module: the row vocabulary (rows.py) lives here.
"""
from .connection import OvsdbClient  # noqa: F401
from .errors import OvsdbUnavailable, OwnershipError  # noqa: F401
