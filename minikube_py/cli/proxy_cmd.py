"""``minikube-py proxy``: the seeds' kube-proxy in iptables mode, in the foreground until SIGTERM/SIGINT.

Watches Services, EndpointSlices and its Node and keeps the KUBE-* chains of the nat and filter
tables in step. Health on --healthz-bind-address (10256, kube-proxy's JSON), metrics on
--metrics-bind-address (10249), both plain HTTP as kube-proxy serves them. On exit the rules stay,
so traffic keeps flowing while the proxy restarts; ``--cleanup`` removes them and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import re
import signal
import socket
from collections.abc import Callable
from pathlib import Path

from minikube_py.cli.durations import duration_arg
from minikube_py.cli.main import UserError

log = logging.getLogger("minikube_py.proxy")


def bind_address(default_port: int) -> Callable[[str], tuple[str, int] | None]:
    """An argparse type for ``IP:PORT`` (or just ``IP``, taking the default port); "" disables."""

    def parse(text: str) -> tuple[str, int] | None:
        if not text.strip():
            return None
        host, port = text.strip(), default_port
        m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]*):(\d+)", host)
        if m:
            host = m.group(1) or m.group(3) or "0.0.0.0"
            port = int(m.group(2) or m.group(4))
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected IP:PORT, e.g. 0.0.0.0:{default_port}") from None
        if not 0 <= port <= 65535:
            raise argparse.ArgumentTypeError(f"{text!r}: {port} is not a TCP port")
        return host, port

    return parse


def register(sub: argparse._SubParsersAction) -> None:
    from minikube_py.proxy.iptables import BACKENDS

    p = sub.add_parser("proxy", help="run the service proxy (kube-proxy, iptables mode)",
                       description="Program iptables so that Service cluster IPs and node ports reach "
                                   "their endpoints.")
    p.add_argument("--kubeconfig", type=Path, metavar="FILE", help="how to reach the API server")
    p.add_argument("--hostname-override", default=None, metavar="NAME",
                   help="this node's name (default: the host name)")
    p.add_argument("--cluster-cidr", default="10.244.0.0/16",
                   help="the pod network; traffic to cluster IPs from outside it is masqueraded "
                        "(10.244.0.0/16; empty: never)")
    p.add_argument("--masquerade-all", action="store_true", help="masquerade all traffic to cluster IPs")
    p.add_argument("--healthz-bind-address", type=bind_address(10256), default=("0.0.0.0", 10256),
                   metavar="IP:PORT", help="health port (0.0.0.0:10256; empty: off)")
    p.add_argument("--metrics-bind-address", type=bind_address(10249), default=("127.0.0.1", 10249),
                   metavar="IP:PORT", help="metrics port (127.0.0.1:10249; empty: off)")
    p.add_argument("--sync-period", type=duration_arg, default=30.0, metavar="DURATION",
                   help="re-apply every rule at least this often (30s)")
    p.add_argument("--iptables-min-sync-period", type=duration_arg, default=1.0, metavar="DURATION",
                   help="apply changes at most this often (1s)")
    p.add_argument("--iptables-backend", choices=BACKENDS, default="iptables",
                   help="which iptables to drive (iptables: the system's choice, nft on Debian)")
    p.add_argument("--cleanup", action="store_true", help="remove every KUBE-* rule and chain, then exit")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(run=run)


async def cleanup(backend: str) -> int:
    from minikube_py.proxy.iptables import IPTables, IPTablesError
    from minikube_py.proxy.rules import cleanup_input

    ipt = IPTables(backend)
    try:
        text = cleanup_input(await ipt.save())
        if text:
            await ipt.restore(text)
    except IPTablesError as e:
        raise UserError(str(e)) from None
    print("minikube-py proxy: removed the KUBE-* rules" if text else "minikube-py proxy: nothing to clean up",
          flush=True)
    return 0


async def serve(args: argparse.Namespace) -> int:
    from minikube_py.client import APIClient, ComponentServer
    from minikube_py.proxy.healthz import HealthzServer
    from minikube_py.proxy.iptables import IPTables
    from minikube_py.proxy.proxier import NodeWatch, Proxier, make_informers, wire
    from minikube_py.proxy.rules import RulesConfig

    node_name = args.hostname_override or socket.gethostname()
    try:
        config = RulesConfig(cluster_cidr=args.cluster_cidr.strip(), masquerade_all=args.masquerade_all)
    except ValueError as e:
        raise UserError(f"--cluster-cidr {args.cluster_cidr!r}: {e}") from None
    ipt = IPTables(args.iptables_backend)
    if not ipt.available():
        raise UserError(f"{args.iptables_backend}-save/-restore not found: install iptables")
    try:
        client = APIClient.from_kubeconfig(args.kubeconfig, user_agent="minikube-py-proxy")
    except (OSError, ValueError) as e:
        raise UserError(f"--kubeconfig {args.kubeconfig}: {e}") from None

    services, slices, nodes = make_informers(client, node_name)
    node = NodeWatch(nodes, node_name)
    metrics_server = None
    if args.metrics_bind_address is not None:
        host, port = args.metrics_bind_address
        metrics_server = ComponentServer(name="kube-proxy", bind_address=host, port=port, tls=False)
    proxier = Proxier(ipt, config, services=services, slices=slices, sync_period=args.sync_period,
                      min_sync_period=args.iptables_min_sync_period, node_eligible=node.eligible,
                      metrics=metrics_server.metrics if metrics_server else None)
    wire(proxier, services, slices)
    healthz = None
    if args.healthz_bind_address is not None:
        host, port = args.healthz_bind_address
        healthz = HealthzServer(proxier.health, proxier.live, bind_address=host, port=port)
    if metrics_server is not None:
        metrics_server.add_check("proxier", proxier.live)

    started: list[HealthzServer | ComponentServer] = []
    try:
        for what, srv in (("healthz", healthz), ("metrics", metrics_server)):
            if srv is None:
                continue
            try:
                await srv.start()
            except OSError as e:
                raise UserError(f"cannot listen on {srv.bind_address}:{srv.port} ({what}): "
                                f"{e.strerror}") from None
            started.append(srv)
        print(f"minikube-py proxy: node {node_name}; healthz on port {healthz.port if healthz else 'off'}, "
              f"metrics on port {metrics_server.port if metrics_server else 'off'}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        for inf in (services, slices, nodes):
            await inf.start()
        work = asyncio.create_task(proxier.run())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        work.cancel()
        try:
            await work
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("the sync loop failed")
        if not stop.is_set():
            log.error("the sync loop ended unexpectedly")
            return 1
        # As kube-proxy: the rules stay, so established and new connections keep working until
        # the next proxy takes over.
        return 0
    finally:
        for inf in (services, slices, nodes):
            await inf.stop()
        for srv in reversed(started):
            await srv.stop()
        await client.close()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.cleanup:
        return asyncio.run(cleanup(args.iptables_backend))
    if args.kubeconfig is None:
        raise UserError("--kubeconfig FILE is required (unless --cleanup)")
    if not args.kubeconfig.exists():
        raise UserError(f"--kubeconfig {args.kubeconfig}: no such file")
    if args.sync_period <= 0:
        raise UserError("--sync-period must be positive")
    if args.iptables_min_sync_period < 0:
        raise UserError("--iptables-min-sync-period must not be negative")
    return asyncio.run(serve(args))
