"""The cluster's certificate authorities and the certificates they sign.

One self-signed CA signs every serving and client certificate of the API side, as kubeadm does;
etcd has a CA of its own (:func:`ensure_etcd_pki`). A client
certificate's CN is the user name and its O entries are the groups (Kubernetes' x509 authenticator
reads them that way), so ``admin`` with ``O=system:masters`` is the cluster administrator.

Keys are EC P-256: generating one takes well under a millisecond where RSA-2048 takes tens, and
Go's TLS (kubectl), Python's ssl and etcd all accept them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Certificates start an hour in the past so that a machine whose clock runs a little behind the
# one that issued them still accepts them (lab machines boot with unsynchronised clocks).
BACKDATE = dt.timedelta(hours=1)

DEFAULT_SERVICE_IP = "10.96.0.1"

# The names in-cluster clients use for the API server (the `kubernetes` Service), plus localhost.
APISERVER_DNS_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "localhost",
)

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class PKIError(ValueError):
    """Key material that is missing, broken or does not fit together."""


@dataclass
class CertPair:
    """A PEM certificate and its PEM (PKCS#8, unencrypted) private key."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    @property
    def private_key(self) -> SigningKey:
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        # An RSA CA is accepted too, so that an existing kubeadm CA can sign our certificates.
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise PKIError(f"expected an EC or RSA private key, found {type(key).__name__}")
        return key

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CertPair:
        """Read a pair from files and check that the key belongs to the certificate."""
        cert_pem = _read(cert_path)
        key_pem = _read(key_path)
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError as e:
            raise PKIError(f"{cert_path}: not a PEM certificate ({e})") from None
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as e:
            raise PKIError(f"{key_path}: not an unencrypted PEM private key ({e})") from None
        if _public_der(key.public_key()) != _public_der(cert.public_key()):
            raise PKIError(f"{key_path} is not the private key of {cert_path}")
        return cls(cert_pem, key_pem)

    def save(self, cert_path: Path, key_path: Path, *, overwrite: bool = False) -> None:
        """Write the key (mode 0600) and then the certificate (0644), each atomically.

        Without ``overwrite`` an existing file is never replaced: FileExistsError instead.
        """
        write_private_file(key_path, self.key_pem, mode=0o600, overwrite=overwrite)
        write_private_file(cert_path, self.cert_pem, mode=0o644, overwrite=overwrite)


def write_private_file(path: Path, data: bytes, *, mode: int = 0o600, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    The data goes to a temporary file in the same directory, created with ``mode`` from the start
    (a key is never briefly world-readable), then takes the final name. Without ``overwrite`` the
    final step is a hard link, which fails atomically when the name exists.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def create_ca(common_name: str = "minikube-py-ca", days: int = 3650) -> CertPair:
    """A new self-signed CA that may sign leaf certificates only (path length 0)."""
    _check_days(days)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _check_cn(common_name))])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertPair(_cert_pem(cert), _key_pem(key))


def issue_cert(
    ca: CertPair,
    common_name: str,
    *,
    organizations: Sequence[str] = (),
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
    days: int = 365,
) -> CertPair:
    """A leaf certificate signed by ``ca``, valid for at most ``days`` and never past the CA.

    ``server`` adds the serverAuth usage (and needs at least one DNS name or IP, since Go ignores
    the CN for host names); ``client`` adds clientAuth. ``organizations`` become the O entries,
    which Kubernetes reads as the user's groups.
    """
    _check_days(days)
    if isinstance(organizations, str) or isinstance(dns_names, str) or isinstance(ip_addresses, str):
        raise TypeError("organizations, dns_names and ip_addresses take sequences of strings")
    ca_cert = ca.certificate
    ca_key = ca.private_key
    _check_is_ca(ca_cert, ca_key)
    dns = _dedupe(_check_dns_name(n) for n in dns_names)
    ips = _dedupe(parse_ip(a) for a in ip_addresses)
    if server and not (dns or ips):
        raise PKIError(f"serving certificate {common_name!r} needs at least one DNS name or IP address")

    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, _check_cn(o)) for o in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, _check_cn(common_name)))
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attributes))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # ECDSA keys only sign during the handshake; keyEncipherment is an RSA-only usage.
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_id(ca_cert), critical=False)
    )
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if dns or ips:
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return CertPair(_cert_pem(cert), _key_pem(key))


def apiserver_sans(
    master_addresses: Sequence[str], service_ip: str = DEFAULT_SERVICE_IP
) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) a serving certificate of the API server must carry."""
    if isinstance(master_addresses, str):
        raise TypeError("master_addresses takes a sequence of IP addresses")
    ips = _dedupe(parse_ip(a) for a in ("127.0.0.1", service_ip, *master_addresses))
    return list(APISERVER_DNS_NAMES), ips


# ensure_pki's fixed files: name -> (CN, O, server, client).
_LEAVES: dict[str, tuple[str, tuple[str, ...], bool, bool]] = {
    "apiserver": ("kube-apiserver", (), True, False),
    "admin": ("admin", ("system:masters",), False, True),
}

_STEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def ensure_pki(
    directory: Path,
    *,
    master_addresses: Sequence[str] = ("127.0.0.1",),
    extra_dns: Sequence[str] = (),
    service_ip: str = DEFAULT_SERVICE_IP,
    clients: Mapping[str, tuple[str, Sequence[str]]] | None = None,
) -> dict[str, Path]:
    """Create the CA, the API server's serving pair and the admin client pair where missing.

    ``clients`` adds client pairs, file stem -> (CN, groups), e.g.
    ``{"scheduler": ("system:kube-scheduler", ())}`` gives scheduler.crt/.key.

    Existing material is never overwritten. It is checked instead: every pair must be complete,
    match its key and be signed by the CA, and an existing apiserver.crt must cover the requested
    addresses (delete apiserver.crt/.key to re-issue it). Returns file name -> path, e.g.
    ``paths["ca.crt"]``, ``paths["apiserver.key"]``, ``paths["admin.crt"]``.
    """
    directory = Path(directory)
    dns, ips = apiserver_sans(master_addresses, service_ip)
    dns = _dedupe([*dns, *(_check_dns_name(n) for n in extra_dns)])
    leaves = dict(_LEAVES)
    for stem, (cn, groups) in (clients or {}).items():
        if stem in leaves or stem == "ca" or not _STEM.match(stem):
            raise PKIError(f"cannot use {stem!r} as the file name of a client pair")
        if isinstance(groups, str):
            raise TypeError(f"groups of {stem!r} take a sequence of group names")
        leaves[stem] = (_check_cn(cn), tuple(_check_cn(g) for g in groups), False, True)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PKIError(f"cannot create {directory}: {e.strerror}") from None

    paths: dict[str, Path] = {}
    for stem in ("ca", *leaves):
        paths[f"{stem}.crt"] = directory / f"{stem}.crt"
        paths[f"{stem}.key"] = directory / f"{stem}.key"

    ca = _existing_pair(paths["ca.crt"], paths["ca.key"])
    if ca is None:
        ca = create_ca()
        _save_new(ca, paths["ca.crt"], paths["ca.key"])
    else:
        _check_is_ca(ca.certificate, ca.private_key)

    for stem, (cn, orgs, server, client) in leaves.items():
        _ensure_leaf(
            ca, paths[f"{stem}.crt"], paths[f"{stem}.key"], cn, orgs, server=server, client=client,
            dns=dns if server else [], ips=ips if server else [],
        )
    return paths


def _ensure_leaf(
    ca: CertPair,
    cert_path: Path,
    key_path: Path,
    cn: str,
    orgs: Sequence[str],
    *,
    server: bool,
    client: bool,
    dns: list[str],
    ips: list[str],
) -> None:
    """Issue the pair where missing; else check it is ``ca``'s, for ``cn``/``orgs`` and covers the SANs."""
    existing = _existing_pair(cert_path, key_path)
    if existing is None:
        pair = issue_cert(
            ca, cn, organizations=orgs, dns_names=dns, ip_addresses=ips, server=server, client=client
        )
        _save_new(pair, cert_path, key_path)
        return
    _check_signed_by(existing.certificate, ca.certificate, cert_path)
    subject = existing.certificate.subject
    found = (
        [a.value for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)],
        [a.value for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)],
    )
    if client and found != ([cn], list(orgs)):
        # The subject is the identity the API server sees; a stale one would authenticate as someone else.
        raise PKIError(
            f"{cert_path} is for CN={found[0]} O={found[1]}, not CN={cn} O={list(orgs)}; "
            f"remove {cert_path.name} and {key_path.name} to issue a new one"
        )
    if server:
        missing = sorted(set(dns + ips) - set(_sans(existing.certificate)))
        if missing:
            raise PKIError(
                f"{cert_path} does not cover {', '.join(missing)}; "
                f"remove {cert_path.name} and {key_path.name} to issue a new one"
            )


@dataclass(frozen=True)
class EtcdMember:
    """One etcd member: its name (also a DNS SAN) and the addresses it serves on."""

    name: str
    ips: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()


# kubeadm's names: the API server's client pair sits beside its other pairs, the rest under etcd/.
ETCD_SUBDIR = "etcd"
ETCD_CA_CN = "etcd-ca"
APISERVER_ETCD_CLIENT = ("apiserver-etcd-client", "kube-apiserver-etcd-client")
ETCD_HEALTHCHECK_CLIENT = (f"{ETCD_SUBDIR}/healthcheck-client", "kube-etcd-healthcheck-client")


def etcd_member_sans(member: EtcdMember) -> tuple[list[str], list[str]]:
    """(DNS names, IPs) of a member's server and peer certificates, as kubeadm makes them."""
    dns = _dedupe(_check_dns_name(n) for n in (member.name, *member.dns, "localhost"))
    ips = _dedupe(parse_ip(a) for a in (*member.ips, "127.0.0.1", "::1"))
    return dns, ips


def ensure_etcd_pki(directory: Path, members: Sequence[EtcdMember]) -> dict[str, Path]:
    """Create etcd's own CA and certificates in ``directory`` where missing (kubeadm's layout).

    etcd gets a CA of its own (``etcd/ca.crt``) rather than the cluster CA: etcd admits any client
    whose certificate its CA signed, so with the cluster CA every kubelet and every user would get
    the whole store. Per member ``etcd/server-NAME`` and ``etcd/peer-NAME`` (serverAuth and
    clientAuth: etcd also dials itself and its peers with them); clients ``apiserver-etcd-client``
    for the API server and ``etcd/healthcheck-client`` for etcdctl and probes. Existing files are
    kept and checked as :func:`ensure_pki` does. Returns names such as ``"etcd/ca.crt"`` -> path.
    """
    if isinstance(members, EtcdMember) or not members:
        raise PKIError("give at least one etcd member")
    directory = Path(directory)
    leaves: dict[str, tuple[str, bool, list[str], list[str]]] = {}
    for m in members:
        if not isinstance(m, EtcdMember) or not _STEM.match(m.name):
            raise PKIError(f"cannot use {getattr(m, 'name', m)!r} as an etcd member name")
        if isinstance(m.ips, str) or isinstance(m.dns, str):
            raise TypeError("EtcdMember.ips and .dns take sequences of strings")
        dns, ips = etcd_member_sans(m)
        for kind in ("server", "peer"):
            stem = f"{ETCD_SUBDIR}/{kind}-{m.name}"
            if stem in leaves:
                raise PKIError(f"etcd member {m.name!r} is given twice")
            leaves[stem] = (m.name, True, dns, ips)
    for stem, cn in (APISERVER_ETCD_CLIENT, ETCD_HEALTHCHECK_CLIENT):
        leaves[stem] = (cn, False, [], [])
    try:
        (directory / ETCD_SUBDIR).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PKIError(f"cannot create {directory / ETCD_SUBDIR}: {e.strerror}") from None
    paths = {f"{stem}.{ext}": directory / f"{stem}.{ext}"
             for stem in (f"{ETCD_SUBDIR}/ca", *leaves) for ext in ("crt", "key")}
    ca_cert, ca_key = paths[f"{ETCD_SUBDIR}/ca.crt"], paths[f"{ETCD_SUBDIR}/ca.key"]
    ca = _existing_pair(ca_cert, ca_key)
    if ca is None:
        ca = create_ca(ETCD_CA_CN)
        _save_new(ca, ca_cert, ca_key)
    else:
        _check_is_ca(ca.certificate, ca.private_key)
    for stem, (cn, server, dns, ips) in leaves.items():
        _ensure_leaf(ca, paths[f"{stem}.crt"], paths[f"{stem}.key"], cn, (), server=server, client=True,
                     dns=dns, ips=ips)
    return paths


def parse_ip(text: str) -> str:
    """The canonical form of an IPv4/IPv6 address, or PKIError naming the bad input."""
    try:
        return str(ipaddress.ip_address(str(text).strip()))
    except ValueError:
        raise PKIError(f"not an IP address: {text!r}") from None


def cert_sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) in a certificate's SubjectAlternativeName, if any."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return ext.get_values_for_type(x509.DNSName), [str(a) for a in ext.get_values_for_type(x509.IPAddress)]


def _sans(cert: x509.Certificate) -> list[str]:
    dns, ips = cert_sans(cert)
    return dns + ips


def _existing_pair(cert_path: Path, key_path: Path) -> CertPair | None:
    has_cert, has_key = cert_path.exists(), key_path.exists()
    if not has_cert and not has_key:
        return None
    if has_cert != has_key:
        present, absent = (cert_path, key_path) if has_cert else (key_path, cert_path)
        raise PKIError(f"{present} exists but {absent} does not; restore it or remove {present}")
    return CertPair.load(cert_path, key_path)


def _save_new(pair: CertPair, cert_path: Path, key_path: Path) -> None:
    try:
        pair.save(cert_path, key_path)
    except FileExistsError as e:
        raise PKIError(f"{e.filename} appeared while it was being created; run again") from None
    except OSError as e:
        raise PKIError(f"cannot write {e.filename or cert_path.parent}: {e.strerror}") from None


def _check_is_ca(cert: x509.Certificate, key: SigningKey) -> None:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = constraints.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise PKIError(f"{cert.subject.rfc4514_string()} is not a CA certificate")
    if _public_der(key.public_key()) != _public_der(cert.public_key()):
        raise PKIError("the CA key does not belong to the CA certificate")


def _check_signed_by(cert: x509.Certificate, ca_cert: x509.Certificate, where: Path) -> None:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise PKIError(f"{where} was not issued by the CA in {where.parent}") from None


def _check_days(days: int) -> None:
    if not isinstance(days, int) or isinstance(days, bool) or days < 1:
        raise PKIError(f"days must be a positive whole number, got {days!r}")


def _check_cn(value: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        raise PKIError(f"a name in a certificate subject must be 1-64 characters, got {value!r}")
    return value


def _check_dns_name(name: str) -> str:
    text = str(name).strip().rstrip(".").lower()
    labels = text.split(".")
    # A wildcard is allowed only as the whole leftmost label, as RFC 6125 has it.
    if labels and labels[0] == "*" and len(labels) > 1:
        labels = labels[1:]
    if not text or len(text) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
        raise PKIError(f"not a DNS name: {name!r}")
    return text


def _dedupe(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _public_der(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise PKIError(f"{path} does not exist") from None
    except OSError as e:
        raise PKIError(f"cannot read {path}: {e.strerror}") from None
