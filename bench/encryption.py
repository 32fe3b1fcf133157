"""What encryption costs on the kernel datapath: TCP throughput (iperf3) and ping RTT between pods on
two VMs, side by side for `cluster.encryption` none, ipsec (CA-signed certificates) and wireguard, in
the same VMs, one after the other, on one tunnel type in flow mode (VXLAN, the default; --tunnel).

The VMs are the VM tier's (tests/vm): 3 Debian 12 VMs of 1 vCPU under software emulation (TCG),
booted by the tier's own code, destroyed at the end.  Each mode is switched on by editing every
agent's config, as an operator does; once pod traffic flows (and IPsec's SAs or WireGuard's
handshakes are up) and pods made anew (a pod's MTU is fixed when it is made: each mode's pod MTU):
iperf3 -t SECONDS from node-1's pod to node-2's pod (the receiver's rate and the sender's
retransmissions), then 200 pings at 0.05 s (min/avg/max/mdev).  Under emulation the
absolute figures say little about real hardware: the ratio to `none` is what compares, and even it
is an upper bound of the cost (the emulated CPU does the cipher in software, without AES-NI).

Run (root, the VM tier's tools installed: `./run test` installs them):
    .venv/bin/python -m bench.encryption [--seconds 10] [--tunnel vxlan|geneve|gre] [--no-write]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "results", "encryption.json")
MODES = ("none", "ipsec", "wireguard")
PODS = "bep"


def measure(lab, a: dict, b: dict, seconds: int) -> dict:
    """iperf3 then ping from pod A (node-1) to pod B (node-2)."""
    lab.ssh("node-2", f"ip netns exec {b['ns']} iperf3 -s -1 -D -p 5202 -I /tmp/bep-iperf.pid")
    deadline = time.monotonic() + 30
    while ":5202" not in lab.ssh("node-2", f"ip netns exec {b['ns']} ss -Hltn", check=False).stdout:
        if time.monotonic() > deadline:
            raise AssertionError("the iperf3 server did not listen")
        time.sleep(0.5)
    out = lab.ssh("node-1", f"ip netns exec {a['ns']} iperf3 -c {b['ip']} -p 5202 -t {seconds} -J",
                  timeout=seconds + 120).stdout
    end = json.loads(out)["end"]
    ping = lab.ssh("node-1", f"ip netns exec {a['ns']} ping -q -n -c 200 -i 0.05 -W 2 {b['ip']}").stdout
    rtt = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", ping)
    lost = re.search(r"(\d+)% packet loss", ping)
    mtu = lab.ssh("node-1", f"ip netns exec {a['ns']} cat /sys/class/net/eth0/mtu").stdout.strip()
    return {"tcp_mbit_s": round(end["sum_received"]["bits_per_second"] / 1e6, 1),
            "retransmits": end["sum_sent"].get("retransmits"),
            "rtt_ms": dict(zip(("min", "avg", "max", "mdev"), (float(x) for x in rtt.groups()))),
            "ping_loss_percent": int(lost.group(1)), "pod_mtu": int(mtu)}


def run(seconds: int, tunnel: str = "vxlan") -> dict:
    from tests.vm import conftest as vm
    from tests.vm.crypto import warm_up_pods
    from tests.vm.test_50_encryption import (
        CA,
        CERT,
        KEY,
        OFF,
        esp_states,
        install_credentials,
        make_certs,
        remove_credentials,
    )
    from tests.vm.vmlab import OVS_MESH

    tmp = tempfile.mkdtemp(prefix="bench-enc-", dir="/tmp")
    boot = vm._lab(tmp)
    results: dict = {}
    try:
        lab = next(boot)
        nodes = lab.read_config("node-1")["nodes"]
        pods: dict = {}

        def switch(edits: dict, what: str) -> None:
            """EDITS converged, then new pods (a pod's MTU is set when it is made: the mode's pod MTU)."""
            print(f"bench.encryption: {what}", file=sys.stderr, flush=True)
            lab.wait_converged(lab.set_config(edits))
            pods.update({n: lab.pods(n, PODS) for n in lab.nodes})
            warm_up_pods(lab, pods, what, timeout=240)

        def measured() -> dict:
            return measure(lab, pods["node-1"], pods["node-2"], seconds)

        switch({"cluster.tunnel": tunnel}, f"{tunnel}, no encryption")
        results["none"] = measured()

        with tempfile.TemporaryDirectory(prefix="bench-enc-certs-") as d:
            install_credentials(lab, make_certs(lab.nodes, d))
        switch({"cluster.encryption": "ipsec", "cluster.ipsec_auth": "certificate", "local.certificate": CERT,
                "local.private_key": KEY, "local.ca_cert": CA}, "IPsec (certificates)")
        for node in ("node-1", "node-2"):
            deadline = time.monotonic() + 180
            while esp_states(lab, node) < 2 * (len(lab.nodes) - 1):
                if time.monotonic() > deadline:
                    raise AssertionError(f"{node}: no ESP SA each way with each peer")
                time.sleep(2)
        results["ipsec"] = measured()
        print("bench.encryption: no encryption again", file=sys.stderr, flush=True)
        lab.wait_converged(lab.set_config({**OFF, "cluster.tunnel": tunnel}))
        remove_credentials(lab)

        keys = {n: p.stdout.strip() for n, p in lab.on_all(f"{OVS_MESH} wireguard-key").items()}
        lab.wait_converged(lab.set_config({"nodes": [{**n, "wireguard_public_key": keys[n["name"]]} for n in nodes]}))
        switch({"cluster.encryption": "wireguard"}, "WireGuard")
        results["wireguard"] = measured()
    finally:
        boot.close()   # vagrant destroy, whatever happened
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def table(results: dict) -> str:
    base = results["none"]["tcp_mbit_s"]
    rows = ["| mode | pod MTU | TCP Mbit/s | of none | retransmits | RTT avg ms | RTT mdev ms | ping loss |",
            "|---|---|---|---|---|---|---|---|"]
    for mode in MODES:
        r = results.get(mode)
        if r is None:
            continue
        rows.append(f"| {mode} | {r['pod_mtu']} | {r['tcp_mbit_s']} | {r['tcp_mbit_s'] / base:.0%} | "
                    f"{r['retransmits']} | {r['rtt_ms']['avg']} | {r['rtt_ms']['mdev']} | "
                    f"{r['ping_loss_percent']} % |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.encryption", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=10, help="iperf3's duration per mode (default 10)")
    ap.add_argument("--tunnel", choices=("vxlan", "geneve", "gre"), default="vxlan",
                    help="cluster.tunnel for every mode (default vxlan)")
    ap.add_argument("--no-write", action="store_true", help=f"do not write {os.path.relpath(RESULTS, REPO)}")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.encryption: run as root (it boots VMs with vagrant-libvirt)", file=sys.stderr)
        return 2
    if not 1 <= args.seconds <= 600:
        print(f"bench.encryption: --seconds: {args.seconds}: must be between 1 and 600", file=sys.stderr)
        return 2
    sys.path.insert(0, REPO)
    from bench.control_plane import write_results

    started, load = time.time(), os.getloadavg()
    results = run(args.seconds, args.tunnel)
    print(table(results))
    if not args.no_write:
        write_results(RESULTS, started, load, benchmark="bench.encryption", setup=SETUP.format(tunnel=args.tunnel),
                      iperf3_seconds=args.seconds,
                      results=results, tcp_of_none=tcp_of_none(results))
    return 0


SETUP = ("3 Debian 12 VMs (1 vCPU, 1 GiB, qemu TCG software emulation) on the host; {tunnel}, flow mode; "
         "pods on node-1 and node-2, made after each switch")


def tcp_of_none(results: dict) -> dict:
    return {m: round(results[m]["tcp_mbit_s"] / results["none"]["tcp_mbit_s"], 3) for m in MODES if m in results}


if __name__ == "__main__":
    sys.exit(main())
