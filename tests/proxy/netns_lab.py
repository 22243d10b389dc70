"""A throwaway network namespace standing in for a worker node, so that the proxy programs real
iptables without ever touching the host's tables.

Inside it: loopback, also holding the "pod" addresses the backends bind to (this kernel has no dummy
interfaces), and a veth to the host on a random link-local /30 — the only way to the API server,
which listens on the host end. Service addresses are routed into a veth pair whose both ends are in
the namespace, where anything not DNATed dies: a missing rule shows up as a timeout inside the
namespace, never as traffic leaving the machine.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
POD_IPS = ("10.244.1.10", "10.244.1.11")
SERVICE_CIDR = "10.96.0.0/12"
BACKEND_PORT = 8080


def missing_requirements() -> str | None:
    """Why the namespace test cannot run here (the skip reason), or None."""
    if os.geteuid() != 0:
        return "the proxy namespace test needs root (ip netns, iptables)"
    for binary in ("ip", "iptables-save", "iptables-restore", "curl"):
        if shutil.which(binary) is None:
            return f"{binary} is not installed"
    return None


def sh(*argv: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


@dataclass
class NetnsLab:
    name: str
    host_if: str
    host_ip: str
    ns_ip: str
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def exec(self, *argv: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.name, *argv, check=check, timeout=timeout)

    def popen(self, *argv: str, **kw: object) -> subprocess.Popen[str]:
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, *argv], text=True, **kw)  # type: ignore[call-overload]
        self.processes.append(proc)
        return proc

    def iptables_save(self) -> str:
        return self.exec("iptables-save").stdout

    def curl(self, url: str, times: int = 1, max_time: float = 2.0) -> list[str]:
        """The bodies of ``times`` fresh connections to ``url`` from inside the namespace ("" = failed)."""
        script = f'for i in $(seq {times}); do curl -s --max-time {max_time} "$0"; echo "@@$?"; done'
        out = self.exec("sh", "-c", script, url, timeout=times * (max_time + 1) + 10).stdout
        return [body.strip() for body in re.split(r"@@\d+\n", out)[:-1]]


def _veth_addresses() -> tuple[str, str]:
    # A random /30 in link-local space, clear of 169.254.169.254 (cloud metadata).
    third = random.randint(100, 199)
    base = 4 * random.randint(1, 62)
    return f"169.254.{third}.{base + 1}", f"169.254.{third}.{base + 2}"


@contextmanager
def netns_lab(tmp: Path) -> Iterator[NetnsLab]:
    tag = secrets.token_hex(3)
    lab = NetnsLab(f"mkpy-proxy-test-{tag}", f"mkpy{tag}h", *_veth_addresses())
    sh("ip", "netns", "add", lab.name)
    try:
        sh("ip", "link", "add", lab.host_if, "type", "veth", "peer", "name", "veth0", "netns", lab.name)
        # No IPv6 autoconfiguration chatter on the link: nothing but our own traffic crosses it.
        sh("ip", "link", "set", lab.host_if, "addrgenmode", "none")
        sh("ip", "addr", "add", f"{lab.host_ip}/30", "dev", lab.host_if)
        sh("ip", "link", "set", lab.host_if, "up")
        lab.exec("ip", "link", "set", "lo", "up")
        lab.exec("ip", "link", "set", "veth0", "addrgenmode", "none")
        lab.exec("ip", "addr", "add", f"{lab.ns_ip}/30", "dev", "veth0")
        lab.exec("ip", "link", "set", "veth0", "up")
        for ip in POD_IPS:
            lab.exec("ip", "addr", "add", f"{ip}/32", "dev", "lo")
        # Connecting needs a route to the service range; a veth pair with both ends in the namespace
        # (which does not forward) is a dead end for whatever the rules do not DNAT.
        lab.exec("ip", "link", "add", "svc0", "type", "veth", "peer", "name", "svc1")
        for dev in ("svc0", "svc1"):
            lab.exec("ip", "link", "set", dev, "addrgenmode", "none")
            lab.exec("ip", "link", "set", dev, "up")
        lab.exec("ip", "route", "add", SERVICE_CIDR, "dev", "svc0")
        yield lab
    finally:
        for proc in lab.processes:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        sh("ip", "link", "del", lab.host_if, check=False)
        sh("ip", "netns", "del", lab.name, check=False)


def start_backends(lab: NetnsLab, tmp: Path) -> dict[str, str]:
    """A tiny HTTP server on each pod address answering its own name; pod IP -> name."""
    names = {}
    for i, ip in enumerate(POD_IPS):
        name = f"backend-{'ab'[i]}"
        root = tmp / name
        root.mkdir()
        (root / "index.html").write_text(name + "\n")
        lab.popen(sys.executable, "-m", "http.server", str(BACKEND_PORT), "--bind", ip,
                  "--directory", str(root),
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        names[ip] = name
    wait_for(lambda: all(lab.curl(f"http://{ip}:{BACKEND_PORT}/") == [n] for ip, n in names.items()),
             "the backends to answer")
    return names


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 20.0,
             interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
