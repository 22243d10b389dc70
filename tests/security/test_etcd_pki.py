"""``minikube-py pki etcd``: etcd's own CA and kubeadm's etcd certificates, kept and checked on reruns."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from minikube_py import pki
from minikube_py.cli.main import main


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_etcd_pki_layout_sans_usages_and_a_separate_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pki", "init", "--dir", str(tmp_path)]) == 0
    assert main(["pki", "etcd", "--dir", str(tmp_path), "--member", "master1=192.168.56.10",
                 "--member", "master2=192.168.56.11,10.0.0.2", "--dns", "etcd.lab"]) == 0
    printed = capsys.readouterr().out.split()
    etcd = tmp_path / "etcd"
    for name in ("ca", "server-master1", "peer-master1", "server-master2", "peer-master2", "healthcheck-client"):
        assert str(etcd / f"{name}.crt") in printed and str(etcd / f"{name}.key") in printed
    assert (etcd / "ca.key").stat().st_mode & 0o077 == 0

    etcd_ca, cluster_ca = load(etcd / "ca.crt"), load(tmp_path / "ca.crt")
    assert etcd_ca.subject != cluster_ca.subject and etcd_ca.public_key() != cluster_ca.public_key()
    for kind in ("server", "peer"):
        cert = load(etcd / f"{kind}-master2.crt")
        cert.verify_directly_issued_by(etcd_ca)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "master2"
        dns, ips = pki.cert_sans(cert)
        assert set(dns) == {"master2", "etcd.lab", "localhost"}
        assert set(ips) == {"192.168.56.11", "10.0.0.2", "127.0.0.1", "::1"}
        assert usages(cert) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    for path, cn in ((tmp_path / "apiserver-etcd-client.crt", "kube-apiserver-etcd-client"),
                     (etcd / "healthcheck-client.crt", "kube-etcd-healthcheck-client")):
        cert = load(path)
        cert.verify_directly_issued_by(etcd_ca)
        assert cert.subject.rfc4514_string() == f"CN={cn}"
        assert usages(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}

    # A rerun keeps everything; `pki issue --dir DIR/etcd` issues more etcd clients from the same CA.
    before = (etcd / "server-master1.crt").read_bytes()
    assert main(["pki", "etcd", "--dir", str(tmp_path), "--member", "master1=192.168.56.10"]) == 0
    assert (etcd / "server-master1.crt").read_bytes() == before
    assert main(["pki", "issue", "--dir", str(etcd), "--cn", "backup", "--out", str(etcd / "backup")]) == 0
    load(etcd / "backup.crt").verify_directly_issued_by(etcd_ca)


def test_etcd_pki_bad_input_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for member, message in (("bad name=10.0.0.1", "cannot use 'bad name' as an etcd member name"),
                            ("m1=10.0.0.x", "not an IP address: '10.0.0.x'"),
                            ("m1=", "use NAME=IP[,IP...]")):
        assert main(["pki", "etcd", "--dir", str(tmp_path / "x"), "--member", member]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x" / "etcd" / "ca.key").exists()  # nothing written for bad input

    assert main(["pki", "etcd", "--dir", str(tmp_path), "--member", "m1=10.0.0.1"]) == 0
    capsys.readouterr()
    assert main(["pki", "etcd", "--dir", str(tmp_path), "--member", "m1=10.0.0.9"]) == 2
    assert "server-m1.crt does not cover 10.0.0.9" in capsys.readouterr().err
    with pytest.raises(pki.PKIError, match="given twice"):
        pki.ensure_etcd_pki(tmp_path, [pki.EtcdMember("m1", ("10.0.0.1",)), pki.EtcdMember("m1", ("10.0.0.1",))])
