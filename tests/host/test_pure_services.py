"""The host's services for encryption (pure): openvswitch-ipsec.service is wanted with IPsec where
systemd runs; the diff starts it, and stops it only when it was observed as ours (the observation
shows a running unit only when it is wanted or recorded as started by ovs-mesh)."""
import dataclasses
import pathlib

import pytest

from ovs_mesh.host import desired_host, diff_host, strongswan
from ovs_mesh.host.model import HostFacts, HostState, Service, StrongswanConf
from ovs_mesh.host.services import IPSEC_UNIT
from tests.helpers import base_config
from topology.config import parse_config

pytestmark = pytest.mark.unit


def config(encryption="none", tunnel=None):
    data = base_config(3)
    data["local"].update(datapath="system", host=True)
    c = parse_config(data)
    return dataclasses.replace(c, cluster=dataclasses.replace(c.cluster, encryption=encryption,
                                                              tunnel=tunnel or c.cluster.tunnel))


def services(changes):
    return [(ch.action, ch.obj.name) for ch in changes if isinstance(ch.obj, Service)]


def test_ipsec_wants_the_monitor_where_systemd_runs():
    observed = HostState((), HostFacts(systemd=True))
    assert services(diff_host(desired_host(config("ipsec"), 1413, observed), observed)) == [("add", IPSEC_UNIT)]
    running = HostState((Service(IPSEC_UNIT),), HostFacts(systemd=True))
    assert services(diff_host(desired_host(config("ipsec"), 1413, running), running)) == []
    no_systemd = HostState((), HostFacts(systemd=False))   # a DaemonSet pod: the host runs the monitor
    assert services(diff_host(desired_host(config("ipsec"), 1413, no_systemd), no_systemd)) == []


def test_switching_off_or_teardown_stops_only_what_was_observed_as_ours():
    ours = HostState((Service(IPSEC_UNIT),), HostFacts(systemd=True))
    assert services(diff_host(desired_host(config(), 1450, ours), ours)) == [("delete", IPSEC_UNIT)]
    assert services(diff_host(desired_host(config(), 1450, ours, teardown=True), ours)) == [("delete", IPSEC_UNIT)]
    # an administrator's running monitor is not observed without IPsec and a record: left alone
    theirs = HostState((), HostFacts(systemd=True))
    assert services(diff_host(desired_host(config(), 1450, theirs), theirs)) == []
    assert str(diff_host(desired_host(config("ipsec"), 1413, theirs), theirs)[-1]).endswith(
        "service openvswitch-ipsec.service running")


def test_the_record_of_started_units_survives_a_reload(tmp_path):
    from ovs_mesh.host import saved

    saved.save(str(tmp_path), saved.Saved(started=(IPSEC_UNIT,)))
    assert saved.load(str(tmp_path)).started == (IPSEC_UNIT,)
    saved.save(str(tmp_path), saved.Saved())
    assert not list(tmp_path.iterdir())   # nothing left to restore: the file is gone


def test_a_host_that_cannot_do_ipsec_is_refused_naming_the_field():
    from topology.config import ConfigError

    for facts, reason in ((HostFacts(systemd=True, xfrm=False), "this kernel has no XFRM (IPsec)"),
                          (HostFacts(systemd=True, ipsec_monitor=False), "ovs-monitor-ipsec is not installed")):
        with pytest.raises(ConfigError) as e:
            desired_host(config("ipsec"), 1413, HostState((), facts))
        assert str(e.value.errors[0]).startswith(f"cluster.encryption: ipsec: {reason}")
    desired_host(config(), 1450, HostState((), HostFacts(xfrm=False, ipsec_monitor=False)))   # not needed


@pytest.mark.parametrize("tunnel", ["vxlan", "geneve"])
def test_ipsec_on_vxlan_or_geneve_needs_a_monitor_that_reads_their_names(tunnel):
    """Open vSwitch 3.1's monitor, started without ovs-mesh's wrapper, tears VXLAN/Geneve connections
    down: refused naming cluster.tunnel and the way out; GRE, or a host without systemd (DaemonSet:
    the host runs the monitor), is not refused."""
    from topology.config import ConfigError

    misreads = HostState((), HostFacts(systemd=True, ipsec_names=False))
    with pytest.raises(ConfigError) as e:
        desired_host(config("ipsec", tunnel), 1413, misreads)
    assert str(e.value.errors[0]).startswith(f"cluster.tunnel: {tunnel}: with cluster.encryption ipsec")
    assert "ovs-mesh install-service" in str(e.value.errors[0])
    desired_host(config("ipsec", "gre"), 1421, misreads)
    desired_host(config("ipsec", tunnel), 1413, HostState((), HostFacts(systemd=False, ipsec_names=False)))
    desired_host(config("ipsec", tunnel), 1413, HostState((), HostFacts(systemd=True)))


def test_which_monitor_reads_the_names(tmp_path):
    """A monitor with Open vSwitch 3.1's greedy pattern reads them wrong unless the unit starts it
    through the wrapper (install-service's drop-in); one without the pattern reads them right."""
    import importlib.machinery
    import importlib.util

    from ovs_mesh.host import services

    script, drop_in = tmp_path / "ovs-monitor-ipsec", tmp_path / "50-ovs-mesh-ipsec-monitor.conf"
    script.write_text("x\n            m = " + services.GREEDY + "\n")
    assert not services.monitor_reads_names(str(script), str(drop_in))
    drop_in.write_text("[Service]\n")
    assert services.monitor_reads_names(str(script), str(drop_in))
    script.write_text('m = re.match(r"(.*)(-in-\\d+|-out-\\d+)", conn)\n')
    assert services.monitor_reads_names(str(script), str(tmp_path / "none"))
    # the wrapper looks for the same line
    loader = importlib.machinery.SourceFileLoader(
        "w", str(pathlib.Path(services.__file__).parents[1] / "agent/data/ovs-monitor-ipsec"))
    wrapper = importlib.util.module_from_spec(importlib.util.spec_from_loader("w", loader))
    loader.exec_module(wrapper)
    assert wrapper.BUGGY == services.GREEDY


def test_start_and_stop_are_queued_and_stop_waits_for_the_monitor_to_drop_its_tunnels(monkeypatch):
    """The agent never waits for systemd (the monitor restarts strongSwan as it starts: longer than the
    watchdog allows a pass); before stopping, the monitor gets (bounded) time to remove its tunnels."""
    import subprocess

    from ovs_mesh.host import services

    calls = []
    tunnels = iter([2, 1, 0])

    def run(argv, **kw):
        calls.append(argv)
        if argv[:3] == ["ovs-appctl", "-t", services.MONITOR]:
            n = next(tunnels)
            return subprocess.CompletedProcess(argv, 0, "Interface name: x\n" * n, "")
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(services.subprocess, "run", run)
    monkeypatch.setattr(services.time, "sleep", lambda s: None)
    services.start(IPSEC_UNIT)
    services.stop(IPSEC_UNIT, "/var/run/openvswitch")
    assert calls[0] == ["systemctl", "start", "--no-block", IPSEC_UNIT]
    assert [c[:3] for c in calls[1:4]] == [["ovs-appctl", "-t", services.MONITOR]] * 3
    assert calls[-1] == ["systemctl", "stop", "--no-block", IPSEC_UNIT]


def confs(changes):
    return [(ch.action, (ch.new or ch.old).path) for ch in changes if isinstance(ch.obj, StrongswanConf)]


def test_ipsec_writes_strongswans_acquire_lifetime_before_the_monitor_starts_and_removes_it_after():
    observed = HostState((), HostFacts(systemd=True))
    changes = diff_host(desired_host(config("ipsec"), 1413, observed), observed)
    assert confs(changes) == [("add", strongswan.PATH)]
    kinds = [type(ch.obj) for ch in changes]
    assert kinds.index(StrongswanConf) < kinds.index(Service)
    conf = next(ch.new for ch in changes if isinstance(ch.obj, StrongswanConf))
    assert conf.content.startswith(strongswan.TAG) and "xfrm_acq_expires = 10" in conf.content
    ours = HostState((conf, Service(IPSEC_UNIT)), HostFacts(systemd=True))
    assert confs(diff_host(desired_host(config("ipsec"), 1413, ours), ours)) == []
    assert confs(diff_host(desired_host(config(), 1450, ours), ours)) == [("delete", strongswan.PATH)]
    assert confs(diff_host(desired_host(config(), 1450, ours, teardown=True), ours)) == [("delete", strongswan.PATH)]
    # no systemd (a DaemonSet: the host runs the monitor) or no strongSwan directory: not written
    for facts in (HostFacts(systemd=False), HostFacts(systemd=True, strongswan_d=False)):
        state = HostState((), facts)
        assert confs(diff_host(desired_host(config("ipsec"), 1413, state), state)) == []


def test_the_file_is_ours_by_its_first_line_and_only_ours_is_removed(tmp_path):
    path = str(tmp_path / "ovs-mesh.conf")
    assert strongswan.read(path) is None
    strongswan.write(path, strongswan.render())
    assert strongswan.is_ours(strongswan.read(path))
    strongswan.remove(path)
    assert strongswan.read(path) is None
    with open(path, "w") as f:
        f.write("charon { }\n")   # someone else's
    assert not strongswan.is_ours(strongswan.read(path))
    strongswan.remove(path)
    assert strongswan.read(path) == "charon { }\n"
