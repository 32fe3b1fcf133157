"""Keep kbr0's neighbour entries usable while ovs-vswitchd restarts.

kbr0 reaches the pods of other nodes directly (the pod range is on-link), so it holds a neighbour
entry (MAC) per remote pod it talks to, and the kernel re-checks each with unicast ARP/ND probes
about every 30 s.  Those probes cross obr0 and the tunnel.  While ovs-vswitchd restarts (down, then
waiting under flow-restore-wait until the agent has restored the pipeline) the kernel datapath
forwards only on the flows it already holds, and a probe that needs a new datapath flow is lost.
With the kernel's 3 unicast probes (1 s apart) an entry that falls due in that window fails and its
traffic stops until the flag is cleared (an 11.5 s gap measured on the VMs).

So, only for that window, the agent raises kbr0's `ucast_solicit` to `HOLD_PROBES`: an entry being
probed stays usable (the kernel keeps sending with the MAC it knows while it probes), and the
probes succeed again once ovs-vswitchd forwards.  `CALM` seconds after ovs-vswitchd runs without
a flag the value goes back to the `default` table's (what kbr0 had when it was created; the
kernel's 3 in a network namespace other than the first, which shows no `default` table).  Held all
the time instead, a neighbour entry holding an old MAC (a pod re-created on a reused address)
would stay wrong for ~45 s instead of ~8 s.

Stateless: a kbr0 value of `HOLD_PROBES` (when the default table has another) means "held", so an
agent killed while holding releases at its next start.  kbr0 is ovs-mesh's device; nothing else is
written.  Called from the watcher's thread (agent/watch.py) every tick.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .apply import write_sysctl
from .model import KBR
from .observe import read_sysctl

LOG = logging.getLogger(__name__)
# 600 probes, 1 s apart: longer than any restart window seen.  A package upgrade keeps Open vSwitch
# down while it unpacks (25 s under emulation) before the flag's 30 s even start: with 40, an entry
# that was probing ran out 7 s before the restore (a 7.4 s gap on the VMs).  The value only matters
# while held; the release puts the default back and a dead neighbour then fails within seconds.
HOLD_PROBES = "600"
CALM = 5.0            # seconds ovs-vswitchd must run without flow-restore-wait before the release
FAMILIES = ("ipv4", "ipv6")
KERNEL_DEFAULT = "3"  # what a device gets where no `default` table is shown (any netns but the first)


def held_names(dev: str = KBR) -> tuple[str, ...]:
    return tuple(f"net.{fam}.neigh.{dev}.ucast_solicit" for fam in FAMILIES)


def default_of(name: str, dev: str = KBR) -> str:
    """The `default` table's sysctl that a device's neighbour setting starts from."""
    return name.replace(f".neigh.{dev}.", ".neigh.default.")


class NeighbourHold:
    """`tick(vswitchd_up, waiting, connected)`: hold while ovs-vswitchd is down or waiting,
    release `calm` seconds after it runs again without a flag (seen over a live OVSDB session)."""

    def __init__(self, dev: str = KBR, read: Callable[[str], str | None] = read_sysctl,
                 write: Callable[[str, str], None] = write_sysctl,
                 clock: Callable[[], float] = time.monotonic, calm: float = CALM):
        self.dev, self.read, self.write, self.clock, self.calm = dev, read, write, clock, calm
        self._calm_since: float | None = None
        self._held: bool | None = None    # None: not known yet (an agent killed while holding)

    def _values(self) -> list[tuple[str, str, str]]:
        """(name, kbr0's value, the default table's value) for each family kbr0 has."""
        out = []
        for name in held_names(self.dev):
            value = self.read(name)
            if value is not None:
                out.append((name, value, self.read(default_of(name, self.dev)) or KERNEL_DEFAULT))
        return out

    def holding(self) -> bool:
        return any(v == HOLD_PROBES and d != HOLD_PROBES for _, v, d in self._values())

    def hold(self) -> bool:
        """Raise kbr0's unicast probes; True when something was written."""
        wrote = False
        for name, value, _default in self._values():
            if value != HOLD_PROBES:
                self.write(name, HOLD_PROBES)
                wrote = True
        if wrote:
            LOG.info("ovs-vswitchd is restarting: %s keeps its neighbours' MACs through the restart "
                     "(ucast_solicit %s until it forwards again)", self.dev, HOLD_PROBES)
        return wrote

    def release(self) -> bool:
        """Back to the default table's values; True when something was written."""
        wrote = False
        for name, value, default in self._values():
            if value == HOLD_PROBES and default != HOLD_PROBES:
                self.write(name, default)
                wrote = True
        if wrote:
            LOG.info("ovs-vswitchd forwards: %s's neighbour probes back to the default", self.dev)
        return wrote

    def tick(self, vswitchd_up: bool, waiting: bool, connected: bool) -> None:
        if not vswitchd_up or waiting:
            self._calm_since = None
            if not self._held:
                self.hold()
                self._held = True
            return
        if not connected:
            self._calm_since = None    # the flag cannot be read: not calm yet
            return
        now = self.clock()
        if self._calm_since is None:
            self._calm_since = now
        if self._held is not False and now - self._calm_since >= self.calm:
            self.release()
            self._held = False
