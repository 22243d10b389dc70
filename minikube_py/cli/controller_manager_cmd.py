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
    p.add_argument("--use-service-account-credentials", type=_bool, nargs="?", const=True, default=False,
                   metavar="BOOL",
                   help="run each controller as its own ServiceAccount in kube-system (tokens from the "
                        "TokenRequest API) instead of this process's identity; needed unless that identity "
                        "may write everything the controllers write (default false, as kube-controller-manager)")
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
    p.add_argument("--root-ca-file", type=Path, default=None, metavar="FILE",
                   help="the cluster CA (PEM) published to every namespace as ConfigMap kube-root-ca.crt "
                        "(default: the CA in --kubeconfig)")
    p.add_argument("--bind-address", default="127.0.0.1", metavar="ADDR",
                   help="address of the health/metrics port")
    p.add_argument("--secure-port", type=int, default=10257, metavar="PORT",
                   help="HTTPS health/metrics port (default 10257; 0 picks a free port, printed at start)")
    p.add_argument("--client-ca-file", type=Path, default=None, metavar="FILE",
                   help="CA whose client certificates may call the secure port (CN = user, O = groups); bearer "
                        "tokens are checked with a TokenReview and access with a SubjectAccessReview")
    p.add_argument("--authorization-always-allow-paths", default="/healthz,/readyz,/livez", metavar="PATHS",
                   help="paths served without authentication or authorization (default /healthz,/readyz,/livez)")
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
               "pod_eviction_timeout": d["pod_eviction_timeout"], "root_ca_pem": _root_ca(args, kubeconfig)}
    settings = {"controllers": controllers, "options": options, "leader_elect": args.leader_elect,
                "lease_duration": d["leader_elect_lease_duration"],
                "renew_deadline": d["leader_elect_renew_deadline"],
                "retry_period": d["leader_elect_retry_period"],
                "lease_namespace": args.leader_elect_resource_namespace,
                "lease_name": args.leader_elect_resource_name,
                "bind_address": args.bind_address, "secure_port": args.secure_port,
                "use_service_account_credentials": args.use_service_account_credentials,
                **_auth_settings(args)}
    return settings, kubeconfig


def _root_ca(args: argparse.Namespace, kubeconfig: Path) -> bytes:
    """--root-ca-file, else the CA the kubeconfig trusts for the API server (b"" when neither has one)."""
    if args.root_ca_file is not None:
        try:
            pem = args.root_ca_file.read_bytes()
        except OSError as e:
            raise UserError(f"--root-ca-file {args.root_ca_file}: {e.strerror}") from None
        if b"-----BEGIN CERTIFICATE-----" not in pem:
            raise UserError(f"--root-ca-file {args.root_ca_file}: not a PEM certificate")
        return pem
    from minikube_py.client.kubeconfig import load_kubeconfig

    try:
        return load_kubeconfig(kubeconfig).ca_pem or b""
    except (OSError, ValueError, KeyError):
        return b""  # serve() reports an unusable kubeconfig


def _auth_settings(args: argparse.Namespace) -> dict[str, Any]:
    from minikube_py.client.delegated_auth import auth_flag_values

    try:
        ca, paths = auth_flag_values(args.client_ca_file, args.authorization_always_allow_paths)
    except ValueError as e:
        raise UserError(str(e)) from None
    return {"client_ca_file": ca, "always_allow_paths": paths}


async def serve(settings: dict[str, Any], kubeconfig: Path) -> int:
    from minikube_py.client.delegated_auth import DEFAULT_ALWAYS_ALLOW_PATHS, DelegatedAuth
    from minikube_py.client.kubeconfig import load_kubeconfig
    from minikube_py.client.rest import APIClient, APIConnectionError, ApiStatusError
    from minikube_py.controllers.clientbuilder import ServiceAccountClientBuilder, SimpleClientBuilder
    from minikube_py.controllers.manager import ControllerManager

    settings = dict(settings)
    use_sa = settings.pop("use_service_account_credentials", False)
    client_ca_file = settings.pop("client_ca_file", None)
    always_allow_paths = settings.pop("always_allow_paths", DEFAULT_ALWAYS_ALLOW_PATHS)
    try:
        config = load_kubeconfig(kubeconfig)
        client = APIClient(config.server, ssl_context=config.ssl_context(), headers=config.auth_headers(),
                           user_agent="kube-controller-manager")
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"--kubeconfig {kubeconfig}: {e}") from None
    builder = ServiceAccountClientBuilder(client, config) if use_sa else SimpleClientBuilder(client)
    checker: asyncio.Task[None] | None = None
    try:
        manager = ControllerManager(client, client_builder=builder, **settings)
        if manager.server is not None:
            # /metrics is for callers the API server vouches for, as kube-controller-manager's 10257.
            manager.server.auth = DelegatedAuth.for_component(client, client_ca_file=client_ca_file,
                                                              always_allow_paths=always_allow_paths)
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
        if not use_sa:
            checker = asyncio.create_task(_warn_if_not_allowed(client))
        try:
            return await task
        except asyncio.CancelledError:
            return 0
        except (ApiStatusError, APIConnectionError) as e:
            # Typically a TokenRequest this identity may not make: say so in one line, no traceback.
            what = "cannot get the controllers' ServiceAccount credentials" if use_sa else "stopped"
            raise UserError(f"controller-manager {what}: {e}") from None
    finally:
        if checker is not None:
            checker.cancel()
        await builder.close()
        await client.close()


# What the controllers write, asked of the API server when they all run as this process's identity.
_NEEDED = (("create", "", "pods"), ("update", "apps", "deployments/status"), ("update", "", "nodes/status"))


async def _warn_if_not_allowed(client: Any) -> None:
    """Without --use-service-account-credentials every write is made as this process's own identity.
    Kubernetes' system:kube-controller-manager role does not allow those writes (it is meant for the
    flag), so say once and clearly why the controllers will get 403s, instead of only logging them."""
    import sys

    from minikube_py.client.rest import APIConnectionError, ApiStatusError

    try:
        who = await client.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                                   body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        user = ((who or {}).get("status") or {}).get("userInfo", {}).get("username", "this identity")
        for verb, group, res in _NEEDED:
            resource, _, sub = res.partition("/")
            answer = await client.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body={
                "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {"verb": verb, "group": group, "resource": resource,
                                                "subresource": sub}}})
            if not ((answer or {}).get("status") or {}).get("allowed"):
                print(f'minikube-py controller-manager: User "{user}" cannot {verb} {res}'
                      f'{"." + group if group else ""}: the controllers will fail with 403 Forbidden. Run with '
                      f"--use-service-account-credentials (each controller then acts as its ServiceAccount in "
                      f"kube-system) or grant this identity the system:controller:* roles.",
                      file=sys.stderr, flush=True)
                return
    except (ApiStatusError, APIConnectionError, TimeoutError, ValueError) as e:
        logging.getLogger(__name__).info("could not check the controllers' permissions: %s", e)


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
