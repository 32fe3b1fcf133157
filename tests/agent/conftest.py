"""Run `ovs-mesh agent` as a real process against a sandbox OVS (dummy datapath).

The process itself is `tests.agent_process.AgentProc` (shared with bench/agent.py);
here are the fixture that makes them and the flow helpers.
"""
from __future__ import annotations

import tempfile

import pytest

from ovs_mesh.ovs.model import COOKIE_MATCH
from tests.agent_process import AgentProc
from tests.helpers import sandbox_config


def our_flows(ovs) -> str:
    return ovs.ofctl("--no-stats", "dump-flows", ovs.mgmt("obr0"), COOKIE_MATCH, check=False)


def flow_lines(ovs) -> list[str]:
    return sorted(line.strip() for line in our_flows(ovs).splitlines() if "cookie=" in line)


@pytest.fixture
def agent_factory(ovs):
    made: list[AgentProc] = []
    workdir = tempfile.mkdtemp(prefix="ovsm-ag-", dir=ovs.rundir)

    def make(data=None, **kw) -> AgentProc:
        a = AgentProc(ovs, workdir, data if data is not None else sandbox_config(ovs), **kw)
        made.append(a)
        return a

    try:
        yield make
    finally:
        for a in made:
            a.kill()
            a.notify.close()
