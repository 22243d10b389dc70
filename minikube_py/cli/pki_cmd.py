"""``minikube-py pki``: create the cluster and etcd CAs, issue certificates with them, and show certificates."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from minikube_py import pki
from minikube_py.cli.main import UserError

_USAGE_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pki",
        help="create the cluster CA and certificates",
        description="Create the cluster CA, issue certificates signed by it, and show certificates.",
    )
    actions = parser.add_subparsers(dest="pki_action", metavar="ACTION")
    actions.required = True

    init = actions.add_parser(
        "init",
        help="create ca, apiserver and admin pairs where missing",
        description="Create ca.crt/.key, apiserver.crt/.key (serving) and admin.crt/.key (client, "
        "O=system:masters) in DIR where missing. Existing files are kept and checked.",
    )
    init.add_argument("--dir", required=True, type=Path, help="directory for the key material")
    init.add_argument(
        "--master-address",
        action="append",
        default=[],
        metavar="IP",
        help="an IP address of a master, put in the API server's certificate (repeatable; default 127.0.0.1)",
    )
    init.add_argument(
        "--dns", action="append", default=[], metavar="NAME", help="an extra DNS name for the API server"
    )
    init.set_defaults(run=_run_init)

    issue = actions.add_parser(
        "issue",
        help="issue a certificate signed by the CA in DIR",
        description="Issue a certificate signed by DIR/ca.crt and DIR/ca.key and write PREFIX.crt and "
        "PREFIX.key. The CN is the user name and each --org a group, as Kubernetes reads them.",
    )
    issue.add_argument("--dir", required=True, type=Path, help="directory holding ca.crt and ca.key")
    issue.add_argument("--cn", required=True, help="common name (the user name for a client certificate)")
    issue.add_argument("--org", action="append", default=[], metavar="O", help="an organization (group)")
    issue.add_argument("--client", action="store_true", help="usable to authenticate as a client (default)")
    issue.add_argument("--server", action="store_true", help="usable to serve TLS (needs --dns or --ip)")
    issue.add_argument("--dns", action="append", default=[], metavar="NAME", help="a DNS name SAN")
    issue.add_argument("--ip", action="append", default=[], metavar="IP", help="an IP address SAN")
    issue.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    issue.add_argument("--out", required=True, metavar="PREFIX", help="write PREFIX.crt and PREFIX.key")
    issue.add_argument("--force", action="store_true", help="replace existing PREFIX.crt/PREFIX.key")
    issue.set_defaults(run=_run_issue)

    etcd = actions.add_parser(
        "etcd",
        help="create etcd's CA and certificates where missing",
        description="Create, where missing, etcd's own CA (DIR/etcd/ca.crt; etcd trusts only it), each "
        "member's DIR/etcd/server-NAME and DIR/etcd/peer-NAME pairs (SANs: NAME, localhost, the member's "
        "IPs, 127.0.0.1, ::1), the API server's DIR/apiserver-etcd-client pair and DIR/etcd/healthcheck-client "
        "for etcdctl. Existing files are kept and checked.",
    )
    etcd.add_argument("--dir", required=True, type=Path, help="directory for the key material (as for init)")
    etcd.add_argument(
        "--member",
        action="append",
        default=[],
        metavar="NAME=IP[,IP...]",
        help="an etcd member and its addresses (repeatable; default default=127.0.0.1)",
    )
    etcd.add_argument("--dns", action="append", default=[], metavar="NAME",
                      help="an extra DNS name for every member's certificates")
    etcd.set_defaults(run=_run_etcd)

    show = actions.add_parser("show", help="print a certificate's subject, SANs and validity")
    show.add_argument("file", type=Path, metavar="FILE", help="a PEM certificate file")
    show.set_defaults(run=_run_show)


def _run_init(args: argparse.Namespace) -> int:
    masters = args.master_address or ["127.0.0.1"]
    try:
        paths = pki.ensure_pki(args.dir, master_addresses=masters, extra_dns=args.dns)
    except pki.PKIError as e:
        raise UserError(str(e)) from None
    for path in paths.values():
        print(path)
    return 0


def parse_etcd_member(text: str, extra_dns: list[str] | tuple[str, ...] = ()) -> pki.EtcdMember:
    """``NAME=IP[,IP...]`` (or a bare NAME) as an :class:`pki.EtcdMember`; UserError when malformed."""
    name, sep, addresses = text.partition("=")
    ips = tuple(a.strip() for a in addresses.split(",") if a.strip())
    if not name.strip() or (sep and not ips):
        raise UserError(f"--member {text!r}: use NAME=IP[,IP...]")
    return pki.EtcdMember(name.strip(), ips, tuple(extra_dns))


def _run_etcd(args: argparse.Namespace) -> int:
    members = [parse_etcd_member(m, args.dns) for m in args.member or ["default=127.0.0.1"]]
    try:
        paths = pki.ensure_etcd_pki(args.dir, members)
    except pki.PKIError as e:
        raise UserError(str(e)) from None
    for path in paths.values():
        print(path)
    return 0


def _run_issue(args: argparse.Namespace) -> int:
    ca_cert, ca_key = args.dir / "ca.crt", args.dir / "ca.key"
    if not ca_cert.exists() or not ca_key.exists():
        raise UserError(f"no CA in {args.dir} (run `minikube-py pki init --dir {args.dir}` first)")
    cert_path, key_path = Path(f"{args.out}.crt"), Path(f"{args.out}.key")
    if not args.force:
        for p in (cert_path, key_path):
            if p.exists():
                raise UserError(f"{p} exists (use --force to replace it)")
    if not cert_path.parent.is_dir():
        raise UserError(f"cannot write {cert_path}: {cert_path.parent} is not a directory")
    client = args.client or not args.server
    try:
        ca = pki.CertPair.load(ca_cert, ca_key)
        pair = pki.issue_cert(
            ca,
            args.cn,
            organizations=args.org,
            dns_names=args.dns,
            ip_addresses=args.ip,
            server=args.server,
            client=client,
            days=args.days,
        )
        pair.save(cert_path, key_path, overwrite=args.force)
    except pki.PKIError as e:
        raise UserError(str(e)) from None
    except FileExistsError as e:
        raise UserError(f"{e.filename} exists (use --force to replace it)") from None
    except OSError as e:
        raise UserError(f"cannot write {e.filename or cert_path}: {e.strerror}") from None
    print(cert_path)
    print(key_path)
    return 0


def _run_show(args: argparse.Namespace) -> int:
    try:
        data = args.file.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {args.file}: {e.strerror}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise UserError(f"{args.file} holds no PEM certificate") from None
    for i, cert in enumerate(certs):
        if i:
            print()
        print(describe_certificate(cert))
    return 0


def describe_certificate(cert: x509.Certificate, now: dt.datetime | None = None) -> str:
    """A few aligned lines: subject, issuer, CA or not, usages, SANs and validity."""
    now = now or dt.datetime.now(dt.UTC)
    dns, ips = pki.cert_sans(cert)
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        usages = [_USAGE_NAMES.get(oid, oid.dotted_string) for oid in eku]
    except x509.ExtensionNotFound:
        usages = []
    expires = cert.not_valid_after_utc
    if expires <= now:
        remaining = "EXPIRED"
    else:
        remaining = f"in {(expires - now).days} days"
    rows = [
        ("subject", cert.subject.rfc4514_string()),
        ("issuer", cert.issuer.rfc4514_string()),
        ("CA", "yes" if is_ca else "no"),
        ("usages", ", ".join(usages) or "-"),
        ("DNS names", ", ".join(dns) or "-"),
        ("IP addresses", ", ".join(ips) or "-"),
        ("not before", cert.not_valid_before_utc.isoformat()),
        ("not after", f"{expires.isoformat()} ({remaining})"),
        ("serial", f"{cert.serial_number:x}"),
    ]
    return "\n".join(f"{label + ':':<14}{value}" for label, value in rows)
