"""Real nodes for ``minikube-py up --local --nodes N``: each node is a network namespace on this machine
running its own runtime, kubelet and proxy, joined to the others by a host bridge.

The layout (``<tag>`` is 6 hex digits of a hash of the data dir, so two clusters never share a name)::

    host:  bridge mkpy-<tag>, 172.31.X.1/24 (X from the tag; a /24 nothing else on the machine uses),
           forwarding off on it and no NAT: nothing from a node or a pod is routed off this machine.
           docker-registry on 172.31.X.1:PORT with the demo images; the API server listens there too.
    node i: netns mkpy-<tag>-node<i>, eth0 = 172.31.X.(10+i)/24 (a veth whose host end mk<tag>n<i> is on
           the bridge), ip_forward on (its own sysctl), no default route. Inside it, started with
           ``nsenter --net`` (so mounts and /run/netns stay the host's, where the runtime's sandboxes
           and overlays must be seen by cleanup): the runtime (CNI bridge cni-<i>), the kubelet
           (node<i>; host-gw routes to the other nodes' pod CIDRs via their node IPs) and the proxy.

Everything lives under ``DATA_DIR/nodes/<node>/`` and is torn down on exit: the pods' sandboxes through
the runtime's own API (CNI DEL, netns, overlays, runc state), then the processes by PID, the node
namespaces (which take the veths and every iptables rule the proxy wrote with them) and the bridge.
``cleanup(data_dir)`` removes what a crashed run of the same data dir left, touching only names
derived from that data dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from minikube_py.localcluster import Child, LocalCluster

log = logging.getLogger(__name__)

ROOT_ERROR = "minikube-py up --nodes needs root (network namespaces, runc, iptables)"
NETNS_DIR = Path("/run/netns")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CLUSTER_CIDR = "10.244.0.0/16"
# 172.31.0.0/16 is private space; the third octet comes from the tag, kept clear of .0 and .255.
SUBNET_BASE = "172.31"
THIRD_OCTETS = range(16, 240)
PREFERRED_REGISTRY_PORT = 5000
KUBELET_CLIENT = "apiserver-kubelet-client"
MAX_NODES = 200
# A unix socket path longer than this does not fit in sockaddr_un (108 bytes with the NUL).
MAX_SOCKET_PATH = 100
REGISTRY_CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {addr}
  secret: minikube-py-local-nodes
"""


class NodesError(RuntimeError):
    """The nodes could not be set up (not root, a tool missing, an address taken, a child failed)."""


def require_root() -> None:
    if os.geteuid() != 0:
        raise NodesError(ROOT_ERROR)


def _tag(data_dir: Path) -> str:
    return hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:6]


@dataclass(frozen=True)
class NodeNet:
    """One node's names and addresses."""

    index: int
    name: str          # the Node's name: node<i>
    netns: str         # mkpy-<tag>-node<i>
    host_veth: str     # mk<tag>n<i>, the bridge side
    ip: str            # 172.31.X.(10+i)
    cni_bridge: str    # cni-<i>, inside the node's namespace
    dir: Path          # DATA_DIR/nodes/node<i>

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    @property
    def runtime_socket(self) -> Path:
        return self.dir / "runtime.sock"

    @property
    def runtime_root(self) -> Path:
        return self.dir / "runtime"

    @property
    def runtime_state(self) -> Path:
        return self.dir / "run"

    @property
    def kubelet_root(self) -> Path:
        return self.dir / "kubelet"

    @property
    def cgroup_parent(self) -> str:
        return self.netns


@dataclass(frozen=True)
class NetworkPlan:
    """The names and addresses of one data dir's bridge and nodes."""

    data_dir: Path
    tag: str
    subnet: ipaddress.IPv4Network

    @classmethod
    def for_data_dir(cls, data_dir: Path, *, subnet: ipaddress.IPv4Network | None = None) -> NetworkPlan:
        data_dir = Path(data_dir).resolve()
        tag = _tag(data_dir)
        if subnet is None:
            subnet = ipaddress.IPv4Network(f"{SUBNET_BASE}.{THIRD_OCTETS[int(tag, 16) % len(THIRD_OCTETS)]}.0/24")
        return cls(data_dir, tag, subnet)

    @property
    def bridge(self) -> str:
        return f"mkpy-{self.tag}"

    @property
    def netns_prefix(self) -> str:
        return f"mkpy-{self.tag}-node"

    @property
    def host_ip(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def nodes_dir(self) -> Path:
        return self.data_dir / "nodes"

    def node(self, index: int) -> NodeNet:
        if not 1 <= index <= MAX_NODES:
            raise NodesError(f"node index {index} is outside 1..{MAX_NODES}")
        return NodeNet(index=index, name=f"node{index}", netns=f"{self.netns_prefix}{index}",
                       host_veth=f"mk{self.tag}n{index}", ip=str(self.subnet.network_address + 10 + index),
                       cni_bridge=f"cni-{index}", dir=self.nodes_dir / f"node{index}")


# ---- small system helpers --------------------------------------------------------------------------

def _run(*argv: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise NodesError(f"{argv[0]} is not installed (needed by up --nodes)") from None
    except subprocess.TimeoutExpired:
        raise NodesError(f"{' '.join(argv)} did not finish within {timeout:g}s") from None
    if check and proc.returncode != 0:
        raise NodesError(f"{' '.join(argv)}: {(proc.stderr or proc.stdout).strip()}")
    return proc


def _in_netns(netns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # nsenter --net switches the network namespace only: /proc/sys/net is then that namespace's.
    return _run("nsenter", f"--net={NETNS_DIR / netns}", "--", *argv, check=check)


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _netns_pids(name: str) -> list[int]:
    proc = _run("ip", "netns", "pids", name, check=False)
    return [int(p) for p in proc.stdout.split() if p.strip().isdigit()]


def _kill_pids(pids: list[int], what: str) -> None:
    for pid in pids:
        if pid == os.getpid():
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            log.info("killed leftover pid %d in %s", pid, what)


def _used_networks(ignore_link: str) -> list[ipaddress.IPv4Network]:
    """Every IPv4 network routed or addressed on this machine, except on ``ignore_link``."""
    nets: list[ipaddress.IPv4Network] = []
    routes = _run("ip", "-j", "-4", "route", "show", "table", "all", check=False)
    with contextlib.suppress(ValueError):
        for r in json.loads(routes.stdout or "[]"):
            dst = r.get("dst", "")
            if r.get("dev") == ignore_link or dst in ("", "default") or r.get("type") in ("broadcast", "local"):
                continue
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.IPv4Network(dst, strict=False))
    addrs = _run("ip", "-j", "-4", "addr", "show", check=False)
    with contextlib.suppress(ValueError):
        for link in json.loads(addrs.stdout or "[]"):
            if link.get("ifname") == ignore_link:
                continue
            for a in link.get("addr_info", []):
                with contextlib.suppress(ValueError, KeyError):
                    nets.append(ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False))
    return nets


def choose_subnet(plan: NetworkPlan) -> NetworkPlan:
    """``plan`` with a /24 no other interface or route on this machine overlaps (the tag's first)."""
    used = [n for n in _used_networks(plan.bridge) if n.prefixlen > 0]
    start = int(plan.subnet.network_address.packed[2])
    octets = list(THIRD_OCTETS)
    i = octets.index(start)
    for third in octets[i:] + octets[:i]:
        candidate = ipaddress.IPv4Network(f"{SUBNET_BASE}.{third}.0/24")
        if not any(candidate.overlaps(n) for n in used):
            return NetworkPlan(plan.data_dir, plan.tag, candidate)
    raise NodesError(f"every {SUBNET_BASE}.X.0/24 is already in use on this machine")


def _write_sysctl(path: str, value: str) -> None:
    with contextlib.suppress(OSError):
        Path("/proc/sys", path).write_text(value)


# ---- the network ------------------------------------------------------------------------------------

def setup_bridge(plan: NetworkPlan) -> None:
    """The host bridge with the host's address; it forwards nothing off the bridge."""
    if not _link_exists(plan.bridge):
        _run("ip", "link", "add", plan.bridge, "type", "bridge")
    # IPv6 would give the bridge a link-local address and router solicitations: nothing here uses it.
    _write_sysctl(f"net/ipv6/conf/{plan.bridge}/disable_ipv6", "1")
    _write_sysctl(f"net/ipv4/conf/{plan.bridge}/forwarding", "0")
    _run("ip", "addr", "replace", f"{plan.host_ip}/{plan.subnet.prefixlen}", "dev", plan.bridge)
    _run("ip", "link", "set", plan.bridge, "up")


def setup_node_netns(plan: NetworkPlan, node: NodeNet) -> None:
    """The node's namespace: lo, eth0 on the bridge with the node's address, forwarding on inside."""
    if not node.netns_path.exists():
        _run("ip", "netns", "add", node.netns)
    if not _link_exists(node.host_veth):
        _run("ip", "link", "add", node.host_veth, "type", "veth", "peer", "name", "eth0", "netns", node.netns)
    _write_sysctl(f"net/ipv6/conf/{node.host_veth}/disable_ipv6", "1")
    _run("ip", "link", "set", node.host_veth, "master", plan.bridge, "up")
    _run("ip", "-n", node.netns, "link", "set", "lo", "up")
    _run("ip", "-n", node.netns, "addr", "replace", f"{node.ip}/{plan.subnet.prefixlen}", "dev", "eth0")
    _run("ip", "-n", node.netns, "link", "set", "eth0", "up")
    # Pods reach each other and Services through the node: it routes between its CNI bridge and eth0,
    # and a Service reply between two pods on one CNI bridge must pass iptables to be un-DNATed.
    _in_netns(node.netns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    _in_netns(node.netns, "sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1", check=False)


def teardown_network(plan: NetworkPlan) -> None:
    """Delete every node namespace of this plan (their veths and iptables rules go with them) and the bridge."""
    for name in sorted(_our_netns(plan)):
        _kill_pids(_netns_pids(name), f"netns {name}")
        _run("ip", "netns", "del", name, check=False)
    for link in _our_host_links(plan):
        _run("ip", "link", "del", link, check=False)


def _our_netns(plan: NetworkPlan) -> list[str]:
    try:
        return [p.name for p in NETNS_DIR.iterdir() if p.name.startswith(plan.netns_prefix)
                and p.name[len(plan.netns_prefix):].isdigit()]
    except FileNotFoundError:
        return []


def _our_host_links(plan: NetworkPlan) -> list[str]:
    """The host veth ends (mk<tag>n<i>), then the bridge."""
    try:
        names = [p.name for p in Path("/sys/class/net").iterdir()]
    except OSError:
        names = []
    prefix = f"mk{plan.tag}n"
    veths = [n for n in names if n.startswith(prefix) and n[len(prefix):].isdigit()]
    return veths + ([plan.bridge] if plan.bridge in names else [])


def leftovers(data_dir: Path) -> list[str]:
    """Namespaces, links and mounts of this data dir that still exist (empty after a clean stop)."""
    plan = NetworkPlan.for_data_dir(data_dir)
    found = [f"netns {n}" for n in _our_netns(plan)] + [f"link {n}" for n in _our_host_links(plan)]
    found += [f"netns {n}" for n in _sandbox_netns(plan) if (NETNS_DIR / n).exists()]
    found += [f"mount {m}" for m in _mounts_under(plan.data_dir)]
    return found


# ---- cleanup of a crashed run ------------------------------------------------------------------------

def _mounts_under(directory: Path) -> list[str]:
    prefix = str(directory).rstrip("/") + "/"
    out = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) > 4:
            point = fields[4].encode().decode("unicode_escape")
            if point.startswith(prefix):
                out.append(point)
    return out


def _sandbox_records(plan: NetworkPlan) -> list[dict[str, Any]]:
    records = []
    for path in plan.nodes_dir.glob("node*/runtime/sandboxes/*/sandbox.json"):
        with contextlib.suppress(OSError, ValueError):
            rec = json.loads(path.read_text())
            if isinstance(rec, dict):
                records.append(rec)
    return records


def _sandbox_netns(plan: NetworkPlan) -> list[str]:
    names = []
    for rec in _sandbox_records(plan):
        netns = Path(str(rec.get("netns") or ""))
        if netns.parent == NETNS_DIR and netns.name:
            names.append(netns.name)
    return names


def _runc_cleanup(state_dir: Path) -> None:
    root = state_dir / "runc"
    if not root.is_dir() or shutil.which("runc") is None:
        return
    listing = _run("runc", "--root", str(root), "list", "-q", check=False)
    for cid in listing.stdout.split():
        _run("runc", "--root", str(root), "kill", cid, "KILL", check=False)
        _run("runc", "--root", str(root), "delete", "--force", cid, check=False)


def _remove_cgroups(prefix: str) -> None:
    """Empty cgroups runc left under the nodes' cgroup parents (a v1 hierarchy per controller)."""
    with contextlib.suppress(OSError):
        for hierarchy in CGROUP_ROOT.iterdir():
            with contextlib.suppress(OSError):
                for parent in hierarchy.glob(f"{prefix}*"):
                    for child in sorted(parent.rglob("*"), key=lambda p: -len(p.parts)):
                        if child.is_dir():
                            with contextlib.suppress(OSError):
                                child.rmdir()
                    with contextlib.suppress(OSError):
                        parent.rmdir()


def cleanup(data_dir: Path) -> list[str]:
    """Remove what a previous (crashed) run of ``data_dir`` left behind; returns what it removed.

    Only names derived from this data dir are touched: its node namespaces and bridge, the sandbox
    namespaces its runtimes recorded, containers in its runc roots, mounts under it, its cgroups.
    Images and logs stay.
    """
    require_root()
    plan = NetworkPlan.for_data_dir(data_dir)
    removed = leftovers(data_dir)
    for node_dir in sorted(plan.nodes_dir.glob("node*")):
        _runc_cleanup(node_dir / "run")
    for name in _sandbox_netns(plan):
        if (NETNS_DIR / name).exists():
            _kill_pids(_netns_pids(name), f"netns {name}")
            _run("ip", "netns", "del", name, check=False)
    teardown_network(plan)
    # Deepest first, lazily: a busy overlay must not keep the next start from cleaning up.
    for point in sorted(_mounts_under(plan.data_dir), key=lambda p: -len(p)):
        _run("umount", "-l", point, check=False)
    _remove_cgroups(plan.netns_prefix)
    for node_dir in sorted(plan.nodes_dir.glob("node*")):
        # What a node keeps only while it runs (like /run): runc state, IPAM leases, pods' dirs.
        for sub in ("run", "kubelet", "runtime/sandboxes", "runtime/containers"):
            shutil.rmtree(node_dir / sub, ignore_errors=True)
    return removed


# ---- the nodes as children of the cluster -------------------------------------------------------------

def _probe_port(host: str, preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise NodesError(f"no free TCP port on {host}")


class LocalNodes:
    """The bridge, the registry and N nodes of one LocalCluster."""

    def __init__(self, data_dir: Path, count: int, *, start_timeout: float = 90.0) -> None:
        if not 1 <= count <= MAX_NODES:
            raise NodesError(f"--nodes must be between 1 and {MAX_NODES}")
        self.plan = NetworkPlan.for_data_dir(data_dir)
        self.count = count
        self.start_timeout = start_timeout
        self.registry_port = 0
        self._children: list[Child] = []
        self._network_up = False

    @property
    def host_ip(self) -> str:
        return self.plan.host_ip

    @property
    def registry(self) -> str:
        return f"{self.plan.host_ip}:{self.registry_port}"

    def nodes(self) -> list[NodeNet]:
        return [self.plan.node(i) for i in range(1, self.count + 1)]

    def apiserver_flags(self) -> list[str]:
        """The API server must answer on the bridge too, with the bridge address in its certificate, and
        reach the kubelets' HTTPS API with a client certificate."""
        pki = self.plan.data_dir / "pki"
        return ["--bind-address", "0.0.0.0", "--advertise-address", self.plan.host_ip,
                "--kubelet-client-certificate", str(pki / f"{KUBELET_CLIENT}.crt"),
                "--kubelet-client-key", str(pki / f"{KUBELET_CLIENT}.key"),
                # The kubelets' serving certificates are issued by the cluster CA (_write_kubeconfigs).
                "--kubelet-certificate-authority", str(pki / "ca.crt")]

    # ---- before the API server ----

    async def prepare(self) -> None:
        """Root check, leftovers of a crashed run removed, the bridge and namespaces up, the API server's
        certificate made to cover the bridge address."""
        require_root()
        for tool in ("ip", "nsenter", "runc", "iptables", "docker-registry", "sysctl"):
            if shutil.which(tool) is None:
                raise NodesError(f"{tool} is not installed (needed by up --nodes)")
        for node in self.nodes():
            if len(str(node.runtime_socket)) > MAX_SOCKET_PATH:
                raise NodesError(f"the data dir path is too long for a unix socket ({node.runtime_socket}); "
                                 f"use a shorter --data-dir")
        await asyncio.to_thread(self._prepare_sync)

    def _prepare_sync(self) -> None:
        removed = cleanup(self.plan.data_dir)
        if removed:
            log.warning("removed leftovers of a previous run: %s", ", ".join(removed))
        self.plan = choose_subnet(self.plan)
        self._network_up = True
        setup_bridge(self.plan)
        for node in self.nodes():
            for sub in ("runtime", "run", "kubelet", "logs", "cni"):
                (node.dir / sub).mkdir(parents=True, exist_ok=True)
            setup_node_netns(self.plan, node)
        self._ensure_pki()

    def _ensure_pki(self) -> None:
        """The CA and certificates as the API server's own start would make them, plus its kubelet client
        pair. An apiserver.crt from a run without nodes lacks the bridge address: it is issued anew (the
        CA, and so every kubeconfig, stays)."""
        from minikube_py.pki import CertPair, PKIError, cert_sans, ensure_pki

        pki = self.plan.data_dir / "pki"
        crt, key = pki / "apiserver.crt", pki / "apiserver.key"
        ips: list[str] = [self.plan.host_ip]
        if crt.exists():
            with contextlib.suppress(PKIError):  # ensure_pki below reports a broken pair
                _, ips = cert_sans(CertPair.load(crt, key).certificate)
        if self.plan.host_ip not in ips:
            log.info("re-issuing %s to cover %s", crt, self.plan.host_ip)
            crt.unlink(missing_ok=True)
            key.unlink(missing_ok=True)
        try:
            ensure_pki(pki, master_addresses=sorted({"127.0.0.1", self.plan.host_ip}),
                       clients={KUBELET_CLIENT: ("kube-apiserver-kubelet-client", ("system:masters",))})
        except (PKIError, OSError) as e:
            raise NodesError(f"certificates in {pki}: {e}") from None

    # ---- after the API server ----

    async def start(self, cluster: LocalCluster) -> None:
        """The registry (filled with the demo images), then per node its runtime, kubelet and proxy; waits
        until every Node is Ready."""
        from minikube_py.localcluster import Child

        deadline = time.monotonic() + self.start_timeout
        await self._start_registry(cluster, Child, deadline)
        await self._push_demo_images()
        assert cluster.api_port is not None
        self._write_kubeconfigs(cluster.api_port)
        for node in self.nodes():
            await self._spawn(cluster, Child(f"{node.name}-runtime", self._runtime_argv(cluster, node),
                                             cluster.log_dir / f"{node.name}-runtime.log"))
        for node in self.nodes():
            await self._wait_runtime(cluster, node, deadline)
        for node in self.nodes():
            await self._spawn(cluster, Child(f"{node.name}-kubelet", self._kubelet_argv(cluster, node),
                                             cluster.log_dir / f"{node.name}-kubelet.log"))
            await self._spawn(cluster, Child(f"{node.name}-proxy", self._proxy_argv(cluster, node),
                                             cluster.log_dir / f"{node.name}-proxy.log"))
        await self._wait_nodes_ready(cluster, deadline)

    async def _spawn(self, cluster: LocalCluster, child: Child) -> None:
        await cluster._spawn(child)
        self._children.append(child)

    def _python(self, cluster: LocalCluster, netns: str, *args: str) -> list[str]:
        return ["nsenter", f"--net={NETNS_DIR / netns}", "--", *cluster._cli(*args)]

    def _runtime_argv(self, cluster: LocalCluster, node: NodeNet) -> list[str]:
        return self._python(
            cluster, node.netns, "runtime", "--root-dir", str(node.runtime_root), "--state-dir",
            str(node.runtime_state), "--socket", str(node.runtime_socket), "--cni-conf-dir", str(node.dir / "cni"),
            "--cni-bin-dir", "/usr/lib/cni", "--cni-bridge", node.cni_bridge, "--cgroup-parent", node.cgroup_parent,
            "--default-registry", self.registry)

    def _kubelet_argv(self, cluster: LocalCluster, node: NodeNet) -> list[str]:
        return self._python(
            cluster, node.netns, "kubelet", "--kubeconfig", str(node.dir / "kubelet.kubeconfig"),
            "--hostname-override", node.name, "--node-ip", node.ip, "--runtime-endpoint", str(node.runtime_socket),
            "--root-dir", str(node.kubelet_root), "--pod-log-dir", str(node.dir / "logs"),
            "--bind-address", node.ip, "--tls-cert-file", str(node.dir / "kubelet-serving.crt"),
            "--tls-private-key-file", str(node.dir / "kubelet-serving.key"),
            # The kubelet API as kubeadm sets it up: the API server's client certificate or a token the API
            # server vouches for, and a SubjectAccessReview per request.
            "--client-ca-file", str(self.plan.data_dir / "pki" / "ca.crt"), "--anonymous-auth=false",
            "--authentication-token-webhook=true", "--authorization-mode", "Webhook")

    def _proxy_argv(self, cluster: LocalCluster, node: NodeNet) -> list[str]:
        return self._python(
            cluster, node.netns, "proxy", "--kubeconfig", str(node.dir / "proxy.kubeconfig"),
            "--hostname-override", node.name, "--cluster-cidr", CLUSTER_CIDR,
            "--healthz-bind-address", f"{node.ip}:10256", "--metrics-bind-address", "127.0.0.1:10249")

    async def _start_registry(self, cluster: LocalCluster, child_cls: type[Child], deadline: float) -> None:
        workdir = self.plan.data_dir / "registry"
        workdir.mkdir(parents=True, exist_ok=True)
        self.registry_port = _probe_port(self.plan.host_ip, PREFERRED_REGISTRY_PORT)
        config = workdir / "config.yml"
        config.write_text(REGISTRY_CONFIG.format(storage=workdir / "storage", addr=self.registry))
        await self._spawn(cluster, child_cls("registry", ["docker-registry", "serve", str(config)],
                                             cluster.log_dir / "registry.log"))
        import aiohttp

        async with aiohttp.ClientSession() as session:
            while True:
                cluster._check_alive()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"http://{self.registry}/v2/",
                                           timeout=aiohttp.ClientTimeout(total=2)) as r:
                        if r.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise NodesError(f"the registry did not answer on {self.registry}; "
                                     f"see {cluster.log_dir}/registry.log")
                await asyncio.sleep(0.05)

    async def _push_demo_images(self) -> None:
        from minikube_py.images import build_demo_images
        from minikube_py.runtime.image_build import ImageBuildError

        try:
            pushed = await build_demo_images(self.registry)
        except ImageBuildError as e:
            raise NodesError(f"cannot provide the demo images: {e}") from None
        log.info("demo images in %s: %s", self.registry, ", ".join(pushed))

    def _write_kubeconfigs(self, api_port: int) -> None:
        """Per node, client certificates for the kubelet (system:node:<name>) and the proxy, reaching the
        API server over the bridge, and the kubelet's serving certificate."""
        from minikube_py.client.kubeconfig import write_kubeconfig
        from minikube_py.pki import CertPair, issue_cert, write_private_file

        pki = self.plan.data_dir / "pki"
        ca = CertPair.load(pki / "ca.crt", pki / "ca.key")
        server = f"https://{self.plan.host_ip}:{api_port}"
        for node in self.nodes():
            for file, cn, groups in (("kubelet.kubeconfig", f"system:node:{node.name}", ["system:nodes"]),
                                     ("proxy.kubeconfig", "system:kube-proxy", [])):
                pair = issue_cert(ca, cn, organizations=groups, client=True)
                write_kubeconfig(node.dir / file, server=server, ca_pem=ca.cert_pem, user=cn,
                                 client_cert_pem=pair.cert_pem, client_key_pem=pair.key_pem)
            # The kubelet's serving certificate, for its name and node IP, so that the API server can verify it.
            serving = issue_cert(ca, f"system:node:{node.name}", organizations=["system:nodes"],
                                 dns_names=[node.name], ip_addresses=[node.ip], server=True)
            write_private_file(node.dir / "kubelet-serving.crt", serving.cert_pem)
            write_private_file(node.dir / "kubelet-serving.key", serving.key_pem)

    async def _wait_runtime(self, cluster: LocalCluster, node: NodeNet, deadline: float) -> None:
        from minikube_py.runtime.client import RuntimeClient, RuntimeServiceError

        async with RuntimeClient(node.runtime_socket) as rc:
            while True:
                cluster._check_alive()
                with contextlib.suppress(RuntimeServiceError):
                    await rc.version()
                    return
                if time.monotonic() > deadline:
                    raise NodesError(f"the runtime of {node.name} did not answer on {node.runtime_socket}")
                await asyncio.sleep(0.05)

    async def _wait_nodes_ready(self, cluster: LocalCluster, deadline: float) -> None:
        import aiohttp

        from minikube_py.client.kubeconfig import load_kubeconfig

        kc = load_kubeconfig(cluster.kubeconfig)
        wanted = {n.name for n in self.nodes()}
        why: dict[str, str] = {n: "not registered" for n in wanted}
        async with aiohttp.ClientSession(headers=kc.auth_headers(),
                                         connector=aiohttp.TCPConnector(ssl=kc.ssl_context())) as session:
            while True:
                cluster._check_alive()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                    async with session.get(kc.server + "/api/v1/nodes", timeout=aiohttp.ClientTimeout(total=5)) as r:
                        if r.status == 200:
                            for item in (await r.json()).get("items", []):
                                name = item["metadata"]["name"]
                                if name in wanted:
                                    why[name] = _not_ready_reason(item)
                if not any(why.values()):
                    return
                if time.monotonic() > deadline:
                    detail = "; ".join(f"{n}: {w}" for n, w in sorted(why.items()) if w)
                    raise NodesError(f"nodes not Ready within {self.start_timeout:g}s ({detail}); "
                                     f"see {cluster.log_dir}/node*-kubelet.log")
                await asyncio.sleep(0.2)

    # ---- stopping ----

    async def stop(self, cluster: LocalCluster) -> None:
        """Kubelets and proxies first (nothing restarts a pod any more), then every pod sandbox through its
        runtime, the runtimes, the registry; then the network and any leftovers."""
        by_role: dict[str, list[Child]] = {"kubelet": [], "proxy": [], "runtime": [], "registry": []}
        for child in self._children:
            by_role[child.name.rsplit("-", 1)[-1]].append(child)
        await cluster._stop_group(by_role["kubelet"] + by_role["proxy"])
        for child in by_role["runtime"]:
            if child.proc is not None and child.proc.returncode is None:
                node = self.plan.node(int(child.name.split("-")[0].removeprefix("node")))
                await self._drain(node)
        await cluster._stop_group(by_role["runtime"] + by_role["registry"])
        self._children.clear()
        if self._network_up:
            await asyncio.to_thread(cleanup, self.plan.data_dir)
            self._network_up = False

    async def _drain(self, node: NodeNet) -> None:
        """Remove every sandbox the runtime has: containers killed, CNI DEL, netns, overlays, runc state."""
        from minikube_py.runtime.client import RuntimeClient, RuntimeServiceError

        async with RuntimeClient(node.runtime_socket) as rc:
            try:
                sandboxes = await rc.list_pod_sandbox()
            except RuntimeServiceError as e:
                log.warning("cannot list the pods of %s (%s); cleaning up without the runtime", node.name, e)
                return
            for sb in sandboxes:
                try:
                    await rc.stop_pod_sandbox(sb["id"])
                    await rc.remove_pod_sandbox(sb["id"])
                except RuntimeServiceError as e:
                    log.warning("removing pod sandbox %s on %s: %s", sb["id"][:12], node.name, e)

    def state(self) -> dict[str, Any]:
        """Where the nodes are, for DATA_DIR/cluster.json."""
        return {"bridge": self.plan.bridge, "host_ip": self.plan.host_ip, "subnet": str(self.plan.subnet),
                "registry": self.registry,
                "nodes": {n.name: {"ip": n.ip, "netns": n.netns, "runtime_socket": str(n.runtime_socket),
                                   "dir": str(n.dir)} for n in self.nodes()}}

    def summary_lines(self) -> list[str]:
        lines = [f"  bridge       {self.plan.bridge} {self.plan.host_ip}/{self.plan.subnet.prefixlen}; "
                 f"registry {self.registry}"]
        lines += [f"  {n.name:<12} {n.ip:<15} netns {n.netns}" for n in self.nodes()]
        return lines


def _not_ready_reason(node: dict[str, Any]) -> str:
    """'' when the Node is Ready, else why not."""
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            if cond.get("status") == "True":
                return ""
            return f"{cond.get('reason') or 'NotReady'}: {cond.get('message') or ''}".rstrip(": ")
    return "no Ready condition yet"
