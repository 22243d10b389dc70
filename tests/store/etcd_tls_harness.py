"""Real etcd members on loopback that speak only TLS and require client certificates.

Each member serves clients on ``https://127.0.0.1:PORT`` with ``--client-cert-auth`` and talks to its
peers over TLS with ``--peer-client-cert-auth``, every certificate from ``minikube-py pki etcd``
(etcd's own CA). A cluster CA (``pki init``) is made beside it, so tests have a certificate that is
valid for the API server but must be refused by etcd. Everything else (ports from the kernel, only
our own PIDs signalled) is the plain harness's.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from minikube_py.pki import EtcdMember, ensure_etcd_pki, ensure_pki

from .etcd_harness import EtcdCluster, _Member


class TLSEtcdCluster(EtcdCluster):
    """``members`` etcd processes on 127.0.0.1 with client and peer TLS; PKI in ``workdir/pki``."""

    scheme = "https"

    def __init__(self, workdir: Path, members: int = 1) -> None:
        super().__init__(workdir, members)
        self.pki_dir = self.workdir / "pki"

    @property
    def etcd_ca(self) -> Path:
        return self.pki_dir / "etcd" / "ca.crt"

    @property
    def cluster_ca(self) -> Path:
        return self.pki_dir / "ca.crt"

    def pair(self, stem: str) -> tuple[Path, Path]:
        """(cert, key) of a pair under the PKI dir, e.g. ``"apiserver-etcd-client"``, ``"admin"``."""
        return self.pki_dir / f"{stem}.crt", self.pki_dir / f"{stem}.key"

    def _prepare(self, names: list[str]) -> None:
        ensure_etcd_pki(self.pki_dir, [EtcdMember(n, ("127.0.0.1",)) for n in names])
        ensure_pki(self.pki_dir)  # the cluster CA and its admin pair: valid, but not for etcd

    def _extra_flags(self, m: _Member) -> dict[str, str]:
        etcd = self.pki_dir / "etcd"
        return {
            "client-cert-auth": "true",
            "trusted-ca-file": str(etcd / "ca.crt"),
            "cert-file": str(etcd / f"server-{m.name}.crt"),
            "key-file": str(etcd / f"server-{m.name}.key"),
            "peer-client-cert-auth": "true",
            "peer-trusted-ca-file": str(etcd / "ca.crt"),
            "peer-cert-file": str(etcd / f"peer-{m.name}.crt"),
            "peer-key-file": str(etcd / f"peer-{m.name}.key"),
        }

    def _channel(self, endpoint: str) -> grpc.Channel:
        cert, key = self.pair("etcd/healthcheck-client")
        creds = grpc.ssl_channel_credentials(self.etcd_ca.read_bytes(), key.read_bytes(), cert.read_bytes())
        return grpc.secure_channel(endpoint, creds)
