"""``minikube-py up --local --nodes 2`` as a subprocess for the node acceptance tests (issue #5), and
real kubectl to drive it.

The cluster is stopped with SIGTERM (as Ctrl-C would), and then nothing of it may remain: no node
namespace, no bridge or veth, no pod sandbox namespace, no mount under its data dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.apiserver.conftest import KUBECTLS, REPO

NEEDED_BINARIES = ("runc", "docker-registry", "ip", "nsenter", "iptables", "iptables-save", "sysctl")
START_TIMEOUT = 180.0


def missing_requirements() -> str:
    """Why these tests cannot run here ('' when they can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, runc, iptables)"
    missing = [b for b in NEEDED_BINARIES if shutil.which(b) is None]
    if missing:
        return f"not installed: {', '.join(missing)}"
    if not Path("/usr/lib/cni/bridge").exists():
        return "CNI plugins (containernetworking-plugins) are not installed"
    if not KUBECTLS:
        return "no kubectl on this machine"
    return ""


def pick_kubectl() -> str:
    for version in ("1.33", "pypi"):
        if version in KUBECTLS:
            return KUBECTLS[version]
    return next(iter(KUBECTLS.values()))


@dataclass
class NodesCluster:
    data_dir: Path
    proc: subprocess.Popen[bytes]
    state: dict[str, Any]
    kubectl_path: str
    output: Path
    sandbox_ids: set[str] = field(default_factory=set)

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "admin.kubeconfig"

    @property
    def nodes(self) -> dict[str, dict[str, Any]]:
        return dict(self.state["nodes"]["nodes"])

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0
                ) -> subprocess.CompletedProcess[str]:
        cmd = [self.kubectl_path, f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.data_dir / 'kcache'}",
               *args]
        res = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        return res

    def get(self, kind: str, name: str = "", *flags: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", kind, *([name] if name else []), "-o", "json", *flags).stdout)

    def apply(self, *docs: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.5) -> Any:
        """Poll ``check`` until it returns something truthy; fail naming ``what`` and the last value."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = check()
            except AssertionError as e:
                last = e
            else:
                if last:
                    return last
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")
            if self.proc.poll() is not None:
                raise AssertionError(f"the cluster exited ({self.proc.returncode}) while waiting for {what}:\n"
                                     f"{self.output.read_text()[-3000:]}")
            time.sleep(interval)

    def pod(self, name: str) -> dict[str, Any]:
        return self.get("pod", name)

    def record_sandboxes(self) -> None:
        """Remember every pod sandbox the nodes' runtimes know (for the no-leftover check at the end)."""
        for path in self.data_dir.glob("nodes/node*/runtime/sandboxes/*"):
            self.sandbox_ids.add(path.name)


def _wait_started(proc: subprocess.Popen[bytes], output: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = output.read_text(errors="replace") if output.exists() else ""
        if "Stop with Ctrl-C." in text:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"minikube-py up exited with {proc.returncode}:\n{text[-4000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"minikube-py up did not come up within {timeout:g}s:\n{output.read_text()[-4000:]}")


def stop_cluster(proc: subprocess.Popen[bytes], timeout: float = 90.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"minikube-py up did not stop within {timeout:g}s of SIGTERM") from None
    return proc.returncode


@contextlib.contextmanager
def running_nodes(tmp_path_factory: pytest.TempPathFactory, name: str, nodes: int) -> Iterator[NodesCluster]:
    """``up --local --nodes N`` for a module's tests; on the way out: a clean SIGTERM stop, nothing left
    behind (links, namespaces, pod sandboxes), and the machine cleaned whatever the checks say."""
    why = missing_requirements()
    if why:
        pytest.skip(why)
    from minikube_py.localnodes import cleanup, leftovers

    data_dir = tmp_path_factory.mktemp(name) / "d"
    output = data_dir.parent / "up.out"
    with output.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "minikube_py", "up", "--local", "--data-dir", str(data_dir),
                                 "--port", "0", "--nodes", str(nodes)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    c: NodesCluster | None = None
    try:
        _wait_started(proc, output, START_TIMEOUT)
        state = json.loads((data_dir / "cluster.json").read_text())
        c = NodesCluster(data_dir, proc, state, pick_kubectl(), output)
        yield c
    finally:
        if c is not None:
            c.record_sandboxes()
        try:
            rc = stop_cluster(proc)
            left = leftovers(data_dir)
            stale = sorted(s for s in (c.sandbox_ids if c else ()) if Path("/run/netns", s).exists())
        finally:
            # Whatever the checks say, the machine is left clean.
            cleanup(data_dir)
        assert rc == 0, f"minikube-py up exited with {rc}:\n{output.read_text()[-3000:]}"
        assert left == [], f"left behind after SIGTERM: {left}"
        assert stale == [], f"pod sandbox namespaces left behind: {stale}"
        assert "minikube-py up: stopped" in output.read_text()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodesCluster]:
    with running_nodes(tmp_path_factory, "nodes", 2) as c:
        yield c
