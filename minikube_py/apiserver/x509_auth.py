"""x509 client-certificate authentication: CN is the user, each O a group.

The TLS layer checks the chain to ``--client-ca-file`` but not the dates
(:func:`defer_time_checks`): with them checked there, an expired certificate aborts the handshake and
the client sees a broken connection, where kube-apiserver answers 401. So the handshake lets an
out-of-date certificate of our CA through and :func:`certificate_identity` refuses it, which the
server turns into 401 "Unauthorized" like any failed authentication. The CA's own dates are checked
here too, since the TLS layer no longer does (matched by the issuer's CN: the stdlib gives only the
leaf, not the verified chain).
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

log = logging.getLogger("minikube_py.apiserver.x509")

# OpenSSL's X509_V_FLAG_NO_CHECK_TIME: verify the chain, skip notBefore/notAfter.
X509_V_FLAG_NO_CHECK_TIME = 0x200000


def defer_time_checks(ctx: ssl.SSLContext) -> None:
    """Let the handshake accept client certificates outside their validity (checked per request)."""
    ctx.verify_flags |= X509_V_FLAG_NO_CHECK_TIME  # type: ignore[assignment]


@dataclass
class ClientCAs:
    """The validity windows of the client CAs, by subject CN."""

    windows: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> ClientCAs:
        """Read the CA bundle; ValueError when it holds no certificate."""
        try:
            certs = x509.load_pem_x509_certificates(Path(path).read_bytes())
        except OSError as e:
            raise ValueError(f"cannot read --client-ca-file {path}: {e.strerror}") from None
        except ValueError:
            raise ValueError(f"--client-ca-file {path} holds no PEM certificate") from None
        cas = cls()
        for cert in certs:
            cn = ",".join(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
            cas.windows.setdefault(cn, []).append(
                (cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()))
        return cas

    def valid(self, issuer_cn: str, now: float) -> bool:
        windows = self.windows.get(issuer_cn)
        # An issuer we cannot name passed the chain check against this very bundle: nothing to add.
        return windows is None or any(lo <= now <= hi for lo, hi in windows)


def _names(rdns: Any, key: str) -> list[str]:
    return [v for rdn in rdns or () for k, v in rdn if k == key]


def certificate_identity(peer: dict[str, Any], cas: ClientCAs | None, now: float) -> tuple[str, list[str]] | None:
    """(user, groups) from a verified peer certificate (``getpeercert()``), or None when it is out of
    its validity window, its CA is, or it names no user."""
    cn = next(iter(_names(peer.get("subject"), "commonName")), "")
    if not cn:
        return None
    try:
        not_before = ssl.cert_time_to_seconds(peer["notBefore"])
        not_after = ssl.cert_time_to_seconds(peer["notAfter"])
    except (KeyError, ValueError):
        return None
    if not not_before <= now <= not_after:
        log.info("x509: client certificate CN=%s is outside its validity (%s to %s)",
                 cn, peer["notBefore"], peer["notAfter"])
        return None
    if cas is not None and not cas.valid(",".join(_names(peer.get("issuer"), "commonName")), now):
        log.info("x509: the CA of client certificate CN=%s is outside its validity", cn)
        return None
    return cn, _names(peer.get("subject"), "organizationName")
