"""A one-way delay line between two interfaces of one namespace, for kernels without
netem: every frame arriving on `slow_in` leaves on `slow_out` DELAY seconds later,
every frame arriving on `slow_out` leaves on `slow_in` at once.  Run inside the
namespace: `python delay.py SLOW_IN SLOW_OUT SECONDS`; it runs until killed."""
import heapq
import select
import socket
import sys
import time

ETH_P_ALL = 0x0003


def open_raw(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((ifname, 0))
    s.setblocking(False)
    return s


def main(slow_in: str, slow_out: str, delay: float) -> None:
    a, b = open_raw(slow_in), open_raw(slow_out)
    peer = {a: b, b: a}
    queue: list[tuple[float, int, bytes]] = []
    n = 0
    print("ready", flush=True)
    while True:
        wait = max(0.0, queue[0][0] - time.monotonic()) if queue else 1.0
        ready, _, _ = select.select([a, b], [], [], wait)
        for s in ready:
            while True:
                try:
                    frame, addr = s.recvfrom(65535)
                except BlockingIOError:
                    break
                if addr[2] == socket.PACKET_OUTGOING:   # our own sends, seen again
                    continue
                if s is a:
                    n += 1
                    heapq.heappush(queue, (time.monotonic() + delay, n, frame))
                else:
                    peer[s].send(frame)
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            b.send(heapq.heappop(queue)[2])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
