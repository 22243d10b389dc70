"""The local all-in-one cluster behind ``minikube-py up --local``: the API server, the scheduler, the
controller-manager and (optionally) a set of fake nodes, each a separate child process of one
supervisor in the foreground, as the lab runs them as separate systemd units.

Start order follows the dependencies: the API server first (its ``--port 0`` choice is read from its
first output line, then ``/readyz`` is polled), then the components that only need its kubeconfig.
Each child logs to ``DATA_DIR/logs/<name>.log``.

Identities as in a kubeadm cluster: the API server's CA in ``DATA_DIR/pki`` signs a client certificate
for each component (``pki/<component>.crt``, none of them in ``system:masters``) and each gets its own
``DATA_DIR/<component>.kubeconfig``: the controller-manager as ``system:kube-controller-manager`` with
``--use-service-account-credentials`` (each controller acts as its ServiceAccount in kube-system), the
scheduler as ``system:kube-scheduler``. The fake nodes are one process serving every fake node through
one pod watch, which no single ``system:node:<name>`` identity may make (the Node authorizer lets a node
see only its own pods), so they act as ``minikube-py:fake-nodes`` with a ClusterRole of exactly what they
write — as kwok runs with a role of its own. Only the admin kubeconfig is in ``system:masters``. The API
server encrypts Secrets at rest with the key ``apiserver --local`` keeps in
``DATA_DIR/encryption-config.yaml``. Where the children are (pids, ports) is written to
``DATA_DIR/cluster.json`` for tools and tests, and removed on exit.

Stopping: SIGTERM to every child by PID (the API server last, so that the others do not spend
their last seconds logging connection errors), wait, SIGKILL after a timeout. A child that exits on
its own is reported by name and the whole cluster stops: a half-running control plane would only
mislead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    from minikube_py.localnodes import LocalNodes

log = logging.getLogger(__name__)

# The order children start in; they stop in the reverse order.
CHILD_ORDER = ("apiserver", "controller-manager", "scheduler", "fake-nodes")
STANDARD_PORTS = {"scheduler": 10259, "controller-manager": 10257}
STATE_FILE = "cluster.json"
FAKE_NODES_USER = "minikube-py:fake-nodes"
# Client certificate (DATA_DIR/pki/<stem>.crt) and kubeconfig (DATA_DIR/<stem>.kubeconfig) per component:
# stem -> (user, groups).
COMPONENT_IDENTITIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "controller-manager": ("system:kube-controller-manager", ()),
    "scheduler": ("system:kube-scheduler", ()),
    "fake-nodes": (FAKE_NODES_USER, ()),
}
# What the fake nodes do, and nothing else: register and heartbeat their Nodes and Leases, and play
# the kubelet for the pods bound to them.
FAKE_NODES_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "create", "update", "patch"]},
    {"apiGroups": [""], "resources": ["nodes/status", "pods/status"], "verbs": ["update", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "delete"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "update", "patch"]},
]


class ClusterError(RuntimeError):
    """The cluster could not start (a child failed, a port was taken, a timeout passed)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the child binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _seconds(value: float) -> str:
    """Plain seconds: every component's duration flags accept that form."""
    return f"{value:g}"


@dataclass
class LocalClusterConfig:
    data_dir: Path
    port: int = 6443
    fake_nodes: int = 0
    # Real nodes (network namespaces with a runtime, kubelet and proxy each): see localnodes.py.
    nodes: int = 0
    # kube-scheduler/kube-controller-manager's own ports 10259/10257, instead of free ones.
    standard_ports: bool = False
    node_monitor_grace_period: float | None = None
    pod_eviction_timeout: float | None = None
    # Fake node heartbeat; None derives it from the grace period (a quarter of it, at most 10 s).
    node_heartbeat: float | None = None
    leader_elect_lease_duration: float | None = None
    leader_elect_renew_deadline: float | None = None
    leader_elect_retry_period: float | None = None
    verbose: bool = False
    start_timeout: float = 60.0
    stop_timeout: float = 10.0
    python: str = field(default_factory=lambda: sys.executable)

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ClusterError(f"--port {self.port} is not a TCP port")
        if self.fake_nodes < 0:
            raise ClusterError("--fake-nodes must not be negative")
        if self.nodes < 0:
            raise ClusterError("--nodes must not be negative")
        for name in ("node_monitor_grace_period", "pod_eviction_timeout", "node_heartbeat",
                     "leader_elect_lease_duration", "leader_elect_renew_deadline", "leader_elect_retry_period"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ClusterError(f"--{name.replace('_', '-')} must not be negative")

    def heartbeat(self) -> float:
        if self.node_heartbeat:
            return self.node_heartbeat
        grace = self.node_monitor_grace_period or 40.0
        # Several renewals must fit in one grace period, or a busy moment would make a node flap.
        return min(10.0, max(grace / 4, 0.1))


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    port: int | None = None
    proc: asyncio.subprocess.Process | None = None
    stopping: bool = False
    _log: IO[bytes] | None = None
    _copier: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


class LocalCluster:
    def __init__(self, config: LocalClusterConfig) -> None:
        config.validate()
        self.config = config
        self.data_dir = config.data_dir.resolve()
        self.children: dict[str, Child] = {}
        self.api_port: int | None = None
        self.nodes: LocalNodes | None = None
        if config.nodes:
            from minikube_py.localnodes import LocalNodes, NodesError

            try:
                self.nodes = LocalNodes(self.data_dir, config.nodes, start_timeout=max(config.start_timeout, 90.0))
            except NodesError as e:
                raise ClusterError(str(e)) from None

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "admin.kubeconfig"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    def component_kubeconfig(self, stem: str) -> Path:
        return self.data_dir / f"{stem}.kubeconfig"

    # ---- identities ----

    def _ensure_identities(self) -> None:
        """The components' client certificates, made once by the CA the API server uses (which this makes
        first when it is missing, exactly as ``apiserver --local`` would)."""
        from minikube_py.pki import PKIError, ensure_pki

        addresses = ["127.0.0.1", *([self.nodes.host_ip] if self.nodes else [])]
        try:
            ensure_pki(self.data_dir / "pki", master_addresses=addresses, clients=COMPONENT_IDENTITIES)
        except (PKIError, OSError) as e:
            raise ClusterError(f"certificates in {self.data_dir / 'pki'}: {e}") from None

    def _write_component_kubeconfigs(self) -> None:
        """Written on every start: the API server's port may differ from the last run's."""
        from minikube_py.client.kubeconfig import write_kubeconfig
        from minikube_py.pki import CertPair, PKIError

        pki = self.data_dir / "pki"
        try:
            ca_pem = (pki / "ca.crt").read_bytes()
            for stem, (user, _) in COMPONENT_IDENTITIES.items():
                pair = CertPair.load(pki / f"{stem}.crt", pki / f"{stem}.key")
                write_kubeconfig(self.component_kubeconfig(stem), server=f"https://127.0.0.1:{self.api_port}",
                                 ca_pem=ca_pem, user=user, client_cert_pem=pair.cert_pem,
                                 client_key_pem=pair.key_pem)
        except (PKIError, OSError, ValueError) as e:
            raise ClusterError(f"component kubeconfigs: {e}") from None

    async def _grant_fake_nodes(self) -> None:
        """The fake nodes' ClusterRole and binding, made (or brought back to these rules) with the admin
        kubeconfig before they start."""
        from minikube_py.client import APIClient, ApiStatusError

        name = FAKE_NODES_USER
        rbac = "rbac.authorization.k8s.io"
        role = {"apiVersion": f"{rbac}/v1", "kind": "ClusterRole", "metadata": {"name": name},
                "rules": FAKE_NODES_RULES}
        binding = {"apiVersion": f"{rbac}/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
                   "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": name},
                   "subjects": [{"apiGroup": rbac, "kind": "User", "name": FAKE_NODES_USER}]}
        try:
            async with APIClient.from_kubeconfig(self.kubeconfig, user_agent="minikube-py-up") as client:
                for res, obj in ((f"clusterroles.{rbac}", role), (f"clusterrolebindings.{rbac}", binding)):
                    current = await client.get_or_none(res, name)
                    if current is None:
                        await client.create(res, obj)
                    else:
                        await client.update(res, {**current, **{k: v for k, v in obj.items() if k != "metadata"}})
        except (ApiStatusError, OSError) as e:
            raise ClusterError(f"cannot grant the fake nodes their role: {e}") from None

    # ---- command lines ----

    def _cli(self, *args: str) -> list[str]:
        verbose = ["-v"] if self.config.verbose else []
        return [self.config.python, "-m", "minikube_py", *args, *verbose]

    def _component_port(self, name: str) -> int:
        return STANDARD_PORTS[name] if self.config.standard_ports else free_port()

    def _leader_flags(self) -> list[str]:
        c = self.config
        flags: list[str] = []
        for flag, value in (("--leader-elect-lease-duration", c.leader_elect_lease_duration),
                            ("--leader-elect-renew-deadline", c.leader_elect_renew_deadline),
                            ("--leader-elect-retry-period", c.leader_elect_retry_period)):
            if value is not None:
                flags += [flag, _seconds(value)]
        return flags

    def _client_ca_flags(self) -> list[str]:
        # Client certificates of the cluster CA may scrape /metrics on 10257/10259 (tokens always may,
        # through a TokenReview); the API server makes the CA before these children start.
        return ["--client-ca-file", str(self.data_dir / "pki" / "ca.crt")]

    def plan(self) -> list[Child]:
        """The children after the API server, with their command lines (ports chosen now)."""
        c = self.config
        out = []
        port = self._component_port("controller-manager")
        cm = ["controller-manager", "--kubeconfig", str(self.component_kubeconfig("controller-manager")),
              "--use-service-account-credentials", "--secure-port", str(port), *self._client_ca_flags(),
              *self._leader_flags()]
        if c.node_monitor_grace_period is not None:
            cm += ["--node-monitor-grace-period", _seconds(c.node_monitor_grace_period)]
        if c.pod_eviction_timeout is not None:
            cm += ["--pod-eviction-timeout", _seconds(c.pod_eviction_timeout)]
        out.append(Child("controller-manager", self._cli(*cm), self.log_dir / "controller-manager.log", port))
        port = self._component_port("scheduler")
        out.append(Child("scheduler", self._cli("scheduler", "--kubeconfig",
                                                str(self.component_kubeconfig("scheduler")), "--secure-port", str(port),
                                                *self._client_ca_flags(), *self._leader_flags()),
                         self.log_dir / "scheduler.log", port))
        if c.fake_nodes:
            out.append(Child("fake-nodes", self._cli("fake-nodes", "--kubeconfig",
                                                     str(self.component_kubeconfig("fake-nodes")), "--count",
                                                     str(c.fake_nodes), "--heartbeat", _seconds(c.heartbeat())),
                             self.log_dir / "fake-nodes.log"))
        return out

    # ---- starting ----

    async def _spawn(self, child: Child, *, capture_stdout: bool = False) -> None:
        child.log_path.parent.mkdir(parents=True, exist_ok=True)
        # A local file opened once per child start: not worth a thread.
        child._log = open(child.log_path, "ab", buffering=0)  # noqa: ASYNC230 -- closed in _reap
        child._log.write(f"---- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(child.argv)}\n".encode())
        child.proc = await asyncio.create_subprocess_exec(
            *child.argv, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if capture_stdout else child._log, stderr=child._log,
            cwd=str(self.data_dir), start_new_session=True)
        self.children[child.name] = child
        log.info("started %s (pid %d)", child.name, child.proc.pid)

    async def _start_apiserver(self) -> None:
        child = Child("apiserver", self._cli("apiserver", "--local", "--data-dir", str(self.data_dir),
                                             "--port", str(self.config.port),
                                             *(self.nodes.apiserver_flags() if self.nodes else [])),
                      self.log_dir / "apiserver.log")
        await self._spawn(child, capture_stdout=True)
        assert child.proc is not None and child.proc.stdout is not None and child._log is not None
        deadline = time.monotonic() + self.config.start_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClusterError(f"the API server did not start within {self.config.start_timeout:g}s; "
                                   f"see {child.log_path}")
            try:
                line = await asyncio.wait_for(child.proc.stdout.readline(), left)
            except TimeoutError:
                continue
            if not line:
                code = await child.proc.wait()
                raise ClusterError(f"the API server exited with code {code}: {self._tail(child)}")
            child._log.write(line)
            text = line.decode(errors="replace")
            if "serving on port " in text:
                self.api_port = int(text.split("serving on port ")[1].split(";")[0])
                child.port = self.api_port
                break
        child._copier = asyncio.create_task(self._copy(child.proc.stdout, child._log))
        await self._wait_ready(deadline)

    @staticmethod
    async def _copy(stream: asyncio.StreamReader, sink: IO[bytes]) -> None:
        while line := await stream.readline():
            sink.write(line)

    async def _wait_ready(self, deadline: float) -> None:
        from minikube_py.client.kubeconfig import load_kubeconfig

        kc = load_kubeconfig(self.kubeconfig)
        ctx: ssl.SSLContext | bool = kc.ssl_context() if kc.server.startswith("https") else False
        async with aiohttp.ClientSession(headers=kc.auth_headers(),
                                         connector=aiohttp.TCPConnector(ssl=ctx)) as session:
            while True:
                self._check_alive()
                try:
                    async with session.get(kc.server + "/readyz", timeout=aiohttp.ClientTimeout(total=5)) as r:
                        if r.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise ClusterError(f"the API server was not ready within {self.config.start_timeout:g}s")
                await asyncio.sleep(0.1)

    def _check_alive(self) -> None:
        for child in self.children.values():
            if child.proc is not None and child.proc.returncode is not None:
                raise ClusterError(f"{child.name} (pid {child.pid}) exited with code {child.proc.returncode}: "
                                   f"{self._tail(child)}")

    @staticmethod
    def _tail(child: Child, lines: int = 5) -> str:
        try:
            text = child.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return f"see {child.log_path}"
        return " | ".join(text[-lines:]) + f" (log: {child.log_path})"

    async def start(self) -> None:
        """Start every child; raises ClusterError (after stopping what started) when one fails."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        try:
            if self.nodes:
                await self._nodes_step(self.nodes.prepare())
            await asyncio.to_thread(self._ensure_identities)
            await self._start_apiserver()
            self._write_component_kubeconfigs()
            if self.config.fake_nodes:
                await self._grant_fake_nodes()
            for child in self.plan():
                await self._spawn(child)
            if self.nodes:
                await self._nodes_step(self.nodes.start(self))
            # A child that cannot even start (bad flag, import error) usually fails within a moment.
            await asyncio.sleep(0.5)
            self._check_alive()
            self._write_state()
        except BaseException:
            await self.stop()
            raise

    @staticmethod
    async def _nodes_step(step: Coroutine[Any, Any, None]) -> None:
        from minikube_py.localnodes import NodesError

        try:
            await step
        except NodesError as e:
            raise ClusterError(str(e)) from None

    # ---- running and stopping ----

    def state(self) -> dict[str, Any]:
        return {"kubeconfig": str(self.kubeconfig), "apiserver_port": self.api_port, "supervisor_pid": os.getpid(),
                "children": {name: {"pid": c.pid, "port": c.port, "log": str(c.log_path)}
                             for name, c in self.children.items()},
                **({"nodes": self.nodes.state()} if self.nodes else {})}

    def _write_state(self) -> None:
        path = self.data_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state(), indent=2) + "\n")
        tmp.replace(path)

    async def wait_any_exit(self) -> Child:
        """Wait until some child exits (on its own: stop() marks the ones it stops) and return it."""
        waits = {asyncio.ensure_future(c.proc.wait()): c for c in self.children.values() if c.proc is not None}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            return waits[next(iter(done))]
        finally:
            for w in waits:
                w.cancel()

    async def stop(self) -> None:
        """SIGTERM every child by PID (dependants first, the API server last), SIGKILL after the timeout."""
        if self.nodes:
            try:
                await self.nodes.stop(self)
            except Exception:
                # The control plane must still stop; what the nodes left, the next start's cleanup removes.
                log.exception("stopping the nodes failed")
        order = [n for n in reversed(CHILD_ORDER) if n in self.children]
        components = [self.children[n] for n in order if n != "apiserver"]
        await self._stop_group(components)
        if "apiserver" in self.children:
            await self._stop_group([self.children["apiserver"]])
        with contextlib.suppress(OSError):
            (self.data_dir / STATE_FILE).unlink()

    async def _stop_group(self, children: list[Child]) -> None:
        for child in children:
            child.stopping = True
            if child.proc is not None and child.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        for child in children:
            if child.proc is None:
                continue
            try:
                await asyncio.wait_for(child.proc.wait(), self.config.stop_timeout)
            except TimeoutError:
                log.warning("%s (pid %d) did not stop within %gs; killing it", child.name, child.pid,
                            self.config.stop_timeout)
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
                await child.proc.wait()
            await self._reap(child)

    @staticmethod
    async def _reap(child: Child) -> None:
        if child._copier is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, OSError, ValueError):
                await asyncio.wait_for(child._copier, 2.0)
            child._copier = None
        if child._log is not None:
            child._log.close()
            child._log = None
