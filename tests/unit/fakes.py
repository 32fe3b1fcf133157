"""In-memory fakes of the clients the Reconciler, the Agent and the host layer depend
on, one per Protocol of ovs_mesh/reconcile/clients.py: `FakeOvsdb` (OvsdbRows) holds rows in
dicts, `FakeFlows` (Flows) holds OpenFlow as a set.  tests/unit/test_fakes_protocols.py
checks them against the Protocols.  The host layer is the real `HostLayer` over a
fake netlink (tests/host/test_stages_fake.py), so there is no fake of `Host`."""
from __future__ import annotations

import threading
import time

from ovs_mesh.agent.session import NodeSession
from ovs_mesh.ovs.openflow import OpenFlowError
from ovs_mesh.reconcile.node import NodeClients
from ovsdb_client.errors import OvsdbUnavailable, OwnershipError
from ovsdb_client.rows import BridgeChange, GlobalChange, InterfaceHealth, Owned, RestoreWait
from tests.helpers import base_config
from topology.config import parse_config


def config(tmp_path, n: int = 3, **cluster):
    data = base_config(n, **cluster)
    data["local"].update(ovsdb="unix:/nonexistent/db.sock", ovs_rundir=str(tmp_path))
    return parse_config(data)


class FakeOvsdb:
    """OVSDB rows of one bridge.  With `netlink` (a netlink fake, as the host tests have) it
    plays ovs-vswitchd's part too: a bridge's internal device appears (down) when the
    bridge is added and goes when it is deleted."""

    remote = "unix:/nonexistent/db.sock"

    def __init__(self, netlink=None):
        self.netlink = netlink
        self.bridge = None
        self.ports: dict = {}
        self.ofports: dict[str, int] = {}
        self.globals = None            # our Open_vSwitch other_config keys (GlobalSpec)
        self.untagged = False          # obr0 exists without our tag
        self.fail = 0                  # the next `fail` applies raise OvsdbUnavailable
        self.calls: list[tuple[str, float]] = []   # ("apply", time) for every apply attempt
        self.transactions = 0
        self.closed = False
        self._lock = threading.Lock()
        self.flag = RestoreWait()      # flow-restore-wait and ovs-mesh's mark
        self.clear_fail = 0            # the next `clear_fail` clears raise OvsdbUnavailable
        self.on_clear = lambda: None   # called when a clear removes the flag (tests look at OVS then)

    def read(self, bridge: str) -> Owned:
        with self._lock:
            if self.untagged:
                return Owned(refusal=OwnershipError(f"bridge {bridge} exists but was not created by ovs-mesh"))
            return Owned(self.bridge, tuple(self.ports[k] for k in sorted(self.ports)), dict(self.ofports),
                         globals=self.globals)

    def apply(self, bridge: str, changes, keep_bridge: bool = False) -> int:
        self.calls.append(("apply", time.monotonic()))
        if self.fail:
            self.fail -= 1
            raise OvsdbUnavailable("fake OVSDB: connection refused")
        if not changes:
            return 0
        with self._lock:
            for ch in changes:
                if isinstance(ch, GlobalChange):
                    self.globals = ch.new
                elif isinstance(ch, BridgeChange):
                    self.bridge = ch.new
                    self._vswitchd(bridge, ch.new is not None)
                elif ch.action == "delete":
                    self.ports.pop(ch.name)
                    self.ofports.pop(ch.name)
                else:
                    self.ports[ch.name] = ch.new
                    self.ofports.setdefault(ch.name, ch.new.ofport_request or 1000 + len(self.ports))
            self.transactions += 1
        return 1

    def _vswitchd(self, bridge: str, exists: bool) -> None:
        if self.netlink is None:
            return
        if not exists:
            self.netlink.delete_link(bridge)
        elif self.netlink.link(bridge) is None:
            self.netlink.add(bridge, up=False)

    def health(self, interfaces):
        return {n: InterfaceHealth(self.ofports.get(n), "up" if n in self.ports else "missing", None, None)
                for n in interfaces}

    def restore_wait(self) -> RestoreWait:
        return self.flag

    def clear_restore_wait(self, mark) -> bool:
        if self.clear_fail:
            self.clear_fail -= 1
            raise OvsdbUnavailable("fake OVSDB: connection refused")
        if mark is None or self.flag.mark != mark:
            return False
        self.on_clear()
        self.flag = RestoreWait()
        return True

    def connected(self) -> bool:
        return True

    def session_seqno(self) -> int:
        return 1

    def change_seqno(self) -> int:
        return self.transactions

    def close(self) -> None:
        self.closed = True


class FakeFlows:
    def __init__(self, log: list | None = None):
        self.flows: set = set()
        self.log = log if log is not None else []
        self.fail = 0   # the next `fail` applies raise OpenFlowError (ovs-vswitchd not answering)

    def dump(self):
        return frozenset(self.flows)

    def count(self):
        return len(self.flows)

    def foreign_flow_count(self) -> int:
        return 0

    def apply(self, changes) -> int:
        if self.fail and changes:
            self.fail -= 1
            raise OpenFlowError("fake ovs-ofctl: connection refused")
        self.log.append(("flows", len(changes)))
        for ch in changes:
            if ch.old is not None:
                self.flows.discard(ch.old)
            if ch.new is not None:
                self.flows.add(ch.new)
        return len(changes)


def session(ovsdb: FakeOvsdb, flows: FakeFlows) -> NodeSession:
    """A NodeSession whose node is made of the fakes (no host layer)."""
    return NodeSession(connect=lambda local: ovsdb,
                       opener=lambda cfg, ovsdb: NodeClients(cfg, ovsdb, flows, None, owns_ovsdb=False))


class FakeSource:
    """The file source's interface: `config()` is the current valid config (or raises)."""

    def __init__(self, cfg):
        self.cfg, self.error = cfg, None
        self.notify = None

    def start(self, notify) -> None:
        self.notify = notify

    def stop(self) -> None:
        pass

    def config(self):
        if self.error is not None:
            raise self.error
        return self.cfg

    def set(self, cfg=None, error=None) -> None:
        self.cfg, self.error = cfg or self.cfg, error
        self.notify()
