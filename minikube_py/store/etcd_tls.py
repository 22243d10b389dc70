"""TLS to etcd: the files a client needs, and what a failed handshake means in words.

Kept apart from the gRPC plumbing (grpc is only imported to build credentials), so that a command
can name its TLS files before anything loads gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc


@dataclass(frozen=True)
class EtcdTLS:
    """Files for TLS to etcd, as kube-apiserver's ``--etcd-cafile/--etcd-certfile/--etcd-keyfile``.

    Without ``ca_file`` etcd's certificate is checked against the system's CAs; without a client
    pair none is sent (etcd with ``--client-cert-auth`` then refuses the connection).
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """gRPC channel credentials from the files; ValueError naming a file that cannot be used."""
        import grpc
        from cryptography import x509

        from minikube_py.pki import CertPair, PKIError

        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("an etcd client certificate needs its key and a key its certificate")
        root = None
        if self.ca_file is not None:
            root = _read_tls_file(self.ca_file, "CA file")
            try:
                x509.load_pem_x509_certificates(root)
            except ValueError:
                raise ValueError(f"etcd CA file {self.ca_file} holds no PEM certificate") from None
        cert = key = None
        if self.cert_file is not None and self.key_file is not None:
            try:
                pair = CertPair.load(Path(self.cert_file), Path(self.key_file))
            except PKIError as e:
                raise ValueError(f"etcd client certificate: {e}") from None
            cert, key = pair.cert_pem, pair.key_pem
        return grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=cert)

    def client_subject(self) -> str:
        """The client certificate's subject for messages, or "" when there is none."""
        if self.cert_file is None:
            return ""
        from cryptography import x509

        try:
            return x509.load_pem_x509_certificate(Path(self.cert_file).read_bytes()).subject.rfc4514_string()
        except (OSError, ValueError):
            return str(self.cert_file)


def _read_tls_file(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read the etcd {what} {path}: {e.strerror}") from None


def tls_failure(err: grpc.aio.AioRpcError, tls: EtcdTLS | None) -> str | None:
    """Why a TLS handshake with etcd failed, in words, or None when ``err`` is not a certificate failure.

    gRPC reports both sides' refusals only in its details text: our check of etcd's certificate
    fails with CERTIFICATE_VERIFY_FAILED; etcd refusing our certificate (missing, or from a CA it
    does not trust) shows up as a TLS alert or, with TLS 1.3, as the first read failing to decrypt.
    """
    if tls is None:
        return None
    details = err.details() or ""
    if "CERTIFICATE_VERIFY_FAILED" in details:
        reason = details.rsplit("CERTIFICATE_VERIFY_FAILED", 1)[1].strip(": ").removesuffix(": OK")
        where = f"the CA in {tls.ca_file}" if tls.ca_file is not None else "the system's CAs"
        return (f"etcd's serving certificate was not accepted: it is not signed by {where} or does not "
                f"name this address ({reason or 'verify failed'})")
    if "TSI_DATA_CORRUPTED" in details or "ALERT_BAD_CERTIFICATE" in details or "ALERT_UNKNOWN_CA" in details \
            or "CERTIFICATE_REQUIRED" in details:
        if tls.cert_file is None:
            return "etcd requires a client certificate and none was given"
        return (f"etcd refused the client certificate {tls.client_subject()} "
                f"(is it signed by the CA etcd trusts, --trusted-ca-file?)")
    if "WRONG_VERSION_NUMBER" in details or "Tls handshake failed" in details or "Handshake failed" in details:
        return f"TLS handshake failed (does this endpoint serve https?): {details.rsplit(': ', 1)[-1]}"
    return None
