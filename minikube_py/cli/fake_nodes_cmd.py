"""``minikube-py fake-nodes``: kwok-like fake nodes that heartbeat and "run" the pods bound to them,
in the foreground until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from minikube_py.cli.durations import duration_arg
from minikube_py.cli.main import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fake-nodes", help="run kwok-like fake nodes (heartbeats, pods go Running without containers)",
        description="Register COUNT Node objects and act as their kubelets: renew each node's Lease every "
                    "heartbeat and move pods bound to them to Running/Ready with an IP from the node's "
                    "podCIDR. Annotate a Node fake.minikube-py/stop-heartbeat=true to stop its heartbeats "
                    "(its Lease and status are no longer renewed; its pods are still served).")
    p.add_argument("--kubeconfig", type=Path, required=True, help="kubeconfig of the cluster")
    p.add_argument("--count", type=int, required=True, help="how many nodes")
    p.add_argument("--prefix", default="fake-node-", help="node name prefix (fake-node-)")
    p.add_argument("--start", type=int, default=0,
                   help="index of the first node, so that several processes can serve disjoint sets (0)")
    p.add_argument("--cpu", default="4", help="capacity and allocatable cpu per node (4)")
    p.add_argument("--memory", default="16Gi", help="capacity and allocatable memory per node (16Gi)")
    p.add_argument("--pods", type=int, default=110, help="pod capacity per node (110)")
    p.add_argument("--heartbeat", type=duration_arg, default=10.0,
                   help="Lease renewal interval (10s); node status is re-posted every 6 heartbeats")
    p.add_argument("--address-range", default="127.1.0.0/16",
                   help="where node InternalIPs come from; data only, never routed (127.1.0.0/16)")
    p.add_argument("--workers", type=int, default=16, help="concurrent API writes (16)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(run=run)


async def serve(args: argparse.Namespace) -> None:
    from minikube_py.client import APIClient, APIConnectionError, ApiStatusError
    from minikube_py.kubelet.fake_nodes import FakeNodeConfig, FakeNodes, FakeNodesError

    cfg = FakeNodeConfig(count=args.count, prefix=args.prefix, start=args.start, cpu=args.cpu,
                         memory=args.memory, pods=args.pods, heartbeat=args.heartbeat,
                         address_range=args.address_range, workers=args.workers)
    try:
        cfg.validate()
    except FakeNodesError as e:
        raise UserError(str(e)) from None
    try:
        client = APIClient.from_kubeconfig(args.kubeconfig, user_agent="minikube-py-fake-nodes")
    except (OSError, ValueError) as e:
        raise UserError(f"kubeconfig {args.kubeconfig}: {e}") from None
    fake = FakeNodes(client, cfg)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(fake.run())
    stopper = asyncio.create_task(stop.wait())
    ready = asyncio.create_task(fake.ready.wait())
    try:
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            print(f"minikube-py fake-nodes: serving {cfg.count} nodes "
                  f"({cfg.prefix}{cfg.start}..{cfg.prefix}{cfg.start + cfg.count - 1})", flush=True)
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, stopper, ready):
            t.cancel()
        await asyncio.gather(task, stopper, ready, return_exceptions=True)
        await client.close()
    error = task.exception() if task.done() and not task.cancelled() else None
    if isinstance(error, (APIConnectionError, ApiStatusError, OSError)):
        raise UserError(f"{type(error).__name__}: {error}") from error
    if error is not None:
        raise error


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args))
    return 0
