"""A real API server set up as a kubeadm control plane talks to kubelets (client certificate, kubelet
CA), plus the helpers the delegated-auth tests share: certificates from its CA, RBAC bindings, and its
own request counters (to see whether a component asked it)."""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from minikube_py.pki import CertPair, create_ca, ensure_pki, issue_cert, write_private_file
from tests.apiserver.conftest import LocalAPIServer, running_apiserver

from .conftest import admin, ok, write_token_file

RBAC = "/apis/rbac.authorization.k8s.io/v1"
KUBELET_CLIENT = "apiserver-kubelet-client"


@contextmanager
def delegating_apiserver(data_dir: Path) -> Iterator[LocalAPIServer]:
    """``apiserver --local`` with the test users' token file, reaching kubelets with its client
    certificate (kube-apiserver-kubelet-client, in system:masters) and checking their serving
    certificates against the cluster CA."""
    write_token_file(data_dir)
    paths = ensure_pki(data_dir / "pki",
                       clients={KUBELET_CLIENT: ("kube-apiserver-kubelet-client", ("system:masters",))})
    with running_apiserver(data_dir, "--kubelet-client-certificate", str(paths[f"{KUBELET_CLIENT}.crt"]),
                           "--kubelet-client-key", str(paths[f"{KUBELET_CLIENT}.key"]),
                           "--kubelet-certificate-authority", str(paths["ca.crt"])) as server:
        yield server


def cluster_ca(server: LocalAPIServer) -> CertPair:
    pki = server.data_dir / "pki"
    return CertPair.load(pki / "ca.crt", pki / "ca.key")


def write_pair(pair: CertPair, directory: Path, stem: str, chain: bytes = b"") -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
    write_private_file(cert, pair.cert_pem + chain)
    write_private_file(key, pair.key_pem)
    return cert, key


def client_pair(server: LocalAPIServer, directory: Path, stem: str, cn: str, groups: tuple[str, ...] = (),
                foreign: bool = False) -> tuple[Path, Path]:
    """A client certificate from the cluster CA, or from a CA nobody trusts (``foreign``)."""
    ca = create_ca("not-the-cluster-ca") if foreign else cluster_ca(server)
    return write_pair(issue_cert(ca, cn, organizations=groups, client=True), directory, stem)


def serving_pair(server: LocalAPIServer, directory: Path, stem: str, cn: str, foreign: bool = False
                 ) -> tuple[Path, Path]:
    """A serving certificate for 127.0.0.1/localhost, from the cluster CA or from a stranger's."""
    ca = create_ca("self-signed-kubelet-ca") if foreign else cluster_ca(server)
    pair = issue_cert(ca, cn, dns_names=["localhost"], ip_addresses=["127.0.0.1"], server=True)
    return write_pair(pair, directory, stem)


def client_context(server: LocalAPIServer, pair: tuple[Path, Path] | None = None, *,
                   verify: bool = True) -> ssl.SSLContext:
    if verify:
        ctx = ssl.create_default_context(cafile=str(server.ca_file))
    else:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if pair is not None:
        ctx.load_cert_chain(str(pair[0]), str(pair[1]))
    return ctx


def bind_cluster_role(server: LocalAPIServer, name: str, role: str, kind: str, subject: str) -> None:
    body = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject}]}
    with admin(server) as c:
        ok(c.post(f"{RBAC}/clusterrolebindings", json=body), 201)


def review_calls(server: LocalAPIServer) -> dict[str, int]:
    """How many TokenReviews and SubjectAccessReviews the API server has answered so far."""
    with httpx.Client(base_url=server.url, verify=server.ssl_context(), headers=server.headers()) as c:
        text = c.get("/metrics").text
    out = {"tokenreviews": 0, "subjectaccessreviews": 0}
    for resource in out:
        for m in re.finditer(rf'apiserver_request_total\{{verb="[A-Z]+",resource="{resource}",[^}}]*\}} (\d+)',
                             text):
            out[resource] += int(m.group(1))
    return out
