"""strongSwan's settings file of ours, `/etc/strongswan.d/ovs-mesh.conf` (the only I/O of it).

With IPsec, a tunnel packet that matches a policy without an SA makes the kernel hold an ACQUIRE
("larval") state while strongSwan negotiates; until that state expires the kernel asks for no new
negotiation.  strongSwan sets its lifetime (the sysctl net.core.xfrm_acq_expires) from
`charon.plugins.kernel-netlink.xfrm_acq_expires`, 165 s by default.  ovs-monitor-ipsec means to
make it 10 s, but Debian 12's (3.1.0) writes the setting as `xfrm_ack_expires`, which strongSwan
does not know: a first negotiation that fails (a peer whose monitor has not started yet, as when
IPsec is switched on node by node) stalls that pair for 165 s.  This file sets the monitor's 10 s.
strongSwan reads /etc/strongswan.d/*.conf when it starts, which the monitor makes it do as it starts:
the agent writes the file before it starts the monitor.

Ours by its first line; a file at the path without it is left alone (the config is refused).
Written atomically, removed when IPsec is switched off and on teardown.
"""
from __future__ import annotations

import os

from ..files import write_atomic

PATH = "/etc/strongswan.d/ovs-mesh.conf"
TAG = "# ovs-mesh: written by the ovs-mesh agent while cluster.encryption is ipsec; do not edit\n"
ACQUIRE_SECONDS = 10


def render() -> str:
    return (TAG + "# The kernel's ACQUIRE state lives this long: a failed negotiation is retried after it\n"
            "# (ovs-monitor-ipsec's own setting of it is misspelled in Open vSwitch 3.1).\n"
            "charon {\n    plugins {\n        kernel-netlink {\n"
            f"            xfrm_acq_expires = {ACQUIRE_SECONDS}\n"
            "        }\n    }\n}\n")


def read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read(4096)
    except FileNotFoundError:
        return None


def is_ours(content: str | None) -> bool:
    return content is not None and content.startswith(TAG)


def write(path: str, content: str) -> None:
    write_atomic(path, content, 0o644)


def remove(path: str) -> None:
    """Delete the file only if it is ours."""
    if is_ours(read(path)):
        os.unlink(path)
