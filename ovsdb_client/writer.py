"""Apply a change set to OVSDB in one transaction, errors always raised.

One small command class per verb (ovsdbapp style): each is a re-runnable
description of intent, so ovsdbapp can retry the transaction against a fresh
cache.  Every command touches only rows that carry our external_ids tag, and
only the keys of maps that we set.

The one exception to "one transaction": a port that must move to another
ofport.  ovs-vswitchd reconsiders a port's number only when its
`ofport_request` changes, and a request for a number that is still taken
(even by a port deleted in the same transaction) silently gives another one.
So a moving port drops its request in the first transaction and asks for the
new number in a second one.  The same holds for a new port that asks for the
number of a port deleted or moved in the same change set (the flow-mode
tunnel port when the tunnel type changes: obr0-vxlan leaves ofport 10 to
obr0-gre): it is created without a request, then asks for its number.
"""
from __future__ import annotations

from ovsdbapp.backend.ovs_idl import command, idlutils

from .errors import OwnershipError
from .reader import find_bridge, open_vswitch_row, recorded_keys
from .rows import (
    GLOBAL_KEY,
    LEFT_KEY,
    OWNER_KEY,
    RESTORE_MARK,
    RESTORE_WAIT_KEY,
    BridgeChange,
    BridgeSpec,
    GlobalChange,
    GlobalSpec,
    PortChange,
    PortSpec,
    RowChange,
)


def _port(idl, name):
    return idlutils.row_by_value(idl, "Port", "name", name, None)


def _set_iface(iface, spec: PortSpec, request_ofport: bool = True) -> None:
    iface.type = spec.type
    iface.options = dict(spec.options)
    iface.bfd = dict(spec.bfd)
    iface.ofport_request = [spec.ofport_request] if spec.ofport_request and request_ofport else []


def _ours(br) -> bool:
    """Our bridge, or one we created and teardown left to someone else's ports."""
    return OWNER_KEY in br.external_ids or LEFT_KEY in br.external_ids


class EnsureBridge(command.BaseCommand):
    def __init__(self, api, spec: BridgeSpec):
        super().__init__(api)
        self.spec = spec

    def run_idl(self, txn):
        s = self.spec
        br = find_bridge(self.api.idl, s.name)
        if br is None:
            iface = txn.insert(self.api.idl.tables["Interface"])
            iface.name, iface.type = s.name, "internal"
            port = txn.insert(self.api.idl.tables["Port"])
            port.name, port.interfaces = s.name, [iface]
            br = txn.insert(self.api.idl.tables["Bridge"])
            br.name, br.ports = s.name, [port]
            self.api._ovs.addvalue("bridges", br)
        elif not _ours(br):
            raise OwnershipError(f"bridge {s.name} exists but was not created by ovs-mesh")
        else:
            iface = next(i for p in br.ports if p.name == s.name for i in p.interfaces)
        br.datapath_type = s.datapath_type
        br.fail_mode = [s.fail_mode] if s.fail_mode else []
        br.rstp_enable = s.rstp_enable
        for k, v in s.external_ids:
            br.setkey("external_ids", k, v)
        if LEFT_KEY in br.external_ids:
            br.delkey("external_ids", LEFT_KEY)
        iface.mtu_request = [s.mtu_request] if s.mtu_request else []


class DeleteBridge(command.BaseCommand):
    """Delete our bridge, unless someone else's ports or flows live on it:
    then leave the bridge to them, our tag replaced by LEFT_KEY (so that a
    later apply may take it back)."""

    def __init__(self, api, name: str, keep: bool = False):
        super().__init__(api)
        self.name, self.keep = name, keep

    def run_idl(self, txn):
        br = find_bridge(self.api.idl, self.name)
        if br is None:
            return
        if not _ours(br):
            raise OwnershipError(f"bridge {self.name} was not created by ovs-mesh")
        foreign = [p.name for p in br.ports if p.name != self.name and OWNER_KEY not in p.external_ids]
        if foreign or self.keep:
            if OWNER_KEY in br.external_ids:
                br.setkey("external_ids", LEFT_KEY, br.external_ids[OWNER_KEY])
                br.delkey("external_ids", OWNER_KEY)
            return
        self.api._ovs.delvalue("bridges", br)
        br.delete()


class EnsurePort(command.BaseCommand):
    """Create or update our port; `request_ofport=False` leaves it without an
    ofport request (the first step of a move)."""

    def __init__(self, api, bridge: str, spec: PortSpec, request_ofport: bool = True):
        super().__init__(api)
        self.bridge, self.spec, self.request_ofport = bridge, spec, request_ofport

    def run_idl(self, txn):
        s = self.spec
        port = _port(self.api.idl, s.name)
        if port is None:
            br = find_bridge(self.api.idl, self.bridge)
            iface = txn.insert(self.api.idl.tables["Interface"])
            iface.name = s.name
            port = txn.insert(self.api.idl.tables["Port"])
            port.name, port.interfaces = s.name, [iface]
            br.addvalue("ports", port)
            txn.expected_ifaces.add(iface.uuid)
        elif OWNER_KEY not in port.external_ids:
            raise OwnershipError(f"port {s.name} exists but was not created by ovs-mesh")
        else:
            iface = port.interfaces[0]
        _set_iface(iface, s, self.request_ofport)
        for k, v in s.external_ids:
            port.setkey("external_ids", k, v)


class DeletePort(command.BaseCommand):
    def __init__(self, api, bridge: str, name: str):
        super().__init__(api)
        self.bridge, self.name = bridge, name

    def run_idl(self, txn):
        port = _port(self.api.idl, self.name)
        if port is None:
            return
        if OWNER_KEY not in port.external_ids:
            raise OwnershipError(f"port {self.name} was not created by ovs-mesh")
        br = find_bridge(self.api.idl, self.bridge)
        if br is not None:
            br.delvalue("ports", port)
        port.delete()


class SetGlobals(command.BaseCommand):
    """Make our keys of the Open_vSwitch row's other_config those of `spec` (None: remove
    them all), and record which they are.  A key someone else set is refused, never taken."""

    def __init__(self, api, spec: GlobalSpec | None):
        super().__init__(api)
        self.spec = spec

    def run_idl(self, txn):
        row = open_vswitch_row(self.api.idl)
        if row is None:
            raise OwnershipError("the Open_vSwitch table has no row (ovs-vsctl init)")
        ours = set(recorded_keys(row))
        want = dict(self.spec.other_config) if self.spec is not None else {}
        foreign = sorted(k for k in want if k in row.other_config and k not in ours)
        if foreign:
            raise OwnershipError(f"Open_vSwitch other_config:{','.join(foreign)} is set, not by ovs-mesh; "
                                 "refusing to change it (another IPsec configuration on this host?)")
        for k in sorted(ours - want.keys()):
            row.delkey("other_config", k)
        for k, v in want.items():
            row.setkey("other_config", k, v)
        if want:
            row.setkey("external_ids", GLOBAL_KEY, ",".join(sorted(want)))
        elif GLOBAL_KEY in row.external_ids:
            row.delkey("external_ids", GLOBAL_KEY)


def _moves(ch) -> bool:
    """A modified port whose ofport changes."""
    return (isinstance(ch, PortChange) and ch.action == "modify"
            and ch.old.ofport_request != ch.new.ofport_request and ch.new.ofport_request)


def _asking_later(changes: list[RowChange]) -> list[RowChange]:
    """The ports that ask for their ofport only in a second transaction: those that move,
    and new ones asking for a number that a port deleted or moved by these changes leaves."""
    moving = [ch for ch in changes if _moves(ch)]
    freed = {ch.old.ofport_request for ch in changes if isinstance(ch, PortChange) and ch.action == "delete"}
    freed.update(ch.old.ofport_request for ch in moving)
    return moving + [ch for ch in changes if isinstance(ch, PortChange) and ch.action == "add"
                     and ch.new.ofport_request and ch.new.ofport_request in freed]


def commands_for(api, bridge: str, changes: list[RowChange], later: list[RowChange],
                 keep_bridge: bool = False) -> list:
    asking_later = {ch.name for ch in later}
    cmds = []
    for ch in changes:
        if isinstance(ch, GlobalChange):
            cmds.append(SetGlobals(api, ch.new))
        elif isinstance(ch, BridgeChange):
            cmds.append(EnsureBridge(api, ch.new) if ch.action != "delete"
                        else DeleteBridge(api, ch.name, keep_bridge))
        else:
            cmds.append(EnsurePort(api, bridge, ch.new, request_ofport=ch.name not in asking_later)
                        if ch.action != "delete" else DeletePort(api, bridge, ch.name))
    return cmds


def apply_changes(api, bridge: str, changes: list[RowChange], keep_bridge: bool = False) -> int:
    """Returns the number of transactions made: 0, 1, or 2 when a port moves or takes a freed ofport."""
    later = _asking_later(changes)
    steps = [commands_for(api, bridge, changes, later, keep_bridge), [EnsurePort(api, bridge, ch.new) for ch in later]]
    done = 0
    for cmds in steps:
        if not cmds:
            continue
        with api.transaction(check_error=True, log_errors=False) as txn:
            for c in cmds:
                txn.add(c)
        done += 1
    return done


class ClearRestoreWait(command.BaseCommand):
    """Remove flow-restore-wait and our mark, only while the mark is still `mark`."""

    def __init__(self, api, mark: str | None):
        super().__init__(api)
        self.mark = mark
        self.result = False

    def run_idl(self, txn):
        row = open_vswitch_row(self.api.idl)
        if row is None or row.external_ids.get(RESTORE_MARK) != self.mark or self.mark is None:
            self.result = False
            return
        row.verify("external_ids")   # a newer mark written meanwhile: the transaction is retried
        row.delkey("other_config", RESTORE_WAIT_KEY)
        row.delkey("external_ids", RESTORE_MARK)
        self.result = True


def clear_restore_wait(api, mark: str | None) -> bool:
    cmd = ClearRestoreWait(api, mark)
    with api.transaction(check_error=True, log_errors=False) as txn:
        txn.add(cmd)
    return cmd.result
