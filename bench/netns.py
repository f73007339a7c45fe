"""Several machines on this one: Linux network namespaces joined by a bridge, for running
`mpiexec` across hosts in the test suite (tests/test_distributed.py) and in `bench.scaling`.

    reason = netns.unavailable()            # None, or why namespaces cannot be made here
    with netns.VirtualCluster(hosts=2) as cluster:
        before = cluster.link_bytes()
        subprocess.run(cluster.mpiexec(2, [sys.executable, "train.py"]), env=cluster.env())
        sent = {host: cluster.link_bytes()[host]["sent"] - before[host]["sent"] ...}

Layout (names carry this process's id and a random tag, so runs never collide):

    namespace PREFIX-sw:  bridge br0, ports p1 .. pN        (the switch)
    namespace PREFIX-h1:  lo, eth0 10.77.0.1/24 -- veth -- p1
    namespace PREFIX-h2:  lo, eth0 10.77.0.2/24 -- veth -- p2   ...

Nothing is added to the namespace this process runs in: each veth pair is made inside the
switch's namespace and one end moved into its host's, so all traffic stays between namespaces
made here. The addresses are private to them and cannot clash with the machine's own.

How mpiexec (MPICH's Hydra) reaches the hosts, as it would reach machines over ssh:
- it runs inside the first host's namespace (`ip netns exec PREFIX-h1 mpiexec ...`), the
  machine one launches from;
- `-f HOSTFILE` lists the hosts' addresses ("10.77.0.1:1" ...), one process each by default;
- `-launcher ssh -launcher-exec LAUNCHER`: Hydra calls LAUNCHER as it calls ssh,
  `LAUNCHER -x HOST "proxy" ARGS...`, for every host but its own; the generated script runs
  the command with `ip netns exec PREFIX-hN sh -c "..."`, as ssh runs it in the remote shell;
- `-localhost 10.77.0.1`: the address the proxies call back to (Hydra's default, the host
  name's address, is not reachable from the other namespaces on most machines);
- environment: UCX_TLS=tcp,self (MPICH's UCX transport held to TCP), UCX_NET_DEVICES=eth0
  (the veth, not lo), MPIR_CVAR_CH4_NETMOD=ucx (not the OFI one). Hydra passes the environment
  on to every process.

`close()` (or leaving the `with`) kills whatever still runs inside the namespaces (only
processes started there by this cluster) and deletes them, on failure too.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

MPIEXEC = Path(sys.executable).parent / "mpiexec"
SUBNET = "10.77.0"  # host N is SUBNET.N/24
DEVICE = "eth0"  # each host's end of its veth
TRANSPORT = {"UCX_TLS": "tcp,self", "UCX_NET_DEVICES": DEVICE, "MPIR_CVAR_CH4_NETMOD": "ucx"}
LAUNCHER = """#!/bin/sh
# Hydra starts a proxy on a host as it would through ssh: LAUNCHER [-x] HOST COMMAND...
# Each host is a network namespace: run COMMAND there, through a shell, as sshd would.
[ "$1" = "-x" ] && shift
host=$1
shift
case $host in
{cases}
esac
echo "launcher: unknown host $host" >&2
exit 255
"""


class ClusterError(RuntimeError):
    """A namespace, link or address could not be made; the message has ip's own words."""


def ip(*arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    completed = subprocess.run(["ip", *arguments], capture_output=True, text=True)
    if check and completed.returncode != 0:
        raise ClusterError(f"`ip {' '.join(arguments)}` failed: {completed.stderr.strip()}")
    return completed


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux's; this is {sys.platform}"
    if os.geteuid() != 0:
        return "making network namespaces needs root (CI runs as root)"
    if shutil.which("ip") is None:
        return "the `ip` command is missing: apt-get install iproute2"
    if not MPIEXEC.exists():
        return f"needs {MPIEXEC}: pip install 'convnet[mpi]'"
    probe = f"cnprobe{os.getpid()}{secrets.token_hex(2)}"
    made = ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed here: {made.stderr.strip()}"
    try:  # entering one needs more than making one (mounting its /sys, in some containers)
        entered = ip("netns", "exec", probe, "true", check=False)
        if entered.returncode != 0:
            return f"`ip netns exec` failed here: {entered.stderr.strip()}"
    finally:
        ip("netns", "del", probe, check=False)
    return None


class VirtualCluster:
    """`hosts` network namespaces on one bridge; see the module docstring."""

    def __init__(self, hosts: int = 2):
        if not 2 <= hosts <= 250:
            raise ValueError(f"VirtualCluster: hosts must be in [2, 250], received {hosts}")
        self.prefix = f"cn{os.getpid()}{secrets.token_hex(2)}"
        self.switch = f"{self.prefix}-sw"
        self.hosts = [f"{self.prefix}-h{i}" for i in range(1, hosts + 1)]
        self.addresses = [f"{SUBNET}.{i}" for i in range(1, hosts + 1)]
        self.folder = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self.hostfile = self.folder / "hosts"
        self.launcher = self.folder / "launcher"
        self._made: list[str] = []

    def __enter__(self) -> VirtualCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self) -> None:
        for name in [self.switch, *self.hosts]:
            ip("netns", "add", name)
            self._made.append(name)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        for index, (host, address) in enumerate(zip(self.hosts, self.addresses, strict=True)):
            port = f"p{index + 1}"
            ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", DEVICE,
               "netns", host)
            ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            ip("-n", host, "addr", "add", f"{address}/24", "dev", DEVICE)
            ip("-n", host, "link", "set", DEVICE, "up")
            ip("-n", host, "link", "set", "lo", "up")
        self.hostfile.write_text("".join(f"{address}:1\n" for address in self.addresses))
        cases = "\n".join(f'  {address}) exec ip netns exec {host} sh -c "$*" ;;'
                          for host, address in zip(self.hosts, self.addresses, strict=True))
        self.launcher.write_text(LAUNCHER.format(cases=cases))
        self.launcher.chmod(0o755)

    def mpiexec(self, processes: int, command: list[str]) -> list[str]:
        """The command line that runs `command` on `processes` processes spread over the
        hosts (one per host, round robin past that), launched from the first host."""
        return ["ip", "netns", "exec", self.hosts[0], str(MPIEXEC), "-f", str(self.hostfile),
                "-launcher", "ssh", "-launcher-exec", str(self.launcher),
                "-localhost", self.addresses[0], "-n", str(processes), *command]

    @staticmethod
    def env(base: dict | None = None) -> dict:
        """`base` (default: this process's environment) with MPI held to TCP over eth0."""
        return {**(os.environ if base is None else base), **TRANSPORT}

    def link_bytes(self) -> dict[str, dict[str, int]]:
        """{host: {"sent": bytes, "received": bytes}} counted on each host's eth0 so far."""
        counts = {}
        for host in self.hosts:
            link = json.loads(ip("-n", host, "-s", "-j", "link", "show", "dev", DEVICE).stdout)
            stats = link[0]["stats64"]
            counts[host] = {"sent": stats["tx"]["bytes"], "received": stats["rx"]["bytes"]}
        return counts

    def close(self) -> None:
        """Kill what still runs in the namespaces, delete them and the scratch folder."""
        for name in reversed(self._made):
            pids = ip("netns", "pids", name, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            ip("netns", "del", name, check=False)
        self._made.clear()
        shutil.rmtree(self.folder, ignore_errors=True)

    def exists(self) -> list[str]:
        """The names of this cluster's namespaces that still exist (none after close)."""
        listed = ip("netns", "list", check=False).stdout.split()
        return [name for name in [self.switch, *self.hosts] if name in listed]


__all__ = ["VirtualCluster", "ClusterError", "unavailable", "TRANSPORT"]
