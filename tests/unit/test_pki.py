"""The CA, issued certificates, ensure_pki and the ``minikube-py pki`` command."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from minikube_py import pki
from minikube_py.cli.main import main


@pytest.fixture(scope="module")
def ca() -> pki.CertPair:
    return pki.create_ca()


def _verify_server(ca: pki.CertPair, leaf: pki.CertPair, host: str) -> None:
    """RFC 5280 path validation with the web PKI's rules, as a second opinion beside Go's and OpenSSL's."""
    store = verification.Store([ca.certificate])
    subject: x509.verification.Subject
    try:
        subject = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        subject = x509.DNSName(host)
    verifier = verification.PolicyBuilder().store(store).build_server_verifier(subject)
    verifier.verify(leaf.certificate, [])


def _verify_client(ca: pki.CertPair, leaf: pki.CertPair) -> None:
    store = verification.Store([ca.certificate])
    # The web PKI demands a SAN on client certificates too; Kubernetes' (user in CN) have none.
    ee_policy = verification.ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None
    )
    builder = (
        verification.PolicyBuilder()
        .store(store)
        .extension_policies(ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy)
    )
    builder.build_client_verifier().verify(leaf.certificate, [])


def _ext(cert: x509.Certificate, cls: type) -> x509.Extension:
    return cert.extensions.get_extension_for_class(cls)


# --- create_ca ---------------------------------------------------------------------------------


def test_ca_is_a_self_signed_p256_ca(ca: pki.CertPair) -> None:
    cert = ca.certificate
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "minikube-py-ca"
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)
    assert isinstance(ca.private_key, ec.EllipticCurvePrivateKey)
    assert ca.private_key.curve.name == "secp256r1"
    constraints = _ext(cert, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = _ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    ski = _ext(cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ca.private_key.public_key())
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=3650) <= lifetime <= dt.timedelta(days=3650, hours=2)
    # Backdated, so a machine whose clock is a little behind still accepts it.
    assert cert.not_valid_before_utc < dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)


def test_ca_rejects_bad_arguments() -> None:
    with pytest.raises(pki.PKIError, match="days"):
        pki.create_ca(days=0)
    with pytest.raises(pki.PKIError, match="1-64"):
        pki.create_ca("")


# --- issue_cert --------------------------------------------------------------------------------


def test_serving_certificate(ca: pki.CertPair) -> None:
    leaf = pki.issue_cert(
        ca,
        "kube-apiserver",
        dns_names=["kubernetes", "Master1."],
        ip_addresses=["127.0.0.1", "::1"],
        server=True,
    )
    cert = leaf.certificate
    cert.verify_directly_issued_by(ca.certificate)
    assert cert.issuer == ca.certificate.subject
    assert not _ext(cert, x509.BasicConstraints).value.ca
    usage = _ext(cert, x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert pki.cert_sans(cert) == (["kubernetes", "master1"], ["127.0.0.1", "::1"])
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == _ext(ca.certificate, x509.SubjectKeyIdentifier).value.digest
    _verify_server(ca, leaf, "kubernetes")
    _verify_server(ca, leaf, "127.0.0.1")
    with pytest.raises(verification.VerificationError):
        _verify_server(ca, leaf, "10.0.0.1")  # not a SAN
    with pytest.raises(verification.VerificationError):
        _verify_client(ca, leaf)  # serverAuth only


def test_client_certificate_carries_user_and_groups(ca: pki.CertPair) -> None:
    leaf = pki.issue_cert(ca, "system:node:worker1", organizations=["system:nodes", "extra"], client=True)
    cert = leaf.certificate
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:worker1"
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "system:nodes",
        "extra",
    ]
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        _ext(cert, x509.SubjectAlternativeName)
    _verify_client(ca, leaf)


def test_certificate_for_both_uses(ca: pki.CertPair) -> None:
    leaf = pki.issue_cert(ca, "etcd-peer", ip_addresses=["192.168.56.10"], server=True, client=True)
    assert set(_ext(leaf.certificate, x509.ExtendedKeyUsage).value) == {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    }
    _verify_server(ca, leaf, "192.168.56.10")
    _verify_client(ca, leaf)


def test_leaf_never_outlives_its_ca() -> None:
    short_ca = pki.create_ca(days=10)
    leaf = pki.issue_cert(short_ca, "x", client=True, days=365)
    assert leaf.certificate.not_valid_after_utc == short_ca.certificate.not_valid_after_utc


def test_a_leaf_signed_by_another_ca_does_not_verify(ca: pki.CertPair) -> None:
    other = pki.create_ca("other")
    leaf = pki.issue_cert(other, "x", dns_names=["kubernetes"], server=True)
    with pytest.raises(verification.VerificationError):
        _verify_server(ca, leaf, "kubernetes")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"server": True}, "at least one DNS name or IP"),
        ({"ip_addresses": ["1.2.3.400"]}, "not an IP address: '1.2.3.400'"),
        ({"dns_names": ["bad name"]}, "not a DNS name"),
        ({"dns_names": ["-leading.example"]}, "not a DNS name"),
        ({"dns_names": ["a.*.example"]}, "not a DNS name"),
        ({"days": -1}, "days"),
        ({"organizations": [""]}, "1-64"),
    ],
)
def test_issue_rejects_bad_input(ca: pki.CertPair, kwargs: dict, message: str) -> None:
    with pytest.raises(pki.PKIError, match=message.replace("(", r"\(").replace(".", r"\.")):
        pki.issue_cert(ca, "x", **kwargs)


def test_wildcard_dns_name_is_accepted(ca: pki.CertPair) -> None:
    leaf = pki.issue_cert(ca, "x", dns_names=["*.apps.example"], server=True)
    assert pki.cert_sans(leaf.certificate)[0] == ["*.apps.example"]


def test_a_string_instead_of_a_list_is_refused(ca: pki.CertPair) -> None:
    with pytest.raises(TypeError):
        pki.issue_cert(ca, "x", ip_addresses="127.0.0.1")  # type: ignore[arg-type]


def test_only_a_ca_can_issue(ca: pki.CertPair) -> None:
    leaf = pki.issue_cert(ca, "x", client=True)
    with pytest.raises(pki.PKIError, match="not a CA"):
        pki.issue_cert(leaf, "y", client=True)
    mismatched = pki.CertPair(ca.cert_pem, pki.create_ca().key_pem)
    with pytest.raises(pki.PKIError, match="does not belong"):
        pki.issue_cert(mismatched, "y", client=True)


# --- apiserver_sans ----------------------------------------------------------------------------


def test_apiserver_sans() -> None:
    dns, ips = pki.apiserver_sans(["192.168.56.10", "192.168.56.11", "127.0.0.1"])
    assert dns == [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "localhost",
    ]
    assert ips == ["127.0.0.1", "10.96.0.1", "192.168.56.10", "192.168.56.11"]
    assert pki.apiserver_sans(["fd00:0::1"], service_ip="10.0.0.1")[1] == ["127.0.0.1", "10.0.0.1", "fd00::1"]
    with pytest.raises(pki.PKIError, match="master1"):
        pki.apiserver_sans(["master1"])


# --- CertPair files ----------------------------------------------------------------------------


def test_save_and_load(tmp_path: Path, ca: pki.CertPair) -> None:
    crt, key = tmp_path / "ca.crt", tmp_path / "ca.key"
    ca.save(crt, key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(crt.stat().st_mode) == 0o644
    assert pki.CertPair.load(crt, key) == ca
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.crt", "ca.key"]  # no temporary files left
    with pytest.raises(FileExistsError):
        pki.create_ca().save(crt, key)
    assert crt.read_bytes() == ca.cert_pem and key.read_bytes() == ca.key_pem
    other = pki.create_ca()
    other.save(crt, key, overwrite=True)
    assert pki.CertPair.load(crt, key) == other


def test_load_errors(tmp_path: Path, ca: pki.CertPair) -> None:
    crt, key = tmp_path / "a.crt", tmp_path / "a.key"
    with pytest.raises(pki.PKIError, match="does not exist"):
        pki.CertPair.load(crt, key)
    crt.write_bytes(ca.cert_pem)
    key.write_bytes(pki.create_ca().key_pem)
    with pytest.raises(pki.PKIError, match="is not the private key of"):
        pki.CertPair.load(crt, key)
    key.write_bytes(b"garbage")
    with pytest.raises(pki.PKIError, match="not an unencrypted PEM private key"):
        pki.CertPair.load(crt, key)
    crt.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(pki.PKIError, match="not a PEM certificate"):
        pki.CertPair.load(crt, key)


# --- ensure_pki --------------------------------------------------------------------------------


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_ensure_pki_creates_the_cluster_material(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    paths = pki.ensure_pki(d, master_addresses=["192.168.56.10"], extra_dns=["master1"])
    names = ["ca.crt", "ca.key", "apiserver.crt", "apiserver.key", "admin.crt", "admin.key"]
    assert list(paths) == names
    assert all(paths[n] == d / n for n in names)
    for n in names:
        assert stat.S_IMODE(paths[n].stat().st_mode) == (0o600 if n.endswith(".key") else 0o644)

    ca = pki.CertPair.load(paths["ca.crt"], paths["ca.key"])
    apiserver = pki.CertPair.load(paths["apiserver.crt"], paths["apiserver.key"])
    admin = pki.CertPair.load(paths["admin.crt"], paths["admin.key"])
    for host in ("127.0.0.1", "10.96.0.1", "192.168.56.10", "kubernetes.default.svc", "localhost", "master1"):
        _verify_server(ca, apiserver, host)
    _verify_client(ca, admin)
    subject = admin.certificate.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "admin"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"


def test_ensure_pki_is_idempotent_and_never_overwrites(tmp_path: Path) -> None:
    pki.ensure_pki(tmp_path, master_addresses=["192.168.56.10"])
    before = _snapshot(tmp_path)
    pki.ensure_pki(tmp_path, master_addresses=["192.168.56.10"])
    pki.ensure_pki(tmp_path)  # a subset of what the certificate covers
    assert _snapshot(tmp_path) == before


def test_ensure_pki_reissues_a_missing_pair_with_the_existing_ca(tmp_path: Path) -> None:
    paths = pki.ensure_pki(tmp_path)
    ca_before = paths["ca.crt"].read_bytes()
    apiserver_before = paths["apiserver.crt"].read_bytes()
    paths["admin.crt"].unlink()
    paths["admin.key"].unlink()
    pki.ensure_pki(tmp_path)
    assert paths["ca.crt"].read_bytes() == ca_before
    assert paths["apiserver.crt"].read_bytes() == apiserver_before
    ca = pki.CertPair.load(paths["ca.crt"], paths["ca.key"])
    _verify_client(ca, pki.CertPair.load(paths["admin.crt"], paths["admin.key"]))


def test_ensure_pki_refuses_a_half_pair(tmp_path: Path) -> None:
    paths = pki.ensure_pki(tmp_path)
    paths["ca.key"].unlink()
    before = _snapshot(tmp_path)
    with pytest.raises(pki.PKIError, match=r"ca\.crt exists but .*ca\.key does not"):
        pki.ensure_pki(tmp_path)
    assert _snapshot(tmp_path) == before


def test_ensure_pki_refuses_an_apiserver_cert_missing_new_addresses(tmp_path: Path) -> None:
    pki.ensure_pki(tmp_path, master_addresses=["192.168.56.10"])
    before = _snapshot(tmp_path)
    with pytest.raises(
        pki.PKIError, match=r"does not cover 192\.168\.56\.11, master2; remove apiserver\.crt"
    ):
        pki.ensure_pki(tmp_path, master_addresses=["192.168.56.10", "192.168.56.11"], extra_dns=["master2"])
    assert _snapshot(tmp_path) == before


def test_ensure_pki_refuses_a_leaf_from_another_ca(tmp_path: Path) -> None:
    paths = pki.ensure_pki(tmp_path)
    stranger = pki.issue_cert(pki.create_ca(), "admin", client=True)
    stranger.save(paths["admin.crt"], paths["admin.key"], overwrite=True)
    with pytest.raises(pki.PKIError, match=r"admin\.crt was not issued by the CA"):
        pki.ensure_pki(tmp_path)


def test_ensure_pki_issues_component_client_pairs(tmp_path: Path) -> None:
    clients = {
        "scheduler": ("system:kube-scheduler", ()),
        "kubelet-worker1": ("system:node:worker1", ["system:nodes"]),
    }
    paths = pki.ensure_pki(tmp_path, clients=clients)
    assert {"scheduler.crt", "scheduler.key", "kubelet-worker1.crt", "kubelet-worker1.key"} <= set(paths)
    ca = pki.CertPair.load(paths["ca.crt"], paths["ca.key"])
    kubelet = pki.CertPair.load(paths["kubelet-worker1.crt"], paths["kubelet-worker1.key"])
    _verify_client(ca, kubelet)
    assert kubelet.certificate.subject.rfc4514_string() == "CN=system:node:worker1,O=system:nodes"
    before = _snapshot(tmp_path)
    pki.ensure_pki(tmp_path, clients=clients)
    assert _snapshot(tmp_path) == before
    # A pair whose identity differs from the one asked for is refused, not silently kept.
    with pytest.raises(pki.PKIError, match=r"scheduler\.crt is for CN=\['system:kube-scheduler'\]"):
        pki.ensure_pki(tmp_path, clients={"scheduler": ("system:kube-scheduler", ["system:masters"])})
    for bad in ("ca", "admin", "../escape", ""):
        with pytest.raises(pki.PKIError, match="cannot use"):
            pki.ensure_pki(tmp_path, clients={bad: ("x", ())})
    assert _snapshot(tmp_path) == before


def test_ensure_pki_rejects_bad_addresses_before_writing(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    with pytest.raises(pki.PKIError, match="not an IP address"):
        pki.ensure_pki(d, master_addresses=["192.168.56.999"])
    with pytest.raises(pki.PKIError, match="not a DNS name"):
        pki.ensure_pki(d, extra_dns=["no spaces allowed"])
    assert not d.exists()


def test_ensure_pki_in_an_unwritable_directory() -> None:
    # /proc refuses new entries even to root, which a chmod-ed temporary directory would not.
    with pytest.raises(pki.PKIError, match="cannot create /proc/"):
        pki.ensure_pki(Path("/proc/minikube-py-test/pki"))


def test_ensure_pki_where_a_file_blocks_the_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(pki.PKIError, match="cannot create"):
        pki.ensure_pki(blocker / "pki")


# --- the command -------------------------------------------------------------------------------


def test_cli_init_issue_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "pki"
    assert (
        main(["pki", "init", "--dir", str(d), "--master-address", "192.168.56.10", "--dns", "master1"]) == 0
    )
    assert capsys.readouterr().out.split() == [
        str(d / n) for n in ("ca.crt", "ca.key", "apiserver.crt", "apiserver.key", "admin.crt", "admin.key")
    ]
    assert main(["pki", "init", "--dir", str(d)]) == 0  # again: nothing changes
    capsys.readouterr()

    out = tmp_path / "kubelet"
    argv = ["pki", "issue", "--dir", str(d), "--cn", "system:node:worker1", "--org", "system:nodes"]
    assert (
        main([*argv, "--server", "--client", "--ip", "192.168.56.21", "--dns", "worker1", "--out", str(out)])
        == 0
    )
    ca = pki.CertPair.load(d / "ca.crt", d / "ca.key")
    kubelet = pki.CertPair.load(tmp_path / "kubelet.crt", tmp_path / "kubelet.key")
    _verify_server(ca, kubelet, "192.168.56.21")
    _verify_client(ca, kubelet)
    capsys.readouterr()

    assert main(["pki", "show", str(tmp_path / "kubelet.crt")]) == 0
    shown = capsys.readouterr().out
    assert "subject:      CN=system:node:worker1,O=system:nodes" in shown
    assert "issuer:       CN=minikube-py-ca" in shown
    assert "usages:       serverAuth, clientAuth" in shown
    assert "DNS names:    worker1" in shown
    assert "IP addresses: 192.168.56.21" in shown
    assert "(in 36" in shown  # "in 364 days" or "in 365 days" depending on the second


def test_cli_issue_defaults_to_a_client_certificate(tmp_path: Path) -> None:
    pki.ensure_pki(tmp_path)
    assert (
        main(["pki", "issue", "--dir", str(tmp_path), "--cn", "scheduler", "--out", str(tmp_path / "s")]) == 0
    )
    cert = pki.CertPair.load(tmp_path / "s.crt", tmp_path / "s.key").certificate
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    return err


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "pki")
    out = str(tmp_path / "x")
    assert "no CA in" in _error(capsys, ["pki", "issue", "--dir", d, "--cn", "x", "--out", out])
    assert "not an IP address: '10.0.0.256'" in _error(
        capsys, ["pki", "init", "--dir", d, "--master-address", "10.0.0.256"]
    )
    pki.ensure_pki(Path(d))
    assert "not an IP address" in _error(
        capsys, ["pki", "issue", "--dir", d, "--cn", "x", "--server", "--ip", "nope", "--out", out]
    )
    assert "needs at least one DNS name" in _error(
        capsys, ["pki", "issue", "--dir", d, "--cn", "x", "--server", "--out", out]
    )
    assert "is not a directory" in _error(
        capsys, ["pki", "issue", "--dir", d, "--cn", "x", "--out", str(tmp_path / "missing" / "x")]
    )
    assert main(["pki", "issue", "--dir", d, "--cn", "x", "--out", out]) == 0
    capsys.readouterr()
    assert "exists (use --force" in _error(capsys, ["pki", "issue", "--dir", d, "--cn", "x", "--out", out])
    assert main(["pki", "issue", "--dir", d, "--cn", "y", "--out", out, "--force"]) == 0
    capsys.readouterr()
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    assert "cannot create" in _error(capsys, ["pki", "init", "--dir", str(blocker / "pki")])
    assert "holds no PEM certificate" in _error(capsys, ["pki", "show", str(Path(d) / "ca.key")])
    assert "cannot read" in _error(capsys, ["pki", "show", str(tmp_path / "absent.crt")])
    assert "cannot write /proc/" in _error(
        capsys, ["pki", "issue", "--dir", d, "--cn", "x", "--out", "/proc/x"]
    )
