"""What `lab check` runs inside a pod or node namespace (`python -m ovs_mesh.lab.probe`).

serve:  a UDP echo that answers with the source address it saw (proves no
        NAT between pods) and a TCP sink that answers with the byte count,
        on IPv4 and on IPv6 (each its own socket: addresses as they are).
probe:  reads a JSON job on stdin, pings/echoes every target in parallel with
        retries under a deadline, pings unfragmented at the full MTU (and one
        byte more, which must be refused), runs TCP transfers, and prints the
        results as JSON.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

PORT = 7777


HEADER = {4: 28, 6: 48}   # IP + ICMP header bytes around a ping's payload, per IP version


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _sockets(kind: int, port: int) -> list[socket.socket]:
    """One socket per family on `port` (IPv6 only on IPv6: sources are seen as sent); no
    IPv6 socket where the kernel has IPv6 off (a machine of an IPv4-only lab)."""
    out = []
    for family, any_addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            s = socket.socket(family, kind)
        except OSError:
            if family == socket.AF_INET:
                raise
            continue
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((any_addr, port))
        if kind == socket.SOCK_STREAM:
            s.listen(16)
        out.append(s)
    return out


def serve(port: int = PORT) -> None:
    def echo(udp):
        while True:
            data, addr = udp.recvfrom(2048)
            udp.sendto(f"{addr[0]} {data.decode(errors='replace')}".encode(), addr)

    def sink(conn):
        total = 0
        with conn:
            while True:
                chunk = conn.recv(1 << 16)
                if not chunk:
                    break
                total += len(chunk)
            conn.sendall(str(total).encode())

    def until_stdin_closes():
        sys.stdin.read()
        os._exit(0)

    def accept(tcp):
        while True:
            conn, _ = tcp.accept()
            threading.Thread(target=sink, args=(conn,), daemon=True).start()

    for udp in _sockets(socket.SOCK_DGRAM, port):
        threading.Thread(target=echo, args=(udp,), daemon=True).start()
    tcps = _sockets(socket.SOCK_STREAM, port)
    threading.Thread(target=until_stdin_closes, daemon=True).start()
    for tcp in tcps[1:]:
        threading.Thread(target=accept, args=(tcp,), daemon=True).start()
    print("ready", flush=True)
    accept(tcps[0])


def _until(deadline: float, attempt) -> bool:
    while True:
        if attempt():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _ping(ip: str, extra=()) -> bool:
    return subprocess.run(["ping", "-n", "-q", "-c1", "-W1", *extra, ip], capture_output=True).returncode == 0


def _echo(ip: str, token: str) -> str | None:
    with socket.socket(_family(ip), socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        try:
            s.sendto(token.encode(), (ip, PORT))
            data, _ = s.recvfrom(2048)
        except OSError:
            return None
    seen, _, tok = data.decode(errors="replace").partition(" ")
    return seen if tok == token else None


def _mtu(ifname: str) -> int:
    with open(f"/sys/class/net/{ifname}/mtu") as f:
        return int(f.read())


def probe_target(t: dict, timeout: float, mtu: int) -> dict:
    """Ping (and optionally echo, DF ping) one target; unexpected targets get a short deadline."""
    deadline = time.monotonic() + (timeout if t.get("expect", True) else min(timeout, 3))
    out = {"ip": t["ip"], "ping": _until(deadline, lambda: _ping(t["ip"]))}
    if t.get("echo"):
        seen = []
        ok = _until(deadline if out["ping"] else time.monotonic(),
                    lambda: bool(seen.append(_echo(t["ip"], f"{time.monotonic_ns()}")) or seen[-1]))
        out["source_seen"] = seen[-1] if ok else None
    if t.get("df"):
        size = mtu - HEADER[6 if _family(t["ip"]) == socket.AF_INET6 else 4]
        out["df_size"] = size
        out["df"] = out["ping"] and _until(max(deadline, time.monotonic() + 3),
                                           lambda: _ping(t["ip"], ("-M", "do", "-s", str(size))))
        # One byte more does not fit: refused ("message too long") or lost, never fragmented.
        out["over_refused"] = not _ping(t["ip"], ("-M", "do", "-s", str(size + 1)))
    return out


def tcp_send(ip: str, nbytes: int, timeout: float) -> dict:
    start = time.monotonic()
    chunk = b"\0" * (1 << 16)
    try:
        with socket.create_connection((ip, PORT), timeout=timeout) as s:
            s.settimeout(timeout)
            left = nbytes
            while left:
                left -= s.send(chunk[:min(left, len(chunk))])
            s.shutdown(socket.SHUT_WR)
            reply = s.recv(64).decode()
        received = int(reply or 0)
        err = None
    except (OSError, ValueError) as e:
        received, err = 0, f"{type(e).__name__}: {e}"
    secs = time.monotonic() - start
    return {"dst": ip, "bytes": nbytes, "received": received, "seconds": round(secs, 3),
            "mbit_s": round(received * 8 / secs / 1e6, 1) if secs else 0, "error": err,
            "ok": received == nbytes}


def probe(job: dict) -> dict:
    timeout = job.get("timeout", 20)
    mtu = _mtu(job.get("ifname", "eth0")) if any(t.get("df") for t in job["targets"]) else 0
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(job["targets"])))) as ex:
        results = list(ex.map(lambda t: probe_target(t, timeout, mtu), job["targets"]))
    tcp = [tcp_send(t["ip"], t["bytes"], timeout) for t in job.get("tcp", [])]
    return {"mtu": mtu, "targets": results, "tcp": tcp}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "serve":
        serve()
        return 0
    print(json.dumps(probe(json.load(sys.stdin))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
