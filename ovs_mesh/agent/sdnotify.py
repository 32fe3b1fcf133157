"""systemd's sd_notify protocol, spoken directly (no libsystemd binding needed).

A service of Type=notify tells systemd it is ready (READY=1), what it is doing
(STATUS=...), that it is alive (WATCHDOG=1, at least every WATCHDOG_USEC) and
that it is stopping (STOPPING=1), by sending datagrams to the unix socket named
in $NOTIFY_SOCKET (a leading '@' means the abstract namespace).  Outside
systemd the variable is unset and every call is a cheap no-op.
"""
from __future__ import annotations

import logging
import os
import socket

LOG = logging.getLogger(__name__)


class SdNotify:
    def __init__(self, environ: dict | None = None):
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET") or None
        if addr and addr.startswith("@"):
            addr = "\0" + addr[1:]
        self.address = addr
        self.watchdog_seconds = self._watchdog(env)
        self._sock: socket.socket | None = None
        self._warned = False

    @staticmethod
    def _watchdog(env) -> float | None:
        """The watchdog interval meant for this process, or None."""
        try:
            usec = int(env.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        pid = env.get("WATCHDOG_PID")
        if pid and pid.isdigit() and int(pid) != os.getpid():
            return None
        return usec / 1e6 if usec > 0 else None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send `KEY=VALUE` lines in one datagram; False when not under systemd or on error."""
        if not self.address:
            return False
        msg = "\n".join(fields).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(msg, self.address)
            return True
        except OSError as e:
            if not self._warned:  # say it once; systemd may simply have gone away
                LOG.warning("sd_notify to %r failed: %s", self.address, e)
                self._warned = True
            return False

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
