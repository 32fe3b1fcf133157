"""The WireGuard device as the kernel holds it, through wireguard-tools' `wg` (the only I/O of it).

Reads go through `wg show DEV dump`, whose first line starts with the device's private key and
whose peer lines carry each peer's preshared key: `parse_dump` drops both fields before anything
else looks at the text, and no error message ever quotes the output.  Writes are one `wg set`
(listen port, the private key by its file's path, every peer's endpoint and allowed address, the
peers that are no longer wanted removed): idempotent, so an interrupted apply is finished by the
next one.
"""
from __future__ import annotations

import dataclasses
import subprocess
import time

from .wireguard import WgPeer

WG = "wg"
# WireGuard's REJECT_AFTER_TIME: a session older than this carries nothing until the next handshake.
SESSION_SECONDS = 180


@dataclasses.dataclass(frozen=True)
class DeviceView:
    """What `wg show DEV dump` says, without the private and preshared keys."""
    public_key: str | None
    port: int
    peers: tuple[WgPeer, ...]
    handshakes: dict[str, int]        # peer public key -> latest handshake (unix time, 0: never)


class WgError(RuntimeError):
    pass


def parse_dump(text: str) -> DeviceView:
    """`wg show DEV dump`: line 1 private-key, public-key, listen-port, fwmark; then per peer
    public-key, preshared-key, endpoint, allowed-ips, latest-handshake, rx, tx, keepalive."""
    lines = [l.split("\t") for l in text.splitlines() if l.strip()]
    if not lines or len(lines[0]) < 4:
        raise WgError("wg show dump: no device line")
    head = lines[0][1:]                    # the private key (field 0) is dropped here
    public = None if head[0] == "(none)" else head[0]
    port = int(head[1])
    peers, shakes = [], {}
    for f in lines[1:]:
        if len(f) < 8:
            raise WgError("wg show dump: a peer line with fewer than 8 fields")
        key, endpoint, allowed, shake = f[0], f[2], f[3], f[4]   # f[1], the preshared key, is skipped
        allowed_ip = "" if allowed == "(none)" else ",".join(sorted(allowed.split(",")))
        peers.append(WgPeer(key, "" if endpoint == "(none)" else endpoint, allowed_ip))
        shakes[key] = int(shake)
    return DeviceView(public, port, tuple(sorted(peers)), shakes)


def set_args(device: str, port: int, key_file: str, want: tuple[WgPeer, ...], have: tuple[WgPeer, ...]) -> list[str]:
    """The one `wg set` that makes the device hold exactly `want` (pure)."""
    args = [WG, "set", device, "listen-port", str(port), "private-key", key_file]
    wanted = {p.public_key for p in want}
    for p in have:
        if p.public_key not in wanted:
            args += ["peer", p.public_key, "remove"]
    for p in want:
        args += ["peer", p.public_key, "endpoint", p.endpoint, "allowed-ips", p.allowed_ip]
    return args


def _run(args: list[str], what: str) -> str:
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise WgError(f"{what}: {e.__class__.__name__}") from None
    if p.returncode != 0:
        # stderr only: wg never prints a key there, stdout may hold one
        raise WgError(f"{what}: exit {p.returncode}: {p.stderr.strip()[:300]}")
    return p.stdout


def read(device: str) -> DeviceView:
    return parse_dump(_run([WG, "show", device, "dump"], f"wg show {device} dump"))


def configure(device: str, port: int, key_file: str, want: tuple[WgPeer, ...], have: tuple[WgPeer, ...]) -> None:
    _run(set_args(device, port, key_file, want, have), f"wg set {device}")


@dataclasses.dataclass(frozen=True)
class PeerWireguard:
    """One peer's WireGuard as `status` and the metrics show it (the same fields as IPsec's)."""
    policy: bool                    # the device has this peer: its tunnel traffic can only go encrypted
    handshake_age: float | None     # seconds since the latest handshake (None: never)

    @property
    def state(self) -> str:
        if not self.policy:
            return "no-peer"
        if self.handshake_age is None:
            return "no-handshake"
        return "up" if self.handshake_age < SESSION_SECONDS else "stale"

    @property
    def sa_age_seconds(self) -> float | None:
        return self.handshake_age

    def as_dict(self) -> dict:
        return {"mode": "wireguard", "encrypted": self.policy, "state": self.state,
                "sa_age_seconds": self.handshake_age}


def peer_states(view: DeviceView | None, keys: dict[str, str | None], now: float) -> dict[str, PeerWireguard]:
    """Each peer (name -> its public key from the inventory) -> its PeerWireguard (pure)."""
    have = {p.public_key for p in view.peers} if view is not None else set()
    out = {}
    for name, key in keys.items():
        shake = view.handshakes.get(key or "", 0) if view is not None else 0
        out[name] = PeerWireguard(policy=bool(key) and key in have,
                                  handshake_age=round(max(0.0, now - shake), 1) if shake else None)
    return out


def read_peers(device: str, keys: dict[str, str | None]) -> dict[str, PeerWireguard]:
    """The device's view now (no device, or no `wg`: every peer `no-peer`)."""
    try:
        view: DeviceView | None = read(device)
    except WgError:
        view = None
    return peer_states(view, keys, time.time())


def peer_reader(config):
    """For the agent's metrics: a function giving each peer's name -> its PeerWireguard when
    scraped (None without WireGuard)."""
    from topology.mesh import peers_of

    from .wireguard import DEVICE

    if config.cluster.encryption != "wireguard":
        return None
    keys = {p.name: p.wireguard_key for p in peers_of(config.cluster, config.nodes, config.local.node)}
    return lambda: read_peers(DEVICE, keys)
