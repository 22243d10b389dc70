"""kubeconfig writing and loading, and real kubectl reaching a server that uses our certificates."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import ssl
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web

from minikube_py import pki
from minikube_py.client.kubeconfig import KubeConfig, load_kubeconfig, write_kubeconfig


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return pki.ensure_pki(tmp_path_factory.mktemp("pki"))


def _pair(material: dict[str, Path], stem: str) -> pki.CertPair:
    return pki.CertPair.load(material[f"{stem}.crt"], material[f"{stem}.key"])


# --- writing and loading -----------------------------------------------------------------------


def test_token_kubeconfig_round_trip(tmp_path: Path, material: dict[str, Path]) -> None:
    path = tmp_path / "sub" / "admin.conf"
    ca_pem = material["ca.crt"].read_bytes()
    write_kubeconfig(
        path, server="https://127.0.0.1:6443", ca_pem=ca_pem, token="abc.def", namespace="kube-system"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = yaml.safe_load(path.read_text())
    assert doc["current-context"] == "minikube-py"
    assert doc["contexts"] == [
        {
            "name": "minikube-py",
            "context": {"cluster": "minikube-py", "user": "admin", "namespace": "kube-system"},
        }
    ]
    assert base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]) == ca_pem
    assert load_kubeconfig(path) == KubeConfig(
        server="https://127.0.0.1:6443", ca_pem=ca_pem, token="abc.def", namespace="kube-system"
    )


def test_client_certificate_kubeconfig_round_trip(tmp_path: Path, material: dict[str, Path]) -> None:
    admin = _pair(material, "admin")
    path = tmp_path / "kubelet.conf"
    write_kubeconfig(
        path,
        server="https://192.168.56.10:6443/",
        ca_pem=material["ca.crt"].read_bytes(),
        user="system:node:worker1",
        client_cert_pem=admin.cert_pem,
        client_key_pem=admin.key_pem,
        cluster_name="lab",
        context_name="worker1@lab",
    )
    config = load_kubeconfig(path)
    assert config.server == "https://192.168.56.10:6443"
    assert (config.client_cert_pem, config.client_key_pem) == (admin.cert_pem, admin.key_pem)
    assert config.token is None and config.namespace == "default" and not config.insecure
    assert yaml.safe_load(path.read_text())["users"][0]["name"] == "system:node:worker1"
    # Rewriting replaces the file, still private.
    write_kubeconfig(path, server="https://10.0.0.1", ca_pem=material["ca.crt"].read_bytes(), token="t")
    assert load_kubeconfig(path).token == "t"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"server": "127.0.0.1:6443"}, "http"),
        ({"server": "https://127.0.0.1:99999"}, "bad port"),
        ({"ca_pem": b"not pem"}, "ca_pem is not a PEM certificate"),
        ({"client_cert_pem": b"x"}, "give both or neither"),
        ({"token": "has space"}, "whitespace"),
    ],
)
def test_write_rejects_bad_input(
    tmp_path: Path, material: dict[str, Path], kwargs: dict, message: str
) -> None:
    args = {"server": "https://127.0.0.1:6443", "ca_pem": material["ca.crt"].read_bytes(), **kwargs}
    with pytest.raises(ValueError, match=message):
        write_kubeconfig(tmp_path / "k", **args)
    assert not (tmp_path / "k").exists()


def _write_yaml(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def _doc(server: str, *, cluster: dict | None = None, user: dict | None = None, current: str = "ctx") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, **(cluster or {})}}],
        "users": [{"name": "u", "user": user or {}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": current,
    }


def test_file_references_are_relative_to_the_kubeconfig(tmp_path: Path, material: dict[str, Path]) -> None:
    admin = _pair(material, "admin")
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.crt").write_bytes(material["ca.crt"].read_bytes())
    (certs / "admin.crt").write_bytes(admin.cert_pem)
    (certs / "admin.key").write_bytes(admin.key_pem)
    (certs / "token").write_text("s3cret\n")
    user = {
        "client-certificate": "certs/admin.crt",
        "client-key": str(certs / "admin.key"),  # absolute works too
        "tokenFile": "certs/token",
    }
    path = _write_yaml(
        tmp_path / "config", _doc("https://h:1", cluster={"certificate-authority": "certs/ca.crt"}, user=user)
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cwd = Path.cwd()
    os.chdir(elsewhere)  # relative to the file, not to the working directory
    try:
        config = load_kubeconfig(path)
    finally:
        os.chdir(cwd)
    assert config.ca_pem == material["ca.crt"].read_bytes()
    assert (config.client_cert_pem, config.client_key_pem) == (admin.cert_pem, admin.key_pem)
    assert config.token == "s3cret"


def test_context_selection_and_insecure(tmp_path: Path) -> None:
    doc = _doc("https://a:1", cluster={"insecure-skip-tls-verify": True}, user={"token": "t1"})
    doc["clusters"].append({"name": "c2", "cluster": {"server": "http://b:2"}})
    doc["contexts"].append({"name": "other", "context": {"cluster": "c2", "namespace": "ns"}})
    path = _write_yaml(tmp_path / "config", doc)
    first = load_kubeconfig(path)
    assert (first.server, first.insecure, first.token) == ("https://a:1", True, "t1")
    second = load_kubeconfig(path, context="other")
    assert (second.server, second.token, second.namespace) == ("http://b:2", None, "ns")
    assert second.ssl_context() is None
    with pytest.raises(ValueError, match="context 'nope' is not defined"):
        load_kubeconfig(path, context="nope")


def test_kubeconfig_env_merges_with_first_file_winning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _write_yaml(tmp_path / "one", _doc("https://one:1", user={"token": "one"}, current=""))
    second_doc = _doc("https://two:2", user={"token": "two"})
    second_doc["clusters"].append({"name": "only-in-two", "cluster": {"server": "https://three:3"}})
    second_doc["contexts"].append({"name": "three", "context": {"cluster": "only-in-two", "user": "u"}})
    second = _write_yaml(tmp_path / "two", second_doc)
    missing = tmp_path / "missing"
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(missing), str(first), str(second)]))
    config = load_kubeconfig()  # current-context comes from the second file, entries from the first
    assert (config.server, config.token) == ("https://one:1", "one")
    assert load_kubeconfig(context="three").server == "https://three:3"

    monkeypatch.setenv("KUBECONFIG", str(missing))
    with pytest.raises(ValueError, match="none of the files in KUBECONFIG exist"):
        load_kubeconfig()


def test_default_path_is_home_kube_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ValueError, match=r"kubeconfig .*\.kube/config does not exist"):
        load_kubeconfig()
    (tmp_path / ".kube").mkdir()
    _write_yaml(tmp_path / ".kube" / "config", _doc("https://home:1"))
    assert load_kubeconfig().server == "https://home:1"


@pytest.mark.parametrize(
    "text, message",
    [
        ("clusters: [unclosed", "not valid YAML"),
        ("- a list\n", "must be a YAML mapping"),
        ("", "no current-context"),
        ("clusters: {}\n", "clusters must be a list"),
        ("clusters: [{cluster: {server: 'https://x'}}]\n", r"clusters\[0\] needs a name"),
    ],
)
def test_broken_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        load_kubeconfig(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "cluster, user, message",
    [
        ({"certificate-authority-data": "!!notbase64"}, {}, "certificate-authority-data is not valid base64"),
        ({"certificate-authority": "nowhere.crt"}, {}, r"cannot read certificate-authority .*nowhere\.crt"),
        ({}, {"exec": {"command": "aws"}}, "uses 'exec', which minikube-py does not support"),
        ({}, {"client-certificate-data": "eA=="}, "without the other"),
        ({}, {"tokenFile": "absent"}, "cannot read tokenFile"),
    ],
)
def test_broken_fields(tmp_path: Path, cluster: dict, user: dict, message: str) -> None:
    path = _write_yaml(tmp_path / "config", _doc("https://h:1", cluster=cluster, user=user))
    with pytest.raises(ValueError, match=message):
        load_kubeconfig(path)


def test_dangling_references(tmp_path: Path) -> None:
    doc = _doc("https://h:1")
    doc["contexts"][0]["context"] = {"cluster": "gone", "user": "u"}
    with pytest.raises(ValueError, match="names cluster 'gone', which is not defined"):
        load_kubeconfig(_write_yaml(tmp_path / "a", doc))
    doc["contexts"][0]["context"] = {"cluster": "c", "user": "gone"}
    with pytest.raises(ValueError, match="names user 'gone', which is not defined"):
        load_kubeconfig(_write_yaml(tmp_path / "b", doc))
    doc = _doc("ftp://h")
    with pytest.raises(ValueError, match="server must be an http"):
        load_kubeconfig(_write_yaml(tmp_path / "c", doc))
    with pytest.raises(ValueError, match="does not exist"):
        load_kubeconfig(tmp_path / "absent")


# --- a TLS server with our certificates, reached by Python and by real kubectl ------------------

VERSION = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
TOKEN = "test-token-0123456789"


@dataclass
class TLSServer:
    url: str
    seen: list[str] = field(default_factory=list)  # "token" or "cert:<CN>" per request


@pytest.fixture
async def tls_server(material: dict[str, Path]) -> AsyncIterator[TLSServer]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(material["ca.crt"]))
    ctx.load_cert_chain(material["apiserver.crt"], material["apiserver.key"])
    ctx.verify_mode = ssl.CERT_OPTIONAL  # token clients send no certificate
    server = TLSServer(url="")

    async def version(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        if peer:
            cn = next(v for rdn in peer["subject"] for k, v in rdn if k == "commonName")
            server.seen.append(f"cert:{cn}")
        elif request.headers.get("Authorization") == f"Bearer {TOKEN}":
            server.seen.append("token")
        else:
            server.seen.append("anonymous")
            status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Unauthorized"}
            return web.json_response({**status, "message": "Unauthorized", "code": 401}, status=401)
        return web.json_response(VERSION)

    app = web.Application()
    app.router.add_get("/version", version)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        port = runner.addresses[0][1]
        server.url = f"https://127.0.0.1:{port}"
        yield server
    finally:
        await runner.cleanup()


async def _get_version(config: KubeConfig) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession(headers=config.auth_headers()) as session,
        session.get(f"{config.server}/version", ssl=config.ssl_context()) as response,
    ):
        return response.status, await response.json()


async def test_python_client_with_token_and_with_certificate(
    tmp_path: Path, material: dict[str, Path], tls_server: TLSServer
) -> None:
    ca_pem = material["ca.crt"].read_bytes()
    write_kubeconfig(tmp_path / "token.conf", server=tls_server.url, ca_pem=ca_pem, token=TOKEN)
    assert await _get_version(load_kubeconfig(tmp_path / "token.conf")) == (200, VERSION)
    admin = _pair(material, "admin")
    write_kubeconfig(
        tmp_path / "cert.conf",
        server=tls_server.url,
        ca_pem=ca_pem,
        client_cert_pem=admin.cert_pem,
        client_key_pem=admin.key_pem,
    )
    assert await _get_version(load_kubeconfig(tmp_path / "cert.conf")) == (200, VERSION)
    assert tls_server.seen == ["token", "cert:admin"]
    # A CA that did not sign the server's certificate must not be trusted.
    write_kubeconfig(
        tmp_path / "wrong.conf", server=tls_server.url, ca_pem=pki.create_ca().cert_pem, token=TOKEN
    )
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await _get_version(load_kubeconfig(tmp_path / "wrong.conf"))

    # A client certificate from another CA fails the server's verification during the handshake.
    # (Checked here rather than with kubectl: with TLS 1.3 the client sees only EOF, which client-go
    # retries for about 15 s.)
    stranger = pki.issue_cert(pki.create_ca(), "admin", organizations=["system:masters"], client=True)
    write_kubeconfig(
        tmp_path / "foreign.conf",
        server=tls_server.url,
        ca_pem=ca_pem,
        client_cert_pem=stranger.cert_pem,
        client_key_pem=stranger.key_pem,
    )
    tls_server.seen.clear()
    with pytest.raises(aiohttp.ClientError):
        await _get_version(load_kubeconfig(tmp_path / "foreign.conf"))
    assert tls_server.seen == []


def _kubectl_binaries() -> list[str]:
    found = [shutil.which("kubectl")]
    found += sorted(str(p) for p in Path("/usr/lib/google-cloud-sdk/bin").glob("kubectl.1.*"))
    return list(dict.fromkeys(p for p in found if p and os.access(p, os.X_OK)))


KUBECTLS = _kubectl_binaries()
needs_kubectl = pytest.mark.skipif(not KUBECTLS, reason="no kubectl binary on PATH or in google-cloud-sdk")


async def _kubectl_version(kubectl: str, kubeconfig: Path, home: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        kubectl,
        "version",
        "-o",
        "json",
        "--kubeconfig",
        str(kubeconfig),
        "--request-timeout=20s",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # A private HOME keeps kubectl's cache out of the real one.
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    return proc.returncode or 0, out.decode(), err.decode()


def _label(path: str) -> str:
    return Path(path).name


@needs_kubectl
@pytest.mark.kubectl
@pytest.mark.parametrize("kubectl", KUBECTLS or ["kubectl"], ids=_label)
async def test_kubectl_accepts_our_certificates(
    kubectl: str, tmp_path: Path, material: dict[str, Path], tls_server: TLSServer
) -> None:
    ca_pem = material["ca.crt"].read_bytes()
    admin = _pair(material, "admin")
    token_conf, cert_conf = tmp_path / "token.conf", tmp_path / "cert.conf"
    write_kubeconfig(token_conf, server=tls_server.url, ca_pem=ca_pem, token=TOKEN)
    write_kubeconfig(
        cert_conf,
        server=tls_server.url,
        ca_pem=ca_pem,
        client_cert_pem=admin.cert_pem,
        client_key_pem=admin.key_pem,
    )
    for conf, expected in ((token_conf, "token"), (cert_conf, "cert:admin")):
        tls_server.seen.clear()
        code, out, err = await _kubectl_version(kubectl, conf, tmp_path)
        assert code == 0, err
        assert json.loads(out)["serverVersion"]["gitVersion"] == "v1.33.0"
        assert tls_server.seen and set(tls_server.seen) == {expected}


@needs_kubectl
@pytest.mark.kubectl
async def test_kubectl_refuses_what_it_should(
    tmp_path: Path, material: dict[str, Path], tls_server: TLSServer
) -> None:
    kubectl = KUBECTLS[0]
    # The server's certificate is not signed by the CA in this kubeconfig.
    wrong_ca = tmp_path / "wrong-ca.conf"
    write_kubeconfig(wrong_ca, server=tls_server.url, ca_pem=pki.create_ca().cert_pem, token=TOKEN)
    code, _, err = await _kubectl_version(kubectl, wrong_ca, tmp_path)
    assert code != 0 and "certificate signed by unknown authority" in err

    # A wrong token reaches the server and is answered 401.
    bad_token = tmp_path / "bad-token.conf"
    write_kubeconfig(bad_token, server=tls_server.url, ca_pem=material["ca.crt"].read_bytes(), token="wrong")
    code, _, err = await _kubectl_version(kubectl, bad_token, tmp_path)
    assert code != 0 and "You must be logged in to the server" in err
