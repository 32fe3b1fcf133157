"""The VM tier's lab handle: vagrant and ssh against the VMs, diagnostics, and the step timings."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from tests.helpers import REPO, wait_for

VAGRANT_DIR = os.path.join(REPO, "vagrant")
OVS_MESH = "/opt/ovs-mesh/venv/bin/ovs-mesh --config /etc/ovs-mesh/config.yaml"
CONFIG = "/etc/ovs-mesh/config.yaml"
STATUS = "/var/run/openvswitch/ovs-mesh.status.json"
# Edits dotted keys of the agent's config in place, the way an operator edits the file: a new file
# beside it, then rename (the agent re-reads the config within a second of a save). Prints the
# VM's clock after the rename: passes from then on saw the new config.
_SET_CONFIG = r"""
import json, os, sys, time, yaml
path, edits = sys.argv[1], json.loads(sys.argv[2])
with open(path) as f:
    cfg = yaml.safe_load(f)
for key, value in edits.items():
    *parents, leaf = key.split(".")
    d = cfg
    for p in parents:
        d = d.setdefault(p, {})
    if value is None:
        d.pop(leaf, None)
    else:
        d[leaf] = value
tmp = path + ".new"
with open(tmp, "w") as f:
    yaml.safe_dump(cfg, f, sort_keys=False)
os.chmod(tmp, os.stat(path).st_mode & 0o7777)
os.rename(tmp, path)
print(repr(time.time()))
"""
BOX = "ovs-mesh/bookworm"
TIMES: dict[str, float] = {}
LOADS: dict[str, str] = {}  # step -> the load average when it ended (the machine is shared)

TOOLS = ("vagrant", "virsh", "libvirtd", "virtlogd", "qemu-system-x86_64", "qemu-img", "mmdebstrap",
         "mkfs.vfat", "mcopy", "syslinux", "sfdisk", "ssh", "rsync")


class StepTimeout(AssertionError):
    pass


def run_logged(argv: list[str], log: str, timeout: float, what: str, **kw) -> subprocess.CompletedProcess:
    """ARGV with its output appended to LOG, every line prefixed with the seconds since the start.
    On timeout the whole process group (vagrant's ssh/rsync children too) is killed."""
    start = time.monotonic()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(argv)}\n")
        f.flush()
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                             start_new_session=True, **kw)
        lines: list[str] = []

        def pump():
            for line in p.stdout:
                lines.append(line)
                f.write(f"[{time.monotonic() - start:7.1f}] {line}")
                f.flush()
        t = threading.Thread(target=pump, daemon=True)
        t.start()
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            t.join(10)
            raise StepTimeout(f"{what}: no result after {timeout:.0f} s (killed); last output:\n"
                              + _clean("".join(lines))) from None
        except BaseException:  # interrupted (Ctrl-C): its own session would outlive us
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            raise
        t.join(10)
    return subprocess.CompletedProcess(argv, p.returncode, "".join(lines), "")


def _clean(out: str, keep: int = 80) -> str:
    """The messages, without progress bars and Ruby backtraces."""
    lines = [ln for ln in re.split(r"[\r\n]|\x1b\[K", out)
             if ln.strip() and "Progress:" not in ln and not ln.endswith("Retrying...")
             and not re.match(r"\s*(E\s+)?/usr/", ln)]
    return "\n".join(lines[-keep:])


# A reply line of `ping -D`: its timestamp and sequence number.
PING_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)", re.M)


def ping_result(out: str) -> tuple[float, int]:
    """(longest gap between two replies in s, pings lost) of `ping -D` output.  Lost: the sequence
    numbers up to the last one answered that got no answer; the one still in flight when the ping
    was stopped is not lost (its stop comes while traffic flows)."""
    replies = PING_REPLY.findall(out)
    assert replies, out[-2000:]
    stamps = [float(t) for t, _ in replies]
    seqs = {int(q) for _, q in replies}
    gap = max((y - x for x, y in zip(stamps, stamps[1:])), default=0.0)
    return round(gap, 2), max(seqs) - len(seqs)


class Lab:
    def __init__(self, tmp: str, prefix: str, wheels: str):
        self.tmp, self.prefix = tmp, prefix
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("OVS_MESH_", "NODES"))}
        self.console_dir = os.path.join(tmp, "console")
        os.makedirs(self.console_dir, exist_ok=True)
        os.chmod(tmp, 0o711)  # QEMU (user libvirt-qemu) writes the consoles in there
        os.chmod(self.console_dir, 0o777)
        self.env.update(NODES="3", OVS_MESH_BOX=BOX, OVS_MESH_LIBVIRT_PREFIX=prefix,
                        OVS_MESH_LIBVIRT_DRIVER=os.environ.get("OVS_MESH_LIBVIRT_DRIVER", "qemu"),
                        OVS_MESH_WHEELHOUSE=wheels, OVS_MESH_CONSOLE_LOG_DIR=self.console_dir,
                        VAGRANT_DEFAULT_PROVIDER="libvirt",
                        VAGRANT_DOTFILE_PATH=os.path.join(tmp, "dot"), VAGRANT_CHECKPOINT_DISABLE="1")
        self.nodes = ["node-1", "node-2", "node-3"]
        self.destroyed = False
        self.ssh_config = os.path.join(tmp, "ssh_config")
        self.log = os.path.join(tmp, "vagrant.log")

    def vagrant(self, *args: str, timeout: float = 900, **env) -> subprocess.CompletedProcess:
        """`vagrant ARGS` in vagrant/; its output also goes to vagrant.log in the lab's temp dir."""
        p = run_logged(["vagrant", *args], self.log, timeout, f"vagrant {' '.join(args)}", cwd=VAGRANT_DIR,
                       env={**self.env, **env})
        if p.returncode != 0:
            raise AssertionError(f"vagrant {' '.join(args)}: exit {p.returncode}\n" + _clean(p.stdout))
        return p

    def provision_all(self, timeout: float = 1500, **env) -> None:
        """`vagrant provision` of every VM at once (vagrant itself provisions one machine after
        another): one vagrant process per VM, each with its own log."""
        procs = {}
        start = time.monotonic()
        for node in self.nodes:
            log = open(os.path.join(self.tmp, f"provision-{node}.log"), "w")
            procs[node] = (subprocess.Popen(["vagrant", "provision", node], cwd=VAGRANT_DIR, env={**self.env, **env},
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log)
        failed = []
        for node, (p, log) in procs.items():
            timed_out = False
            try:
                p.wait(timeout=max(1, timeout - (time.monotonic() - start)))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                timed_out = True
            except BaseException:
                for q, _ in procs.values():
                    if q.poll() is None:
                        os.killpg(q.pid, signal.SIGKILL)
                raise
            log.close()
            with open(log.name, errors="replace") as f:
                out = f.read()
            with open(self.log, "a") as f:
                f.write(f"\n$ vagrant provision {node}  (exit {p.returncode})\n{out}")
            if timed_out:
                failed.append(f"{node}: vagrant provision: no result after {timeout:.0f} s (killed)\n{_clean(out, 40)}")
            elif p.returncode != 0:
                failed.append(f"{node}: vagrant provision: exit {p.returncode}\n{_clean(out, 40)}")
        assert not failed, "\n".join(failed)

    def refresh_ssh(self) -> None:
        self.close_ssh()
        cfg = self.vagrant("ssh-config", *self.nodes, timeout=180).stdout
        with open(self.ssh_config, "w") as f:
            f.write(cfg)
            f.write(f"\nHost *\n  ControlMaster auto\n  ControlPath {self.tmp}/cm-%n\n  ControlPersist 300\n")

    def close_ssh(self) -> None:
        if os.path.exists(self.ssh_config):
            for node in self.nodes:
                if os.path.exists(os.path.join(self.tmp, f"cm-{node}")):
                    subprocess.run(["ssh", "-F", self.ssh_config, "-O", "exit", node], capture_output=True,
                                   timeout=30)

    def ssh(self, node: str, command: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        """COMMAND as root on NODE (one shell command line)."""
        try:
            p = subprocess.run(["ssh", "-F", self.ssh_config, "-o", "BatchMode=yes", "-o", "ConnectTimeout=30",
                                node, "sudo", "sh", "-c", shlex.quote(command)],
                               capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise StepTimeout(f"{node}: {command}: no result after {timeout:.0f} s") from None
        if check:
            assert p.returncode == 0, f"{node}: {command}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    def check(self, **env) -> subprocess.CompletedProcess:
        """vagrant/check.sh across the VMs: must pass in full.  The VMs and how to reach them are
        given (no `vagrant status` or `vagrant ssh-config` per check)."""
        via = (f"ssh -F {self.ssh_config} -o BatchMode=yes -o ConnectTimeout=30 {{node}} sudo")
        p = run_logged([os.path.join(VAGRANT_DIR, "check.sh")], self.log, 900, "check.sh", cwd=VAGRANT_DIR,
                       env={**self.env, "OVS_MESH_VIA": via, "OVS_MESH_CHECK_NODES": " ".join(self.nodes), **env})
        assert p.returncode == 0, f"check.sh: exit {p.returncode}\n{p.stdout[-8000:]}"
        return p

    def on_all(self, command: str, nodes: list[str] | None = None, timeout: float = 300,
               check: bool = True) -> dict[str, subprocess.CompletedProcess]:
        """COMMAND on every node (or NODES) at once; node -> its result."""
        nodes = nodes or self.nodes
        with ThreadPoolExecutor(len(nodes)) as pool:
            results = pool.map(lambda n: self.ssh(n, command, timeout=timeout, check=check), nodes)
            return dict(zip(nodes, results))

    def read_config(self, node: str) -> dict:
        out = self.ssh(node, f"/opt/ovs-mesh/venv/bin/python -c 'import json, sys, yaml; "
                             f"json.dump(yaml.safe_load(open(\"{CONFIG}\")), sys.stdout)'").stdout
        return json.loads(out)

    def set_config(self, edits: dict, nodes: list[str] | None = None) -> dict[str, int]:
        """Edit the agent's config on NODES (default all) as an operator would: dotted keys
        ("cluster.tunnel") to new values (None removes the key). The agents follow by themselves.
        Returns node -> the VM's clock right after the save (for wait_converged)."""
        script = shlex.quote(_SET_CONFIG)
        arg = shlex.quote(json.dumps(edits))
        done = self.on_all(f"/opt/ovs-mesh/venv/bin/python -c {script} {CONFIG} {arg}", nodes)
        return {n: float(p.stdout.split()[-1]) for n, p in done.items()}

    def status(self, node: str) -> dict | None:
        """The agent's status file (what `ovs-mesh status` reads), or None while it is unreadable."""
        out = self.ssh(node, f"cat {STATUS}", check=False).stdout
        try:
            return json.loads(out)
        except ValueError:
            return None

    def _why_not_converged(self, node: str, since: float) -> str:
        """What a failed wait_converged shows: the last pass's time and problems, and the agent's
        journal since the edit (warnings and errors)."""
        status = self.status(node) or {}
        journal = self.ssh(node, f"journalctl -u ovs-mesh --no-pager -o cat --since @{int(since)} -p warning "
                                 "| tail -n 30", check=False).stdout
        return (f"{node}: last pass at {status.get('time')} (edit at {since}), problems "
                f"{status.get('problems')}\n{node}: the agent's warnings since the edit:\n{journal}")

    def reconciled_since(self, node: str, since: float) -> bool:
        """A pass that started after SINCE (the VM's clock) ended without problems.  The status file
        says when a pass ended and how long it took: a pass that began before an edit and ended
        after it read the config before the edit."""
        status = self.status(node)
        return (bool(status) and status.get("time", 0) - status.get("seconds", 0) > since
                and status.get("problems") == [])

    def wait_converged(self, since: dict[str, float] | float | None = None, nodes: list[str] | None = None,
                       timeout: float = 300, plan: bool = True) -> None:
        """Every node (or NODES) reconciled after SINCE without problems, then (PLAN) `ovs-mesh plan`
        has nothing left to change. SINCE: node -> VM clock (set_config's result), one clock value
        for all, or None (now)."""
        nodes = nodes or self.nodes
        if since is None:
            since = {n: float(p.stdout) for n, p in self.on_all("date +%s.%N", nodes).items()}
        elif isinstance(since, (int, float)):
            since = dict.fromkeys(nodes, since)
        for node in nodes:
            try:
                wait_for(lambda node=node: self.reconciled_since(node, since[node]), timeout=timeout, interval=1,
                         what=f"{node}: an ovs-mesh pass without problems")
            except AssertionError as e:
                raise AssertionError(f"{e}\n{self._why_not_converged(node, since[node])}") from None
        if plan:
            for node, p in self.on_all(f"{OVS_MESH} plan", nodes, check=False).items():
                assert p.returncode == 0 and "no changes" in p.stdout, \
                    f"{node}: ovs-mesh plan after converging: exit {p.returncode}\n{p.stdout}{p.stderr}"

    def unit_show(self, node: str, unit: str = "ovs-mesh") -> dict[str, str]:
        out = self.ssh(node, f"systemctl show {unit} -p Type -p WatchdogUSec -p NotifyAccess -p MainPID "
                             "-p NRestarts -p ActiveState -p SubState").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def pods(self, node: str, name: str = "omvp") -> dict:
        """A fresh test pod on NODE (`ovs-mesh lab pods`; a leftover of NAME removed first):
        {"ns", "ip", ...}. Remove it with `lab down --name NAME`."""
        out = self.ssh(node, f"{OVS_MESH} lab pods --replace --name {name}").stdout
        return json.loads(out)["pods"][0]

    def traffic_gap(self, a: dict, b: dict, command: str, node: str = "node-1") -> tuple[float, int]:
        """Run COMMAND on NODE under a 0.1 s ping from pod A to pod B (another VM) and wait (at most
        180 s) until B answers again. Returns (longest gap between two replies in s, pings lost)."""
        out = self.ssh(node, f"""
            log=$(mktemp); ip netns exec {a['ns']} ping -D -n -i 0.1 -W 1 {b['ip']} >"$log" 2>&1 & p=$!
            deadline=$(( $(date +%s) + 60 ))   # traffic flows before the command: 10 replies
            until [ "$(grep -c 'bytes from' "$log")" -ge 10 ] || [ "$(date +%s)" -gt "$deadline" ]; do sleep 0.2; done
            {command}
            echo "command-done $(date +%s.%N)"
            # Back = 20 more replies after the command returned (while it runs, the old flows may still answer).
            after=$(grep -c 'bytes from' "$log")
            deadline=$(( $(date +%s) + 180 ))
            until [ "$(grep -c 'bytes from' "$log")" -gt "$((after + 20))" ] || [ "$(date +%s)" -gt "$deadline" ]; do
              sleep 0.5
            done
            kill -INT $p; wait $p; cat "$log"; rm -f "$log"
        """, timeout=400, check=False).stdout
        self.last_ping = out
        stamps = [float(t) for t, _ in PING_REPLY.findall(out)]
        done = re.search(r"^command-done (\d+\.\d+)", out, re.M)
        assert done and stamps, f"`{command}` under ping:\n{out[-3000:]}"
        assert stamps[-1] > float(done.group(1)), f"no pod traffic after `{command}` within 180 s:\n{out[-3000:]}"
        return ping_result(out)

    def diagnostics(self) -> str:
        """What to look at when a step failed: each VM's units, the agent's and OVS's journal, the
        datapath, and the tail of its serial console; the end of vagrant's log."""
        out = []
        for node in self.nodes:
            out.append(f"===== {node}")
            try:
                if not os.path.exists(self.ssh_config):
                    raise OSError("no ssh config: the VMs did not come up")
                p = self.ssh(node, "systemctl --failed --no-legend; systemctl is-active ovs-mesh openvswitch-switch; "
                                   "journalctl -b --no-pager -n 60 -u ovs-mesh; "
                                   "journalctl -b --no-pager -n 20 -u ovs-vswitchd -u ovsdb-server; "
                                   "ovs-vsctl show | head -40; ovs-dpctl show", timeout=60, check=False)
                out.append(p.stdout + p.stderr)
            except (StepTimeout, OSError) as e:
                out.append(f"(ssh: {e})")
            console = os.path.join(self.console_dir, f"{node}.log")
            if os.path.exists(console):
                with open(console, errors="replace") as f:  # without colours and "Job ... running" spinners
                    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", f.read())
                lines = [ln for ln in re.split(r"[\r\n]+", text) if ln.strip() and "running (" not in ln]
                out.append(f"--- {node} serial console (last 40 lines)\n" + "\n".join(lines[-40:]))
        if os.path.exists(self.log):
            with open(self.log, errors="replace") as f:
                out.append("===== vagrant.log (last 60 lines)\n" + "".join(f.readlines()[-60:]))
        return "\n".join(out)


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def timed(name: str):
    class _T:
        def __enter__(self):
            self.t = time.monotonic()

        def __exit__(self, *exc):
            TIMES[name] = round(time.monotonic() - self.t, 1)
            LOADS[name] = loadavg()
    return _T()
