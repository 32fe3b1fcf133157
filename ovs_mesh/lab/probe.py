"""What `lab check` runs inside a pod or node namespace (`python -m ovs_mesh.lab.probe`).

serve:  a UDP echo that answers with the source address it saw (proves no
        NAT between pods) and a TCP sink that answers with the byte count.
probe:  reads a JSON job on stdin, pings/echoes every target in parallel with
        retries under a deadline, pings with DF at full MTU, runs TCP
        transfers, and prints the results as JSON.
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


def serve(port: int = PORT) -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", port))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("0.0.0.0", port))
    tcp.listen(16)

    def echo():
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

    threading.Thread(target=echo, daemon=True).start()
    threading.Thread(target=until_stdin_closes, daemon=True).start()
    print("ready", flush=True)
    while True:
        conn, _ = tcp.accept()
        threading.Thread(target=sink, args=(conn,), daemon=True).start()


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
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
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
        size = mtu - 28
        out["df_size"] = size
        out["df"] = out["ping"] and _until(max(deadline, time.monotonic() + 3),
                                           lambda: _ping(t["ip"], ("-M", "do", "-s", str(size))))
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
