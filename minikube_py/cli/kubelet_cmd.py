"""``minikube-py kubelet``: the node agent, in the foreground until SIGTERM/SIGINT.

Stopping the kubelet leaves its pods running (the runtime keeps them); the next start finds them
again by their labels. Every path and port is a flag, so several nodes can share one machine.

The API on --port is closed by default, as kubeadm and the KubeletConfiguration file set it up (the bare
kubelet binary's flags default to open): no anonymous requests, bearer tokens checked by a TokenReview,
every request authorized by a SubjectAccessReview, client certificates when --client-ca-file is given.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import logging
import re
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from minikube_py.cli.main import UserError

if TYPE_CHECKING:
    from minikube_py.client import APIClient
    from minikube_py.client.delegated_auth import DelegatedAuth
    from minikube_py.kubelet.kubelet import KubeletConfig

log = logging.getLogger("minikube_py.kubelet")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go's duration text (``10s``, ``1m30s``, ``500ms``) or plain seconds -> seconds (> 0)."""
    raw = text.strip()
    try:
        seconds = float(raw)
    except ValueError:
        pos, seconds = 0, 0.0
        for m in _DURATION.finditer(raw):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos != len(raw) or not raw:
            raise argparse.ArgumentTypeError(f"invalid duration {text!r} (like 10s, 1m30s, 500ms)") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"duration {text!r} must be positive")
    return seconds


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


def _socket_path(text: str) -> Path:
    return Path(text.removeprefix("unix://"))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("kubelet", help="run the node agent (kubelet) against the local runtime",
                       description="Register this machine as a Node and run the pods bound to it.")
    p.add_argument("--kubeconfig", type=Path, required=True, metavar="FILE", help="how to reach the API server")
    p.add_argument("--hostname-override", default=None, metavar="NAME", help="the Node's name (default: hostname)")
    p.add_argument("--node-ip", type=_ip, required=True, metavar="IP",
                   help="the node's InternalIP (the API server reaches the kubelet there)")
    p.add_argument("--runtime-endpoint", type=_socket_path, default=Path("/run/minikube-py/runtime.sock"),
                   metavar="SOCKET", help="the runtime's unix socket (unix:// prefix allowed)")
    p.add_argument("--root-dir", type=Path, default=Path("/var/lib/minikube-py/kubelet"),
                   help="pod volumes and state")
    p.add_argument("--pod-log-dir", type=Path, default=Path("/var/log/pods"), help="container logs (CRI format)")
    p.add_argument("--bind-address", default="0.0.0.0", help="address of the kubelet API (10250)")
    p.add_argument("--port", type=int, default=10250, help="kubelet API port (HTTPS; 0 = any)")
    p.add_argument("--healthz-bind-address", default="127.0.0.1")
    p.add_argument("--healthz-port", type=int, default=10248, help="plain-HTTP healthz port (0 = any)")
    p.add_argument("--register-node", type=_bool, default=True, nargs="?", const=True, metavar="true|false")
    p.add_argument("--max-pods", type=int, default=110)
    p.add_argument("--node-labels", default="", metavar="K=V,...")
    p.add_argument("--cluster-dns", default="", metavar="IP,...", help="DNS servers for ClusterFirst pods")
    p.add_argument("--cluster-domain", default="cluster.local")
    p.add_argument("--tls-cert-file", type=Path, default=None)
    p.add_argument("--tls-private-key-file", type=Path, default=None)
    p.add_argument("--insecure-http", action="store_true",
                   help="serve the kubelet API over plain HTTP (loopback tests only)")
    p.add_argument("--client-ca-file", type=Path, default=None, metavar="FILE",
                   help="CA that signs client certificates for the kubelet API (CN = user, O = groups)")
    p.add_argument("--anonymous-auth", type=_bool, default=False, nargs="?", const=True, metavar="true|false",
                   help="treat requests without credentials as system:anonymous instead of answering 401 "
                        "(default false)")
    p.add_argument("--authentication-token-webhook", type=_bool, default=True, nargs="?", const=True,
                   metavar="true|false", help="check bearer tokens with a TokenReview (default true)")
    p.add_argument("--authentication-token-webhook-cache-ttl", type=parse_duration, default=120.0,
                   metavar="DURATION", help="how long token reviews are cached (2m)")
    p.add_argument("--authorization-mode", choices=("Webhook", "AlwaysAllow"), default="Webhook",
                   help="Webhook: a SubjectAccessReview per request (default); AlwaysAllow: no checks")
    p.add_argument("--authorization-webhook-cache-authorized-ttl", type=parse_duration, default=300.0,
                   metavar="DURATION", help="how long an allowed access review is cached (5m)")
    p.add_argument("--authorization-webhook-cache-unauthorized-ttl", type=parse_duration, default=30.0,
                   metavar="DURATION", help="how long a denied access review is cached (30s)")
    p.add_argument("--node-status-update-frequency", type=parse_duration, default=10.0, metavar="DURATION")
    p.add_argument("--node-status-report-frequency", type=parse_duration, default=300.0, metavar="DURATION")
    p.add_argument("--node-lease-renew-interval", type=parse_duration, default=10.0, metavar="DURATION")
    p.add_argument("--sync-frequency", type=parse_duration, default=1.0, metavar="DURATION",
                   help="how often each pod's containers are looked at (the PLEG relist period)")
    p.add_argument("--housekeeping-interval", type=parse_duration, default=10.0, metavar="DURATION")
    p.add_argument("--backoff-initial", type=parse_duration, default=10.0, metavar="DURATION",
                   help="first delay of the crash-loop and image-pull back-offs (10s)")
    p.add_argument("--backoff-max", type=parse_duration, default=300.0, metavar="DURATION")
    p.add_argument("--host-gw-routes", type=_bool, default=True, nargs="?", const=True, metavar="true|false",
                   help="route the other nodes' pod CIDRs via their InternalIPs")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(run=run)


def config_from_args(args: argparse.Namespace) -> KubeletConfig:
    from minikube_py.kubelet.kubelet import KubeletConfig
    from minikube_py.kubelet.node_status import parse_node_labels

    name = (args.hostname_override or socket.gethostname()).strip().lower()
    if not name:
        raise UserError("the node needs a name (--hostname-override)")
    try:
        labels = parse_node_labels(args.node_labels)
    except ValueError as e:
        raise UserError(str(e)) from None
    dns = [s.strip() for s in args.cluster_dns.split(",") if s.strip()]
    for server in dns:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise UserError(f"--cluster-dns: {server!r} is not an IP address") from None
    if (args.tls_cert_file is None) != (args.tls_private_key_file is None):
        raise UserError("--tls-cert-file and --tls-private-key-file go together")
    if args.max_pods < 1:
        raise UserError("--max-pods must be at least 1")
    if args.backoff_max < args.backoff_initial:
        raise UserError("--backoff-max must not be below --backoff-initial")
    for flag, port in (("--port", args.port), ("--healthz-port", args.healthz_port)):
        if not 0 <= port <= 65535:
            raise UserError(f"{flag} {port} is not a TCP port")
    return KubeletConfig(
        node_name=name, node_ip=args.node_ip, runtime_endpoint=args.runtime_endpoint, root_dir=args.root_dir,
        pod_log_dir=args.pod_log_dir, bind_address=args.bind_address, port=args.port,
        healthz_port=args.healthz_port, register_node=args.register_node, max_pods=args.max_pods,
        node_labels=labels, cluster_dns=dns, cluster_domain=args.cluster_domain,
        status_update_frequency=args.node_status_update_frequency,
        status_report_frequency=args.node_status_report_frequency,
        lease_renew_interval=args.node_lease_renew_interval, sync_period=args.sync_frequency,
        housekeeping_period=args.housekeeping_interval, backoff_initial=args.backoff_initial,
        backoff_cap=args.backoff_max, host_gw_routes=args.host_gw_routes)


def build_auth(args: argparse.Namespace, client: APIClient) -> DelegatedAuth:
    """The kubelet API's authenticator and authorizer from the flags."""
    from minikube_py.client.delegated_auth import (
        TOKEN_FAILURE_TTL,
        DelegatedAuth,
        TokenReviewer,
        build_authorizer,
        check_client_ca_file,
    )

    if args.insecure_http and args.client_ca_file is not None:
        raise UserError("--client-ca-file needs HTTPS: client certificates cannot come over --insecure-http")
    if args.client_ca_file is not None:
        try:
            check_client_ca_file(args.client_ca_file)
        except ValueError as e:
            raise UserError(f"--client-ca-file {args.client_ca_file}: {e}") from None
    elif not args.anonymous_auth and args.authorization_mode == "Webhook":
        log.warning("no --client-ca-file: client certificates (the API server's, for logs and exec) are not "
                    "accepted by the kubelet API, only bearer tokens")
    reviewer = None
    if args.authentication_token_webhook:
        reviewer = TokenReviewer(client, ttl=args.authentication_token_webhook_cache_ttl,
                                 failure_ttl=TOKEN_FAILURE_TTL)
    authorizer = build_authorizer(args.authorization_mode, client,
                                  allow_ttl=args.authorization_webhook_cache_authorized_ttl,
                                  deny_ttl=args.authorization_webhook_cache_unauthorized_ttl)
    return DelegatedAuth(authorizer=authorizer, client_ca_file=args.client_ca_file, token_reviewer=reviewer,
                         anonymous=args.anonymous_auth)


async def serve(args: argparse.Namespace) -> int:
    from minikube_py.client import APIClient, ComponentServer
    from minikube_py.kubelet.kubelet import Kubelet
    from minikube_py.kubelet.server import serving_ssl_context, start_server
    from minikube_py.runtime.client import RuntimeClient

    config = config_from_args(args)
    try:
        client = APIClient.from_kubeconfig(args.kubeconfig, user_agent=f"kubelet/{config.node_name}")
    except (OSError, ValueError) as e:
        raise UserError(f"--kubeconfig {args.kubeconfig}: {e}") from None
    try:
        auth = build_auth(args, client)
    except UserError:
        await client.close()
        raise
    runtime = RuntimeClient(config.runtime_endpoint)
    kubelet = Kubelet(client, runtime, config)
    healthz = ComponentServer(name="kubelet", bind_address=args.healthz_bind_address, port=args.healthz_port,
                              tls=False)
    healthz.add_check("syncloop", lambda: kubelet.started.is_set())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = None
    try:
        try:
            ssl_context = None if args.insecure_http else serving_ssl_context(
                config.node_name, config.node_ip, args.tls_cert_file, args.tls_private_key_file)
            runner, port = await start_server(kubelet, args.bind_address, args.port, ssl_context, auth)
            await healthz.start()
        except (OSError, ValueError) as e:
            raise UserError(f"cannot serve the kubelet API: {e}") from None
        # Port 0 asked for any port: the Node must advertise the real one.
        kubelet.config.port = port
        kubelet.node_config = dataclasses.replace(kubelet.node_config, port=port)
        print(f"minikube-py kubelet: node {kubelet.config.node_name} serving on port {port}, "
              f"healthz on port {healthz.port}", flush=True)
        await kubelet.run(stop)
    finally:
        await healthz.stop()
        if runner is not None:
            await runner.cleanup()
        await runtime.close()
        await client.close()
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(serve(args))
