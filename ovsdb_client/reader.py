"""Read what ovs-mesh owns from the IDL cache: one bridge, its tagged ports.

Rows without our external_ids key are never returned.  Interfaces that OVS
failed to create are reported, not hidden.
"""
from __future__ import annotations

from .errors import OwnershipError
from .rows import (
    GLOBAL_KEY,
    LEFT_KEY,
    OWNER_KEY,
    PEER_KEY,
    RESTORE_MARK,
    RESTORE_WAIT_KEY,
    BridgeSpec,
    GlobalSpec,
    InterfaceHealth,
    Owned,
    PortSpec,
    RestoreWait,
    frozen_map,
)


def _one(col):
    """Optional OVSDB column (a list of 0 or 1 values) -> value or None."""
    return col[0] if col else None


def _ours(external_ids) -> tuple[tuple[str, str], ...]:
    return frozen_map({k: v for k, v in external_ids.items() if k in (OWNER_KEY, PEER_KEY, LEFT_KEY)})


def find_bridge(idl, name: str):
    for row in idl.tables["Bridge"].rows.values():
        if row.name == name:
            return row
    return None


def open_vswitch_row(idl):
    """The Open_vSwitch table's one row (None before the first monitor reply)."""
    rows = list(idl.tables["Open_vSwitch"].rows.values())
    return rows[0] if rows else None


def recorded_keys(row) -> list[str]:
    """The other_config keys of the Open_vSwitch row that we set (recorded in its external_ids)."""
    return [k for k in row.external_ids.get(GLOBAL_KEY, "").split(",") if k] if row is not None else []


def read_globals(idl) -> GlobalSpec | None:
    """Our keys of the Open_vSwitch row's other_config, as they are now (None: none recorded)."""
    row = open_vswitch_row(idl)
    keys = recorded_keys(row)
    if not keys:
        return None
    return GlobalSpec(frozen_map({k: row.other_config[k] for k in keys if k in row.other_config}))


def read_owned(idl, bridge: str) -> Owned:
    """Our bridge, its tagged ports, the ofports and the interfaces OVS failed to create.

    `ofports` maps every port on the bridge (ours and anyone else's) to its
    ofport (-1: none), so new ports of ours are numbered around them.  A port
    of ours that is not at the number it requested is read with the number it
    has: the flows output to the requested one, so that is a difference.
    A bridge that teardown left to others (LEFT_KEY) is read as ours to take back.
    """
    problems: list[str] = []
    row = find_bridge(idl, bridge)
    if row is None:
        return Owned(globals=read_globals(idl))
    if OWNER_KEY not in row.external_ids and LEFT_KEY not in row.external_ids:
        return Owned(refusal=OwnershipError(f"bridge {bridge} exists but was not created by ovs-mesh "
                                            f"(no external_ids:{OWNER_KEY}); refusing to touch it"))
    local_mtu = None
    ports, ofports = [], {}
    for port in row.ports:
        if port.name == bridge:
            iface = port.interfaces[0] if port.interfaces else None
            local_mtu = _one(iface.mtu_request) if iface is not None else None
            continue
        ofport = _one(port.interfaces[0].ofport) if len(port.interfaces) == 1 else None
        ofports[port.name] = ofport if ofport is not None else -1
        if OWNER_KEY not in port.external_ids or len(port.interfaces) != 1:
            continue
        iface = port.interfaces[0]
        requested = _one(iface.ofport_request)
        ports.append(PortSpec(
            name=port.name, type=iface.type, options=frozen_map(iface.options),
            bfd=frozen_map(iface.bfd),
            ofport_request=ofport if requested is not None and ofport and ofport > 0 else requested,
            external_ids=_ours(port.external_ids)))
        error = _one(iface.error)
        if error or ofport == -1:
            problems.append(f"interface {iface.name}: OVS failed to create it: {error or 'ofport -1'}")
    spec = BridgeSpec(name=row.name, datapath_type=row.datapath_type,
                      fail_mode=_one(row.fail_mode) or "", rstp_enable=bool(row.rstp_enable),
                      mtu_request=local_mtu, external_ids=_ours(row.external_ids))
    return Owned(bridge=spec, ports=tuple(sorted(ports, key=lambda p: p.name)), ofports=ofports,
                 problems=tuple(problems), globals=read_globals(idl))


def interface_health(idl, names) -> dict[str, InterfaceHealth]:
    """Health of the named interfaces (one pass over the Interface table)."""
    wanted = set(names)
    rows = {i.name: i for i in idl.tables["Interface"].rows.values() if i.name in wanted}
    out = {}
    for name in wanted:
        iface = rows.get(name)
        if iface is None:
            out[name] = InterfaceHealth(None, "missing", None, None)
            continue
        ofport = iface.ofport[0] if iface.ofport else -1
        bfd = dict(iface.bfd_status)
        health = "error" if (iface.error or ofport == -1) else "up"
        if bfd:
            health = bfd.get("state", "unknown")
        out[name] = InterfaceHealth(ofport, health, _one(iface.error), bfd or None)
    return out


def read_restore_wait(idl) -> RestoreWait:
    """other_config:flow-restore-wait, and ovs-mesh's mark on it (external_ids)."""
    row = open_vswitch_row(idl)
    if row is None:
        return RestoreWait()
    flag = str(row.other_config.get(RESTORE_WAIT_KEY, "false")).lower() == "true"
    return RestoreWait(flag, row.external_ids.get(RESTORE_MARK))
