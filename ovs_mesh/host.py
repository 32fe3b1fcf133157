"""Host networking (kbr0, routes, sysctls, CNI config): arrives with the lab issue."""
from __future__ import annotations


class HostLayer:
    def __init__(self, config):
        raise NotImplementedError("host networking (local.host: true) is not implemented yet; "
                                  "set local.host: false to manage OVS only")
