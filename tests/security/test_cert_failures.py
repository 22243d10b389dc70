"""Bad credentials against a real API server: what the client sees, with httpx and real kubectl.

* A certificate of our CA outside its validity (expired, not yet valid): 401 "Unauthorized", as
  kube-apiserver (the handshake skips the dates, the authenticator checks them).
* A certificate from another CA, or one forging our CA's name with another key: refused in the TLS
  handshake, and the alert reaches the client, so kubectl names the cause. (kube-apiserver answers
  401 here; Python's ssl has no verify callback to defer the chain check to the authenticator.)
* Unknown bearer tokens: 401. An authenticated user with no binding: 403 with Kubernetes' message.
"""

from __future__ import annotations

import datetime as dt
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from minikube_py.pki import CertPair, create_ca
from tests.apiserver.conftest import LocalAPIServer

from .conftest import USERS, as_token, kubectl_path, write_user_kubeconfig

KUBECTL_VERSIONS = ["1.27", "1.32", "pypi"]


def make_client_cert(
    out: Path, cn: str, *, signer: CertPair, issuer: x509.Name | None = None,
    not_before: dt.timedelta = dt.timedelta(days=-1), not_after: dt.timedelta = dt.timedelta(days=1),
    signing_key: ec.EllipticCurvePrivateKey | None = None,
) -> tuple[str, str]:
    """A client pair with any dates (relative to now) and any signer; pki.issue_cert only makes good ones."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(issuer or signer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + not_before)
        .not_valid_after(now + not_after)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(signing_key or signer.private_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    out.mkdir(parents=True, exist_ok=True)
    crt, pem_key = out / f"{cn}.crt", out / f"{cn}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem_key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return str(crt), str(pem_key)


def our_ca(server: LocalAPIServer) -> CertPair:
    return CertPair.load(server.ca_file, server.data_dir / "pki" / "ca.key")


def cert_client(server: LocalAPIServer, cert: tuple[str, str]) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    ctx.load_cert_chain(*cert)
    return httpx.Client(base_url=server.url, verify=ctx, timeout=30.0)


def kubectl_with_cert(version: str, server: LocalAPIServer, cert: tuple[str, str], *args: str
                      ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl_path(version), "--server", server.url, "--certificate-authority", str(server.ca_file),
         "--client-certificate", cert[0], "--client-key", cert[1], "--kubeconfig", "/dev/null", *args],
        capture_output=True, text=True, timeout=60,
    )


@pytest.fixture(scope="module")
def certs(secured: LocalAPIServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    out = tmp_path_factory.mktemp("certs")
    ca = our_ca(secured)
    other = create_ca("someone-else")
    return {
        "valid": make_client_cert(out, "cert-valid", signer=ca),
        "expired": make_client_cert(out, "cert-expired", signer=ca, not_before=dt.timedelta(days=-10),
                                    not_after=dt.timedelta(days=-1)),
        "not-yet-valid": make_client_cert(out, "cert-future", signer=ca, not_before=dt.timedelta(days=1),
                                          not_after=dt.timedelta(days=10)),
        "foreign": make_client_cert(out, "cert-foreign", signer=other),
        # Our CA's name and our CA's key id nowhere: a signature no key of ours made.
        "forged": make_client_cert(out, "cert-forged", signer=other, issuer=ca.certificate.subject),
    }


def test_a_valid_certificate_still_authenticates(secured: LocalAPIServer, certs: dict) -> None:
    with cert_client(secured, certs["valid"]) as c:
        r = c.post("/apis/authentication.k8s.io/v1/selfsubjectreviews",
                   json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        assert r.status_code == 201, r.text
        info = r.json()["status"]["userInfo"]
        assert info["username"] == "cert-valid"
        assert set(info["groups"]) == {"system:masters", "system:authenticated"}


@pytest.mark.parametrize("which", ["expired", "not-yet-valid"])
def test_a_certificate_outside_its_validity_gets_401(secured: LocalAPIServer, certs: dict, which: str) -> None:
    with cert_client(secured, certs[which]) as c:
        r = c.get("/api/v1/namespaces")
    assert r.status_code == 401
    assert r.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "Unauthorized", "reason": "Unauthorized", "code": 401}


@pytest.mark.kubectl
@pytest.mark.parametrize("version", KUBECTL_VERSIONS)
def test_kubectl_with_an_expired_certificate_is_told_unauthorized(
    secured: LocalAPIServer, certs: dict, version: str
) -> None:
    out = kubectl_with_cert(version, secured, certs["expired"], "get", "ns")
    assert out.returncode != 0
    # kubectl < 1.29 words a 401 "(the server has asked for the client to provide credentials)".
    assert "error: You must be logged in to the server (" in out.stderr, out.stderr
    ok = kubectl_with_cert(version, secured, certs["valid"], "get", "ns", "default", "-o", "name")
    assert ok.returncode == 0 and ok.stdout.strip() == "namespace/default", ok.stderr


@pytest.mark.kubectl
@pytest.mark.parametrize("version", KUBECTL_VERSIONS)
@pytest.mark.parametrize(("which", "alert"), [("foreign", "remote error: tls: unknown certificate authority"),
                                              ("forged", "remote error: tls: error decrypting message")])
def test_kubectl_names_why_a_certificate_is_refused(
    secured: LocalAPIServer, certs: dict, which: str, alert: str, version: str
) -> None:
    out = kubectl_with_cert(version, secured, certs[which], "get", "ns")
    assert out.returncode != 0
    assert alert in out.stderr, out.stderr


def test_a_foreign_certificate_never_gets_an_answer(secured: LocalAPIServer, certs: dict) -> None:
    for which in ("foreign", "forged"):
        with cert_client(secured, certs[which]) as c, pytest.raises((httpx.TransportError, ssl.SSLError)):
            c.get("/api/v1/namespaces")


def test_unknown_and_malformed_bearer_tokens_get_401(secured: LocalAPIServer) -> None:
    for token in ("not-a-known-token", USERS["bob"] + "x", "a.b.c", "eyJhbGciOiJub25lIn0.e30."):
        with as_token(secured, token) as c:
            r = c.get("/api/v1/namespaces/default/pods")
        assert (r.status_code, r.json()["reason"]) == (401, "Unauthorized"), token


@pytest.mark.kubectl
def test_a_user_without_bindings_gets_kubernetes_forbidden_message(secured: LocalAPIServer, tmp_path: Path) -> None:
    kubeconfig = write_user_kubeconfig(secured, tmp_path / "erin.kubeconfig", USERS["erin"])
    out = subprocess.run([kubectl_path("1.32"), "--kubeconfig", str(kubeconfig), "get", "pods", "-n", "default"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert ('Error from server (Forbidden): pods is forbidden: User "erin" cannot list resource "pods" '
            'in API group "" in the namespace "default"') in out.stderr, out.stderr
