"""The host stage alone (observe -> desired -> diff -> apply), run inside a
test's network namespace for a config of v6config.py:

    python -m tests.host.hostctl FAMILY CNI_CONF RUNDIR apply|teardown|plan [--no-masquerade] [--underlay ipv6]

Prints the changes, one per line.  `datapath: system` without OVS: the test
itself plays obr0 (a veth enslaved to kbr0, standing for the tunnels)."""
from __future__ import annotations

import argparse

from ovs_mesh.host import HostLayer
from tests.host.v6config import config


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("family", choices=["ipv4", "ipv6", "dual"])
    p.add_argument("cni_conf")
    p.add_argument("rundir")
    p.add_argument("command", choices=["apply", "teardown", "plan"])
    p.add_argument("--no-masquerade", action="store_true")
    p.add_argument("--underlay", default="ipv4")
    a = p.parse_args()
    cfg = config(a.family, masquerade=not a.no_masquerade, underlay=a.underlay, cni_conf=a.cni_conf,
                 ovs_rundir=a.rundir)
    layer = HostLayer(cfg)
    try:
        teardown = a.command == "teardown"
        mtu = cfg.cluster.pod_mtu(layer.underlay_mtu(), cfg.underlay_family or "ipv4")
        changes = layer.plan(mtu, teardown)
        if a.command != "plan":
            layer.apply(changes, teardown)
        for c in changes:
            print(c)
    finally:
        layer.close()


if __name__ == "__main__":
    main()
