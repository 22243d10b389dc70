"""``minikube-py scheduler``: the seeds' kube-scheduler, in the foreground until SIGTERM/SIGINT.

Leader-elected by default (Lease kube-system/kube-scheduler), so several can run and one schedules;
health and metrics on --secure-port (10259) over HTTPS with a self-signed certificate, as
kube-scheduler serves them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import uuid
from pathlib import Path

from minikube_py.cli.durations import duration_arg
from minikube_py.cli.main import UserError

log = logging.getLogger("minikube_py.scheduler")


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scheduler", help="run the scheduler (kube-scheduler)",
                       description="Watch for pods with no node and bind each to a node that fits.")
    p.add_argument("--kubeconfig", type=Path, required=True, metavar="FILE",
                   help="how to reach the API server")
    p.add_argument("--scheduler-name", default="default-scheduler",
                   help="schedule pods whose spec.schedulerName is this (default-scheduler)")
    p.add_argument("--leader-elect", type=_bool, default=True, nargs="?", const=True, metavar="true|false",
                   help="take the kube-system/kube-scheduler Lease before scheduling (default true)")
    p.add_argument("--leader-elect-lease-duration", type=duration_arg, default=15.0, metavar="DURATION")
    p.add_argument("--leader-elect-renew-deadline", type=duration_arg, default=10.0, metavar="DURATION")
    p.add_argument("--leader-elect-retry-period", type=duration_arg, default=2.0, metavar="DURATION")
    p.add_argument("--bind-address", default="127.0.0.1", help="address of the health/metrics port")
    p.add_argument("--secure-port", type=int, default=10259,
                   help="health/metrics HTTPS port (10259; 0 = any)")
    p.add_argument("--client-ca-file", type=Path, default=None, metavar="FILE",
                   help="CA whose client certificates may call the secure port (CN = user, O = groups); bearer "
                        "tokens are checked with a TokenReview and access with a SubjectAccessReview")
    p.add_argument("--authorization-always-allow-paths", default="/healthz,/readyz,/livez", metavar="PATHS",
                   help="paths served without authentication or authorization (default /healthz,/readyz,/livez)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(run=run)


async def serve(args: argparse.Namespace) -> int:
    from minikube_py.client import APIClient, ComponentServer, LeaderElector
    from minikube_py.client.delegated_auth import DelegatedAuth
    from minikube_py.scheduler.scheduler import Scheduler

    try:
        client = APIClient.from_kubeconfig(args.kubeconfig, user_agent="minikube-py-scheduler")
    except (OSError, ValueError) as e:
        raise UserError(f"--kubeconfig {args.kubeconfig}: {e}") from None
    identity = f"{socket.gethostname()}_{uuid.uuid4()}"
    # /metrics is for callers the API server vouches for, as kube-scheduler's 10259.
    auth = DelegatedAuth.for_component(client, client_ca_file=args.client_ca_file,
                                       always_allow_paths=args.always_allow_paths)
    server = ComponentServer(name="kube-scheduler", bind_address=args.bind_address, port=args.secure_port,
                             auth=auth)
    scheduler = Scheduler(client, scheduler_name=args.scheduler_name, identity=identity,
                          metrics=server.metrics)
    server.add_check("scheduler", scheduler.healthy)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except OSError as e:
        await client.close()
        raise UserError(f"cannot listen on {args.bind_address}:{args.secure_port}: {e.strerror}") from None
    print(f"minikube-py scheduler: serving health and metrics on port {server.port}", flush=True)
    lost = False
    if args.leader_elect:
        elector = LeaderElector(client, namespace="kube-system", name="kube-scheduler", identity=identity,
                                lease_duration=args.leader_elect_lease_duration,
                                renew_deadline=args.leader_elect_renew_deadline,
                                retry_period=args.leader_elect_retry_period)
        work = asyncio.create_task(elector.run(scheduler.run))
    else:
        work = asyncio.create_task(scheduler.run())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if work.done() and not stop.is_set():
            # Leadership lost (or the loop died): exit so the supervisor restarts us, as Kubernetes
            # components do, rather than carrying on with a cache another leader invalidates.
            lost = True
            exc = work.exception() if not work.cancelled() else None
            log.error("scheduler stopped: %s", exc or "leader election lost")
    finally:
        stopper.cancel()
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await work
        await scheduler.stop()
        await server.stop()
        await client.close()
    return 1 if lost else 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not 0 <= args.secure_port <= 65535:
        raise UserError(f"--secure-port {args.secure_port} is not a TCP port")
    if not args.kubeconfig.exists():
        raise UserError(f"--kubeconfig {args.kubeconfig}: no such file")
    from minikube_py.client.delegated_auth import auth_flag_values

    try:
        _, args.always_allow_paths = auth_flag_values(args.client_ca_file, args.authorization_always_allow_paths)
    except ValueError as e:
        raise UserError(str(e)) from None
    return asyncio.run(serve(args))
