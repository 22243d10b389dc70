"""``minikube-py apiserver``: the seeds' kube-apiserver, in the foreground until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from minikube_py.cli.main import UserError

if TYPE_CHECKING:
    from minikube_py.apiserver.server import Config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("apiserver", help="run the API server (kube-apiserver)",
                       description="Serve the Kubernetes API over HTTPS from the embedded SQLite store "
                                   "or a real etcd cluster.")
    store = p.add_argument_group("store (one of)")
    store.add_argument("--etcd-servers", metavar="URLS",
                       help="comma-separated etcd client endpoints, e.g. http://10.0.0.1:2379,10.0.0.2:2379")
    store.add_argument("--sqlite-path", metavar="FILE", type=Path,
                       help="the embedded SQLite store (default: DATA_DIR/store.db with --local)")
    etcd_tls = p.add_argument_group("TLS to etcd (https:// endpoints)")
    etcd_tls.add_argument("--etcd-cafile", type=Path, metavar="FILE",
                          help="CA that signed etcd's serving certificates (default: the system's CAs)")
    etcd_tls.add_argument("--etcd-certfile", type=Path, metavar="FILE",
                          help="client certificate presented to etcd (its --client-cert-auth)")
    etcd_tls.add_argument("--etcd-keyfile", type=Path, metavar="FILE", help="its key")
    p.add_argument("--local", action="store_true",
                   help="local development: create the CA, certificates, a token and DATA_DIR/admin.kubeconfig "
                        "on first start; store in DATA_DIR")
    p.add_argument("--data-dir", type=Path, metavar="DIR", help="state directory (required with --local)")
    p.add_argument("--bind-address", default=None, help="address to listen on (default 127.0.0.1 with "
                   "--local, else 0.0.0.0)")
    p.add_argument("--port", "--secure-port", dest="port", type=int, default=6443, help="HTTPS port (6443)")
    p.add_argument("--advertise-address", default=None,
                   help="the address other components reach this server at (default: the bind address, "
                        "or 127.0.0.1)")
    p.add_argument("--tls-cert-file", type=Path, help="serving certificate (PEM)")
    p.add_argument("--tls-private-key-file", type=Path, help="serving key (PEM)")
    p.add_argument("--client-ca-file", type=Path, help="CA that signs client certificates (x509 authentication)")
    p.add_argument("--token-auth-file", type=Path, help="static token file: token,user,uid,\"group1,group2\"")
    p.add_argument("--anonymous", action="store_true",
                   help="let requests without credentials in (local development only)")
    p.add_argument("--kubelet-client-certificate", type=Path, metavar="FILE",
                   help="client certificate for the kubelets' API (logs, exec); with it they are reached over HTTPS")
    p.add_argument("--kubelet-client-key", type=Path, metavar="FILE", help="its key")
    p.add_argument("--kubelet-certificate-authority", type=Path, metavar="FILE",
                   help="CA to verify the kubelets' serving certificates (default: not verified, as kube-apiserver)")
    p.add_argument("--authorization-mode", default="Node,RBAC", metavar="MODES",
                   help="authorizers asked in order: Node, RBAC, AlwaysAllow, AlwaysDeny (default Node,RBAC; "
                        "members of system:masters may always do everything)")
    p.add_argument("--service-account-key-file", type=Path, action="append", default=[], metavar="FILE",
                   help="PEM public (or private) keys that verify ServiceAccount tokens (repeatable)")
    p.add_argument("--service-account-signing-key-file", type=Path, metavar="FILE",
                   help="PEM private key (RSA or EC P-256) that signs ServiceAccount tokens")
    p.add_argument("--service-account-issuer", default="https://kubernetes.default.svc.cluster.local",
                   metavar="URL", help="the iss claim of ServiceAccount tokens, and the accepted audience")
    p.add_argument("--disable-admission-plugins", default="", metavar="LIST",
                   help="admission plugins to turn off (known: ServiceAccount, on by default); harnesses "
                        "without a controller-manager, which makes the default ServiceAccounts, turn it off")
    p.add_argument("--encryption-provider-config", type=Path, metavar="FILE",
                   help="EncryptionConfiguration (apiserver.config.k8s.io/v1): encrypt these resources at rest")
    p.add_argument("--service-cluster-ip-range", default="10.96.0.0/12")
    p.add_argument("--service-node-port-range", default="30000-32767")
    p.add_argument("--insecure-http", action="store_true",
                   help="serve plain HTTP (tests and benchmarks on loopback only)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(run=run)


def _build_config(args: argparse.Namespace) -> tuple[Config, str]:
    from minikube_py.apiserver.server import Config

    if args.port < 0 or args.port > 65535:
        raise UserError(f"--port {args.port} is not a TCP port")
    try:
        lo, hi = (int(x) for x in args.service_node_port_range.split("-"))
    except ValueError:
        raise UserError(f"--service-node-port-range {args.service_node_port_range!r}: use FIRST-LAST") from None
    import ipaddress

    try:
        ipaddress.ip_network(args.service_cluster_ip_range)
    except ValueError as e:
        raise UserError(f"--service-cluster-ip-range: {e}") from None
    if args.etcd_servers and args.sqlite_path:
        raise UserError("give either --etcd-servers or --sqlite-path, not both")
    data_dir: Path | None = args.data_dir
    if args.local and data_dir is None:
        raise UserError("--local needs --data-dir DIR")
    etcd_files = (args.etcd_cafile, args.etcd_certfile, args.etcd_keyfile)
    if any(etcd_files) and not args.etcd_servers:
        raise UserError("--etcd-cafile, --etcd-certfile and --etcd-keyfile need --etcd-servers")
    if (args.etcd_certfile is None) != (args.etcd_keyfile is None):
        raise UserError("--etcd-certfile and --etcd-keyfile go together")
    if args.etcd_servers:
        endpoints = [e.strip() for e in args.etcd_servers.split(",") if e.strip()]
        if not endpoints:
            raise UserError("--etcd-servers: give at least one endpoint")
        schemes = {e.split("://", 1)[0] for e in endpoints if "://" in e}
        if {"http", "https"} <= schemes:
            raise UserError(f"--etcd-servers {args.etcd_servers}: mixes http:// and https:// endpoints; "
                            "every etcd member must be reached the same way")
        if "https" in schemes and not any(etcd_files):
            # As kube-apiserver: the system's CAs and no client certificate, which an etcd with
            # --client-cert-auth refuses; the warning says why before the store error does.
            logging.getLogger("minikube_py.apiserver").warning(
                "https:// etcd endpoints without --etcd-cafile/--etcd-certfile/--etcd-keyfile: "
                "checking etcd against the system's CAs and sending no client certificate")
        if "http" in schemes and any(etcd_files):
            raise UserError("--etcd-cafile/--etcd-certfile/--etcd-keyfile are for https:// etcd endpoints, "
                            f"but --etcd-servers is {args.etcd_servers}")
        store_url = "etcd://" + ",".join(endpoints)
    else:
        path = args.sqlite_path or (data_dir / "store.db" if data_dir else None)
        if path is None:
            raise UserError("no store: give --etcd-servers, --sqlite-path, or --local --data-dir DIR")
        store_url = f"sqlite://{Path(path).resolve()}"
    bind = args.bind_address or ("127.0.0.1" if args.local else "0.0.0.0")
    advertise = args.advertise_address or (bind if bind not in ("0.0.0.0", "::") else "127.0.0.1")
    cfg = Config(store_url=store_url, bind_address=bind, port=args.port, tls_cert=args.tls_cert_file,
                 tls_key=args.tls_private_key_file, client_ca=args.client_ca_file,
                 token_file=args.token_auth_file, anonymous=args.anonymous, advertise_address=advertise,
                 service_cidr=args.service_cluster_ip_range, node_port_range=(lo, hi),
                 kubelet_client_cert=args.kubelet_client_certificate, kubelet_client_key=args.kubelet_client_key,
                 kubelet_ca=args.kubelet_certificate_authority, authorization_mode=args.authorization_mode,
                 service_account_key_files=tuple(args.service_account_key_file),
                 service_account_signing_key=args.service_account_signing_key_file,
                 service_account_issuer=args.service_account_issuer,
                 encryption_config=args.encryption_provider_config, etcd_cafile=args.etcd_cafile,
                 etcd_certfile=args.etcd_certfile, etcd_keyfile=args.etcd_keyfile)
    from minikube_py.apiserver.admission import parse_disabled

    try:
        cfg.extra["disabled_admission_plugins"] = parse_disabled(args.disable_admission_plugins)
    except ValueError as e:
        raise UserError(str(e)) from None
    from minikube_py.apiserver.rbac import AUTHORIZATION_MODES

    modes = [m.strip() for m in cfg.authorization_mode.split(",") if m.strip()]
    unknown = [m for m in modes if m not in AUTHORIZATION_MODES]
    if not modes or unknown or len(set(modes)) != len(modes):
        raise UserError(f"--authorization-mode {cfg.authorization_mode!r}: give each of "
                        f"{', '.join(AUTHORIZATION_MODES)} at most once, comma-separated")
    if (cfg.kubelet_client_cert is None) != (cfg.kubelet_client_key is None):
        raise UserError("--kubelet-client-certificate and --kubelet-client-key go together")
    kubeconfig = ""
    if args.local:
        assert data_dir is not None
        kubeconfig = _prepare_local(cfg, data_dir, args)
    elif not args.insecure_http and (cfg.tls_cert is None or cfg.tls_key is None):
        raise UserError("HTTPS needs --tls-cert-file and --tls-private-key-file (or use --local)")
    if args.insecure_http:
        cfg.tls_cert = cfg.tls_key = None
    return cfg, kubeconfig


def _prepare_local(cfg: Config, data_dir: Path, args: argparse.Namespace) -> str:
    """Certificates and a token in DATA_DIR; returns where the admin kubeconfig will be written
    (once the server listens, so that port 0 works)."""
    from minikube_py.apiserver.tokens import ensure_token_file
    from minikube_py.pki import PKIError, ensure_pki

    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        addresses = sorted({"127.0.0.1", cfg.advertise_address})
        paths = ensure_pki(data_dir / "pki", master_addresses=addresses)
    except (OSError, PKIError) as e:
        raise UserError(str(e)) from None
    if cfg.tls_cert is None:
        cfg.tls_cert, cfg.tls_key = paths["apiserver.crt"], paths["apiserver.key"]
    if cfg.client_ca is None:
        cfg.client_ca = paths["ca.crt"]
    if cfg.token_file is None:
        cfg.token_file = data_dir / "tokens.csv"
    cfg.extra["admin_token"] = ensure_token_file(cfg.token_file)
    cfg.extra["ca_pem"] = paths["ca.crt"].read_bytes()
    # Security as in a real cluster: a ServiceAccount signing key and secrets encrypted at rest,
    # both made on first start and kept.
    from minikube_py.apiserver.encryption import ensure_config
    from minikube_py.apiserver.serviceaccounts import ensure_signing_key

    try:
        if cfg.service_account_signing_key is None:
            cfg.service_account_signing_key = ensure_signing_key(data_dir / "pki" / "sa.key")
        if cfg.encryption_config is None:
            cfg.encryption_config = ensure_config(data_dir / "encryption-config.yaml")
    except OSError as e:
        raise UserError(str(e)) from None
    return str(data_dir / "admin.kubeconfig")


def _write_admin_kubeconfig(cfg: Config, path: str, port: int) -> None:
    from minikube_py.client.kubeconfig import write_kubeconfig

    scheme = "https" if cfg.tls_cert is not None else "http"
    write_kubeconfig(Path(path), server=f"{scheme}://127.0.0.1:{port}", ca_pem=cfg.extra["ca_pem"],
                     user="admin", token=cfg.extra["admin_token"])


async def serve(cfg: Config, kubeconfig: str = "") -> None:
    from minikube_py.apiserver.server import APIServer
    from minikube_py.store import StoreError, open_store

    tls = None
    if cfg.etcd_cafile or cfg.etcd_certfile or cfg.etcd_keyfile:
        from minikube_py.store.etcd_tls import EtcdTLS

        tls = EtcdTLS(cfg.etcd_cafile, cfg.etcd_certfile, cfg.etcd_keyfile)
    try:
        store = await open_store(cfg.store_url, etcd_tls=tls)
    except (StoreError, OSError, ValueError) as e:
        raise UserError(f"cannot open the store {cfg.store_url}: {e}") from None
    try:
        server = APIServer(cfg, store)
    except ValueError as e:  # a key file or an EncryptionConfiguration that cannot be used
        await store.close()
        raise UserError(str(e)) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            await server.start()
        except OSError as e:
            raise UserError(f"cannot listen on {cfg.bind_address}:{cfg.port}: {e.strerror}") from None
        # Start-up leaves its schemas and modules for life, and a list of 1,000 pods allocates ~60,000
        # containers: with the default thresholds full collections walk both again and again, which
        # doubled a list's time in bench/apiserver.py. Refcounting still frees nearly all garbage.
        import gc

        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        if kubeconfig:
            _write_admin_kubeconfig(cfg, kubeconfig, server.port)
            print(f"minikube-py apiserver: serving on port {server.port}; "
                  f"kubeconfig: {kubeconfig}", flush=True)
        await stop.wait()
    finally:
        await server.stop()
        await store.close()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg, kubeconfig = _build_config(args)
    asyncio.run(serve(cfg, kubeconfig))
    return 0
