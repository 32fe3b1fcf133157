"""The only code that speaks OVSDB: connect, read what ovs-mesh owns, apply a change set."""
from .connection import OvsdbClient, OvsdbUnavailable  # noqa: F401
