"""``minikube-py up --local``: a whole cluster on this machine in the foreground — API server, scheduler,
controller-manager and optionally fake nodes, each its own process — until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from minikube_py.cli.fake_nodes_cmd import duration_arg
from minikube_py.cli.main import UserError

if TYPE_CHECKING:
    from minikube_py.localcluster import LocalCluster


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "up", help="run a local cluster: the control plane plus real (--nodes) or fake (--fake-nodes) nodes",
        description="Start the control plane as child processes in the foreground and stop them all on "
                    "Ctrl-C. Logs go to DATA_DIR/logs/<component>.log; DATA_DIR/cluster.json says where "
                    "everything runs.")
    p.add_argument("--local", action="store_true", required=True,
                   help="everything on this machine (the only mode so far; the lab comes with `make lab`)")
    p.add_argument("--data-dir", type=Path, required=True, metavar="DIR", help="state directory")
    p.add_argument("--port", type=int, default=6443, help="API server HTTPS port (6443; 0 = any free port)")
    p.add_argument("--fake-nodes", type=int, default=0, metavar="N", help="also run N fake nodes (0)")
    p.add_argument("--nodes", type=int, default=0, metavar="N",
                   help="also run N real nodes, each a network namespace with a runtime, kubelet and proxy, "
                        "and a registry with the demo images (needs root; 0)")
    p.add_argument("--node-heartbeat", type=duration_arg, default=None, metavar="DURATION",
                   help="fake nodes' Lease renewal interval (default: a quarter of the grace period, <= 10s)")
    p.add_argument("--standard-ports", action="store_true",
                   help="health ports 10259 (scheduler) and 10257 (controller-manager) instead of free ones")
    p.add_argument("--node-monitor-grace-period", type=duration_arg, default=None, metavar="DURATION",
                   help="passed to the controller-manager (its default: 40s)")
    p.add_argument("--pod-eviction-timeout", type=duration_arg, default=None, metavar="DURATION",
                   help="passed to the controller-manager (its default: 300s)")
    p.add_argument("--leader-elect-lease-duration", type=duration_arg, default=None, metavar="DURATION",
                   help="passed to the scheduler and controller-manager (their default: 15s)")
    p.add_argument("--leader-elect-renew-deadline", type=duration_arg, default=None, metavar="DURATION")
    p.add_argument("--leader-elect-retry-period", type=duration_arg, default=None, metavar="DURATION")
    p.add_argument("-v", "--verbose", action="store_true", help="verbose logs from every component")
    p.set_defaults(run=run)


def _summary(cluster: LocalCluster) -> str:
    lines = [f"minikube-py up: cluster ready; kubeconfig: {cluster.kubeconfig}",
             f"  API server   https://127.0.0.1:{cluster.api_port}"]
    for name, child in cluster.children.items():
        where = f"health https://127.0.0.1:{child.port}/healthz" if child.port and name != "apiserver" else ""
        lines.append(f"  {name:<18} pid {child.pid:<8} {where}".rstrip())
    if cluster.nodes:
        lines += cluster.nodes.summary_lines()
    lines += [f"  logs         {cluster.log_dir}/",
              f"Try:  kubectl --kubeconfig {cluster.kubeconfig} get nodes",
              "Stop with Ctrl-C."]
    return "\n".join(lines)


async def supervise(args: argparse.Namespace) -> int:
    from minikube_py.localcluster import ClusterError, LocalCluster, LocalClusterConfig

    cfg = LocalClusterConfig(
        data_dir=args.data_dir, port=args.port, fake_nodes=args.fake_nodes, nodes=args.nodes,
        standard_ports=args.standard_ports,
        node_monitor_grace_period=args.node_monitor_grace_period, pod_eviction_timeout=args.pod_eviction_timeout,
        node_heartbeat=args.node_heartbeat, leader_elect_lease_duration=args.leader_elect_lease_duration,
        leader_elect_renew_deadline=args.leader_elect_renew_deadline,
        leader_elect_retry_period=args.leader_elect_retry_period, verbose=args.verbose)
    try:
        cluster = LocalCluster(cfg)
    except ClusterError as e:
        raise UserError(str(e)) from None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(cluster.start())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        # Stopped while starting: start() stops what it started when cancelled.
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        return 0
    try:
        starting.result()
    except (ClusterError, OSError) as e:
        stopper.cancel()
        raise UserError(str(e)) from None
    print(_summary(cluster), flush=True)
    exited = asyncio.create_task(cluster.wait_any_exit())
    await asyncio.wait({exited, stopper}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if exited.done() and not stopper.done():
        child = exited.result()
        rc = child.proc.returncode if child.proc else None
        print(f"minikube-py up: {child.name} (pid {child.pid}) exited unexpectedly with code {rc}; "
              f"see {child.log_path}. Stopping the cluster.", file=sys.stderr, flush=True)
        code = 1
    for t in (exited, stopper):
        t.cancel()
    await cluster.stop()
    if code == 0:
        print("minikube-py up: stopped", flush=True)
    return code


def run(args: argparse.Namespace) -> int:
    if args.nodes > 0 and os.geteuid() != 0:
        from minikube_py.localnodes import ROOT_ERROR

        print(ROOT_ERROR, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(supervise(args))
