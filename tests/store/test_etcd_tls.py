"""The etcd backend over TLS with client-certificate authentication, against real etcd members.

A 3-member cluster (client and peer TLS, ``--client-cert-auth``) with certificates from
``minikube-py pki etcd``: the store contract holds over TLS, only certificates from etcd's own CA
get in (etcdctl, the store, the API server), and every refusal names the endpoint and the cause.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from minikube_py.cli.main import main
from minikube_py.store import Store, StoreUnavailableError, open_store
from minikube_py.store.etcd import EtcdStore
from minikube_py.store.etcd_tls import EtcdTLS
from tests.apiserver.conftest import REPO, running_apiserver

from .conftest import TEST_WATCH_BUFFER
from .etcd_harness import etcd_available
from .etcd_tls_harness import TLSEtcdCluster

# The contract subset run again over TLS: reads, writes, guards, watches, compaction and leases.
from .test_contract import (  # noqa: F401  (collected by pytest in this module, with its store)
    test_bad_input_gets_clear_errors,
    test_compaction_drops_old_revisions_and_keeps_current_values,
    test_concurrent_creates_of_one_key_have_one_winner,
    test_create_on_an_existing_key_raises_key_exists,
    test_delete_is_guarded_by_mod_revision,
    test_lease_keepalive_and_revoke,
    test_range_limit_start_after_more_count_and_revision,
    test_update_with_a_stale_mod_revision_conflicts,
    test_watch_replays_from_a_revision_then_goes_live,
    test_watch_sees_every_write_of_concurrent_writers_in_order,
    test_writes_get_increasing_revisions_and_etcd_key_fields,
)

CHILD_ENV = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSEtcdCluster]:
    if not etcd_available():
        pytest.skip("etcd is not installed (Debian package etcd-server; `make test` installs it)")
    cluster = TLSEtcdCluster(tmp_path_factory.mktemp("etcd-tls"), members=3)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def client_tls(cluster: TLSEtcdCluster, stem: str = "apiserver-etcd-client", ca: Path | None = None) -> EtcdTLS:
    cert, key = cluster.pair(stem)
    return EtcdTLS(ca or cluster.etcd_ca, cert, key)


@pytest.fixture
async def store(tls_etcd: TLSEtcdCluster) -> AsyncIterator[Store]:
    s = await EtcdStore.open(tls_etcd.urls, watch_buffer=TEST_WATCH_BUFFER, tls=client_tls(tls_etcd))
    try:
        yield s
    finally:
        await s.close()


# -- who etcd lets in ------------------------------------------------------------------------------


def etcdctl(cluster: TLSEtcdCluster, *args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("etcdctl") is None:
        pytest.fail("etcdctl is missing (Debian package etcd-client, installed with etcd-server)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")} | {"ETCDCTL_API": "3"}
    return subprocess.run(
        ["etcdctl", "--endpoints", cluster.urls[0], "--dial-timeout=1s", "--command-timeout=3s", *args],
        capture_output=True, text=True, env=env, timeout=30,
    )


def test_etcdctl_needs_a_certificate_from_the_etcd_ca(tls_etcd: TLSEtcdCluster) -> None:
    ca = str(tls_etcd.etcd_ca)
    refused = etcdctl(tls_etcd, "--cacert", ca, "put", "/tls/etcdctl", "x")
    assert refused.returncode != 0, refused.stdout

    cert, key = tls_etcd.pair("etcd/healthcheck-client")
    ok = etcdctl(tls_etcd, "--cacert", ca, "--cert", str(cert), "--key", str(key), "endpoint", "health")
    assert ok.returncode == 0 and "is healthy" in ok.stdout + ok.stderr, ok.stderr
    ok = etcdctl(tls_etcd, "--cacert", ca, "--cert", str(cert), "--key", str(key), "put", "/tls/etcdctl", "x")
    assert ok.returncode == 0 and "OK" in ok.stdout, ok.stderr

    # Signed by the cluster CA, good for the API server as the admin: nothing to etcd.
    cert, key = tls_etcd.pair("admin")
    foreign = etcdctl(tls_etcd, "--cacert", ca, "--cert", str(cert), "--key", str(key), "get", "/tls/etcdctl")
    assert foreign.returncode != 0 and "x" not in foreign.stdout


async def test_the_store_names_the_endpoint_and_the_cause_of_a_refusal(tls_etcd: TLSEtcdCluster) -> None:
    urls = tls_etcd.urls

    with pytest.raises(StoreUnavailableError) as no_cert:
        await EtcdStore.open(urls, tls=EtcdTLS(tls_etcd.etcd_ca), timeout=30.0)
    for url in urls:
        assert url in str(no_cert.value)
    assert "requires a client certificate and none was given" in str(no_cert.value)

    with pytest.raises(StoreUnavailableError) as foreign:
        await EtcdStore.open(urls, tls=client_tls(tls_etcd, "admin"), timeout=30.0)
    assert urls[0] in str(foreign.value)
    assert "refused the client certificate CN=admin,O=system:masters" in str(foreign.value)

    with pytest.raises(StoreUnavailableError) as wrong_ca:
        await EtcdStore.open(urls, tls=client_tls(tls_etcd, ca=tls_etcd.cluster_ca), timeout=30.0)
    assert urls[0] in str(wrong_ca.value)
    assert f"not signed by the CA in {tls_etcd.cluster_ca}" in str(wrong_ca.value)

    # Plain gRPC to a TLS member never works: not retried into a success, reported as unavailable.
    with pytest.raises(StoreUnavailableError) as plain:
        await EtcdStore.open([u.replace("https://", "http://") for u in urls], timeout=1.0)
    assert urls[0].removeprefix("https://") in str(plain.value)


async def test_endpoints_and_files_that_cannot_work_are_refused_before_connecting(
    tls_etcd: TLSEtcdCluster, tmp_path: Path
) -> None:
    tls = client_tls(tls_etcd)
    with pytest.raises(ValueError, match="mix http:// and https://"):
        await EtcdStore.open([tls_etcd.urls[0], "http://127.0.0.1:2"], tls=tls)
    with pytest.raises(ValueError, match="endpoints are http://"):
        await EtcdStore.open(["http://127.0.0.1:2"], tls=tls)
    with pytest.raises(ValueError, match="needs its key"):
        await EtcdStore.open(tls_etcd.urls, tls=EtcdTLS(tls_etcd.etcd_ca, tls.cert_file, None))
    with pytest.raises(ValueError, match="holds no PEM certificate"):
        await EtcdStore.open(tls_etcd.urls, tls=EtcdTLS(tls.key_file, tls.cert_file, tls.key_file))
    with pytest.raises(ValueError, match="cannot read the etcd CA file"):
        await EtcdStore.open(tls_etcd.urls, tls=EtcdTLS(tmp_path / "missing.crt"))
    admin_key = tls_etcd.pair("admin")[1]
    with pytest.raises(ValueError, match="is not the private key of"):
        await EtcdStore.open(tls_etcd.urls, tls=EtcdTLS(tls_etcd.etcd_ca, tls.cert_file, admin_key))


async def test_open_store_url_and_bare_endpoints_use_tls_when_files_are_given(tls_etcd: TLSEtcdCluster) -> None:
    bare = ",".join(u.removeprefix("https://") for u in tls_etcd.urls)
    s = await open_store(f"etcd://{bare}", etcd_tls=client_tls(tls_etcd))
    try:
        assert isinstance(s, EtcdStore) and s.secure
        await s.create("/tls/open-store", b"v")
        assert (await s.get("/tls/open-store")).value == b"v"  # type: ignore[union-attr]
    finally:
        await s.close()


def test_store_command_over_tls(tls_etcd: TLSEtcdCluster, capsys: pytest.CaptureFixture[str]) -> None:
    url = "etcd://" + ",".join(tls_etcd.urls)
    cert, key = tls_etcd.pair("etcd/healthcheck-client")
    tls = ["--cacert", str(tls_etcd.etcd_ca), "--cert", str(cert), "--key", str(key)]
    assert main(["store", "--url", url, *tls, "put", "/tls/cmd", "hello"]) == 0
    assert '"value": "hello"' in capsys.readouterr().out

    code = main(["store", "--url", url, "--cacert", str(tls_etcd.etcd_ca), "get", "/tls/cmd"])
    err = capsys.readouterr().err
    assert code == 2 and "requires a client certificate" in err and tls_etcd.urls[0] in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert main(["store", "--url", url, "--cert", str(cert), "get", "/tls/cmd"]) == 2
    assert "--cert and --key go together" in capsys.readouterr().err


async def test_fail_over_and_watch_resume_over_tls(tmp_path: Path) -> None:
    if not etcd_available():
        pytest.skip("etcd is not installed")
    cluster = TLSEtcdCluster(tmp_path, members=3)
    cluster.start()
    try:
        s = await EtcdStore.open(cluster.urls, tls=client_tls(cluster), timeout=10.0)
        try:
            first = await s.create("/tls/fo/a", b"1")
            async with s.watch("/tls/fo/", first.mod_revision - 1) as watch:
                seen = []
                async for event in watch:  # the stream is up once its first event arrived
                    seen.append(event.kv.key)
                    if len(seen) == 1:
                        cluster.kill(s._pool.current)  # the member this client and its watch talk to
                        await s.create("/tls/fo/b", b"2")
                        await s.create("/tls/fo/c", b"3")
                    if len(seen) == 3:
                        break
                assert seen == ["/tls/fo/a", "/tls/fo/b", "/tls/fo/c"]  # no gap, no duplicate
                assert watch.reconnects >= 1  # type: ignore[attr-defined]
        finally:
            await s.close()
    finally:
        cluster.stop()


# -- the API server on a TLS etcd ------------------------------------------------------------------


def test_apiserver_on_tls_etcd_serves_kubectl(tls_etcd: TLSEtcdCluster, tmp_path: Path) -> None:
    cert, key = tls_etcd.pair("apiserver-etcd-client")
    flags = ["--etcd-servers", ",".join(tls_etcd.urls), "--etcd-cafile", str(tls_etcd.etcd_ca),
             "--etcd-certfile", str(cert), "--etcd-keyfile", str(key)]
    with running_apiserver(tmp_path / "data", *flags) as server:
        kubectl = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
        out = subprocess.run([kubectl, "--kubeconfig", str(server.kubeconfig), "get", "ns", "-o", "name"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "namespace/default" in out.stdout and "namespace/kube-system" in out.stdout
    # The namespaces are in etcd, read back with the health-check client.
    assert main(["store", "--url", "etcd://" + tls_etcd.urls[1], "--cacert", str(tls_etcd.etcd_ca),
                 "--cert", str(tls_etcd.pair("etcd/healthcheck-client")[0]),
                 "--key", str(tls_etcd.pair("etcd/healthcheck-client")[1]),
                 "get", "/registry/namespaces/default"]) == 0


@pytest.mark.parametrize("case", ["no-client-cert", "cluster-ca-cert", "mixed", "http-with-files"])
def test_apiserver_with_etcd_tls_that_cannot_work_exits_with_one_line(
    tls_etcd: TLSEtcdCluster, tmp_path: Path, case: str
) -> None:
    ca = str(tls_etcd.etcd_ca)
    cert, key = (str(p) for p in tls_etcd.pair("admin" if case == "cluster-ca-cert" else "apiserver-etcd-client"))
    servers = ",".join(tls_etcd.urls)
    flags = {
        "no-client-cert": ["--etcd-servers", servers, "--etcd-cafile", ca],
        "cluster-ca-cert": ["--etcd-servers", servers, "--etcd-cafile", ca, "--etcd-certfile", cert,
                            "--etcd-keyfile", key],
        "mixed": ["--etcd-servers", f"{tls_etcd.urls[0]},http://127.0.0.1:2", "--etcd-cafile", ca],
        "http-with-files": ["--etcd-servers", "http://127.0.0.1:2", "--etcd-cafile", ca],
    }[case]
    proc = subprocess.run(
        [sys.executable, "-m", "minikube_py", "apiserver", "--local", "--data-dir", str(tmp_path / "d"),
         "--port", "0", *flags],
        capture_output=True, text=True, timeout=60, cwd=REPO, env=CHILD_ENV,
    )
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    expected = {
        "no-client-cert": "requires a client certificate and none was given",
        "cluster-ca-cert": "refused the client certificate CN=admin",
        "mixed": "mixes http:// and https://",
        "http-with-files": "are for https:// etcd endpoints",
    }[case]
    assert expected in err, err
    if case in ("no-client-cert", "cluster-ca-cert"):
        assert tls_etcd.urls[0] in err
