"""``minikube-py controller-manager``: kube-controller-manager, in the foreground until SIGTERM/SIGINT
or until it loses its leader lease (then it exits 1, for its supervisor to restart it)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

from minikube_py.cli.main import UserError


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "1", "yes", "t"):
        return True
    if low in ("false", "0", "no", "f"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("controller-manager", help="run the controllers (kube-controller-manager)",
                       description="Run the cluster's controllers (nodes, endpoints, namespaces, service "
                                   "accounts, workloads) against the API server, leader-elected.")
    p.add_argument("--kubeconfig", type=Path, default=None, metavar="FILE",
                   help="kubeconfig to reach the API server (default: $KUBECONFIG)")
    p.add_argument("--controllers", default="*", metavar="LIST",
                   help="controllers to run: '*' for all, 'foo' enables, '-foo' disables (default '*')")
    p.add_argument("--leader-elect", type=_bool, nargs="?", const=True, default=True, metavar="BOOL",
                   help="elect a leader among several copies before running controllers (default true)")
    p.add_argument("--leader-elect-lease-duration", default="15s", metavar="DURATION")
    p.add_argument("--leader-elect-renew-deadline", default="10s", metavar="DURATION")
    p.add_argument("--leader-elect-retry-period", default="2s", metavar="DURATION")
    p.add_argument("--leader-elect-resource-namespace", default="kube-system", metavar="NS")
    p.add_argument("--leader-elect-resource-name", default="kube-controller-manager", metavar="NAME")
    p.add_argument("--cluster-cidr", default="10.244.0.0/16", metavar="CIDR",
                   help="pod CIDR nodes' /24s come from")
    p.add_argument("--node-cidr-mask-size", type=int, default=24, metavar="BITS")
    p.add_argument("--node-monitor-grace-period", default="40s", metavar="DURATION",
                   help="silence after which a node is marked Ready=Unknown (default 40s)")
    p.add_argument("--node-monitor-period", default="5s", metavar="DURATION")
    p.add_argument("--pod-eviction-timeout", default="300s", metavar="DURATION",
                   help="wait before evicting pods that carry the default not-ready/unreachable tolerations")
    p.add_argument("--bind-address", default="127.0.0.1", metavar="ADDR",
                   help="address of the health/metrics port")
    p.add_argument("--secure-port", type=int, default=10257, metavar="PORT",
                   help="HTTPS health/metrics port (default 10257; 0 picks a free port, printed at start)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(run=run)


def _durations(args: argparse.Namespace) -> dict[str, float]:
    from minikube_py.cli.durations import parse_duration

    out = {}
    for flag in ("leader_elect_lease_duration", "leader_elect_renew_deadline", "leader_elect_retry_period",
                 "node_monitor_grace_period", "node_monitor_period", "pod_eviction_timeout"):
        try:
            out[flag] = parse_duration(getattr(args, flag))
        except ValueError as e:
            raise UserError(f"--{flag.replace('_', '-')}: {e}") from None
    for flag in ("node_monitor_grace_period", "node_monitor_period", "leader_elect_retry_period"):
        if out[flag] <= 0:
            raise UserError(f"--{flag.replace('_', '-')} must be positive")
    return out


def _build(args: argparse.Namespace) -> tuple[Any, Path]:
    from minikube_py.controllers.manager import parse_controllers
    from minikube_py.controllers.nodeipam import CIDRSet

    kubeconfig = args.kubeconfig or (Path(os.environ["KUBECONFIG"]) if os.environ.get("KUBECONFIG") else None)
    if kubeconfig is None:
        raise UserError("give --kubeconfig FILE (or set KUBECONFIG)")
    if not kubeconfig.is_file():
        raise UserError(f"--kubeconfig {kubeconfig}: no such file")
    if not 0 <= args.secure_port <= 65535:
        raise UserError(f"--secure-port {args.secure_port} is not a TCP port")
    try:
        controllers = parse_controllers(args.controllers)
    except ValueError as e:
        raise UserError(str(e)) from None
    try:
        CIDRSet(args.cluster_cidr, args.node_cidr_mask_size)
    except ValueError as e:
        raise UserError(f"--cluster-cidr: {e}") from None
    d = _durations(args)
    if args.leader_elect and not (d["leader_elect_lease_duration"] > d["leader_elect_renew_deadline"]
                                  > 1.2 * d["leader_elect_retry_period"]):
        raise UserError("need --leader-elect-lease-duration > --leader-elect-renew-deadline > "
                        "1.2 * --leader-elect-retry-period")
    options = {"cluster_cidr": args.cluster_cidr, "node_cidr_mask_size": args.node_cidr_mask_size,
               "node_monitor_grace_period": d["node_monitor_grace_period"],
               "node_monitor_period": d["node_monitor_period"],
               "pod_eviction_timeout": d["pod_eviction_timeout"]}
    settings = {"controllers": controllers, "options": options, "leader_elect": args.leader_elect,
                "lease_duration": d["leader_elect_lease_duration"],
                "renew_deadline": d["leader_elect_renew_deadline"],
                "retry_period": d["leader_elect_retry_period"],
                "lease_namespace": args.leader_elect_resource_namespace,
                "lease_name": args.leader_elect_resource_name,
                "bind_address": args.bind_address, "secure_port": args.secure_port}
    return settings, kubeconfig


async def serve(settings: dict[str, Any], kubeconfig: Path) -> int:
    from minikube_py.client.rest import APIClient
    from minikube_py.controllers.manager import ControllerManager

    try:
        client = APIClient.from_kubeconfig(kubeconfig, user_agent="kube-controller-manager")
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"--kubeconfig {kubeconfig}: {e}") from None
    try:
        manager = ControllerManager(client, **settings)
        task = asyncio.create_task(manager.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        server = manager.server
        try:
            await _announce(manager, task)
        except OSError as e:
            raise UserError(f"cannot listen on {settings['bind_address']}:{settings['secure_port']}: "
                            f"{e.strerror or e}") from None
        print(f"minikube-py controller-manager: identity {manager.identity}; serving health on port "
              f"{server.port if server else 0}", flush=True)
        try:
            return await task
        except asyncio.CancelledError:
            return 0
    finally:
        await client.close()


async def _announce(manager: Any, task: asyncio.Task[int]) -> None:
    """Wait until the health port listens (or the start failed) so that the port can be printed."""
    serving = asyncio.create_task(manager.serving.wait())
    try:
        await asyncio.wait([serving, task], return_when=asyncio.FIRST_COMPLETED)
    finally:
        serving.cancel()
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings, kubeconfig = _build(args)
    return asyncio.run(serve(settings, kubeconfig))
