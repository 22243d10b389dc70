"""Logs and exec through the API server to a kubelet (the stand-in of fake_kubelet.py).

Real kubectl binaries talk to the session's API server; it finds the pod's Node, whose InternalIP and
kubeletEndpoint port point at the stand-in, and relays: logs as a chunked stream, exec over WebSocket
(kubectl >= 1.30) or SPDY/3.1 (1.27-1.29, translated by the API server). Below them, unit tests of
the channel protocol (kubelet/streaming.py) with aiohttp's WebSocket client, and of SPDY framing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from minikube_py.apiserver.spdy import HEADER_DICTIONARY, SYN_STREAM, FrameCodec, SpdyProtocolError
from minikube_py.kubelet.streaming import (
    PROTOCOL_V4,
    PROTOCOL_V5,
    StreamOptions,
    SubprocessExec,
    parse_resize,
    serve_exec,
)
from minikube_py.localcluster import free_port

from .conftest import Kubectl, LocalAPIServer, kubectl_param
from .fake_kubelet import FakeKubelet

NS = "logs-exec"
NODE, DEAD_NODE = "logs-exec-node", "logs-exec-dead-node"
POD, TWO, UNSCHEDULED, ORPHAN, NO_LOG = "web", "two", "unscheduled", "orphan", "no-log"
LINES = ["one", "two", "three"]
# 1.27 and 1.29 speak SPDY only (1.29 offers v5 first); 1.33 and the PyPI 1.37 speak WebSocket.
VERSIONS = ["1.27", "1.29", "1.33", "pypi"]
# A hang guard for waits, not a timing assertion.
PATIENCE = 20.0


# ---- fixtures: a kubelet stand-in, a Node pointing at it, pods bound to it ----------------------------

def _api(server: LocalAPIServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    req = urllib.request.Request(server.url + path, method=method, headers={
        **server.headers(), "Content-Type": "application/json", "Accept": "application/json"},
        data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, context=server.ssl_context(), timeout=PATIENCE) as resp:
            raw = resp.read()
            is_json = resp.headers.get_content_type() == "application/json"
            return resp.status, json.loads(raw) if is_json else raw
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _create(server: LocalAPIServer, path: str, obj: dict[str, Any]) -> None:
    code, out = _api(server, "POST", path, obj)
    assert code in (201, 409), out


def _node(name: str, port: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"addresses": [{"type": "Hostname", "address": name},
                                     {"type": "InternalIP", "address": "127.0.0.1"}],
                       "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}}


def _pod(name: str, node: str | None, containers: tuple[str, ...] = ("main",)) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": c, "image": "busybox"} for c in containers]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS}, "spec": spec}


@pytest.fixture(scope="module")
def kubelet(apiserver: LocalAPIServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKubelet]:
    fake = FakeKubelet(exec_dir=str(tmp_path_factory.mktemp("exec")))
    fake.add_container(NS, POD, "main", LINES, ages=[180.0, 120.0, 30.0])
    fake.add_container(NS, TWO, "b", ["from b"])
    fake.add_container(NS, TWO, "a", ["from a"])
    fake.endless.add((NS, TWO, "a"))
    port = fake.start()
    try:
        _create(apiserver, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                  "metadata": {"name": NS}})
        _create(apiserver, "/api/v1/nodes", _node(NODE, port))
        _create(apiserver, "/api/v1/nodes", _node(DEAD_NODE, free_port()))
        for pod in (_pod(POD, NODE), _pod(TWO, NODE, ("a", "b")), _pod(UNSCHEDULED, None),
                    _pod(ORPHAN, DEAD_NODE), _pod(NO_LOG, NODE)):
            _create(apiserver, f"/api/v1/namespaces/{NS}/pods", pod)
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def ctl(kubectl_for: Any, kubelet: FakeKubelet, request: pytest.FixtureRequest) -> Kubectl:
    return kubectl_for(request.param)


def run(k: Kubectl, *args: str, input: str | None = None) -> Any:
    return k.run(f"--namespace={NS}", *args, input=input, check=False, timeout=PATIENCE * 3)


def last_log_query(fake: FakeKubelet) -> dict[str, list[str]]:
    hits = [q for method, path, q in fake.requests if path.startswith("/containerLogs/")]
    assert hits, "the kubelet saw no /containerLogs request"
    return hits[-1]


# ---- kubectl logs -------------------------------------------------------------------------------------

@pytest.mark.parametrize("ctl", [kubectl_param(v) for v in VERSIONS], indirect=True)
def test_kubectl_logs(ctl: Kubectl, kubelet: FakeKubelet) -> None:
    res = run(ctl, "logs", POD)
    assert (res.returncode, res.stdout) == (0, "one\ntwo\nthree\n"), res.stderr
    assert last_log_query(kubelet) == {}  # the container is in the kubelet's path, nothing else was asked

    res = run(ctl, "logs", POD, "--tail=1")
    assert res.stdout == "three\n", res.stderr
    assert last_log_query(kubelet)["tailLines"] == ["1"]

    res = run(ctl, "logs", POD, "--tail=2", "--timestamps")
    got = res.stdout.splitlines()
    assert len(got) == 2, res.stdout
    for line, text in zip(got, ("two", "three"), strict=True):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z " + text, line), line

    res = run(ctl, "logs", POD, "--since=1m")  # only the line written 30 s ago
    assert res.stdout == "three\n", res.stderr
    assert last_log_query(kubelet)["sinceSeconds"] == ["60"]

    res = run(ctl, "logs", POD, "--limit-bytes=6")
    assert res.stdout == "one\ntw"
    assert last_log_query(kubelet)["limitBytes"] == ["6"]

    res = run(ctl, "logs", TWO, "-c", "b")
    assert res.stdout == "from b\n", res.stderr


@pytest.mark.parametrize("ctl", [kubectl_param(v) for v in VERSIONS], indirect=True)
def test_kubectl_logs_follow_streams_until_the_container_ends(ctl: Kubectl, kubelet: FakeKubelet) -> None:
    res = run(ctl, "logs", "-f", POD, "--tail=1")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "three\nfollow-1\nfollow-2\nfollow-3\n"
    q = last_log_query(kubelet)
    assert q["follow"] == ["true"] and q["tailLines"] == ["1"]


@pytest.mark.parametrize("ctl", [kubectl_param("1.33")], indirect=True)
def test_kubectl_logs_previous_reaches_the_kubelet(ctl: Kubectl, kubelet: FakeKubelet) -> None:
    res = run(ctl, "logs", "-p", POD)
    assert res.returncode == 0, res.stderr
    assert last_log_query(kubelet)["previous"] == ["true"]


@pytest.mark.parametrize("ctl", [kubectl_param(v) for v in ("1.27", "1.33")], indirect=True)
def test_kubectl_logs_errors(ctl: Kubectl) -> None:
    res = run(ctl, "logs", UNSCHEDULED)
    assert res.returncode == 1
    assert "pod unscheduled does not have a host assigned" in res.stderr
    res = run(ctl, "logs", ORPHAN)
    assert res.returncode == 1
    assert "ServiceUnavailable" in res.stderr
    assert f'the kubelet of node "{DEAD_NODE}" cannot be reached' in res.stderr
    assert "connection refused" in res.stderr
    res = run(ctl, "logs", POD, "-c", "nope")  # kubectl checks this one itself
    assert res.returncode == 1 and "container nope is not valid for pod web" in res.stderr


def test_log_errors_from_the_server(apiserver: LocalAPIServer, kubelet: FakeKubelet) -> None:
    base = f"/api/v1/namespaces/{NS}/pods"
    code, out = _api(apiserver, "GET", f"{base}/{POD}/log?container=nope")
    assert (code, out["reason"]) == (400, "BadRequest")
    assert out["message"] == "container nope is not valid for pod web"
    code, out = _api(apiserver, "GET", f"{base}/{TWO}/log")
    assert code == 400
    assert out["message"] == "a container name must be specified for pod two, choose one of: [a b]"
    code, out = _api(apiserver, "GET", f"{base}/{POD}/log?tailLines=abc")
    assert code == 400 and "tailLines" in out["message"]
    code, out = _api(apiserver, "GET", f"{base}/{POD}/log?limitBytes=-1")
    assert code == 422 and "limitBytes" in out["message"]
    code, out = _api(apiserver, "GET", f"{base}/{NO_LOG}/log")  # the kubelet's own error is relayed
    assert (code, out["reason"]) == (404, "NotFound")
    assert out["message"] == 'container "main" in pod "no-log" not found'
    code, out = _api(apiserver, "GET", f"{base}/{UNSCHEDULED}/log")
    assert code == 400 and out["message"] == "pod unscheduled does not have a host assigned"
    code, out = _api(apiserver, "GET", f"{base}/{ORPHAN}/log")
    assert code == 503 and out["reason"] == "ServiceUnavailable"
    code, out = _api(apiserver, "GET", f"{base}/missing/log")
    assert code == 404


async def test_followed_log_stops_at_the_kubelet_when_the_client_leaves(apiserver: LocalAPIServer,
                                                                      kubelet: FakeKubelet) -> None:
    url = f"{apiserver.url}/api/v1/namespaces/{NS}/pods/{TWO}/log?container=a&follow=true"
    async with aiohttp.ClientSession(headers=apiserver.headers()) as session:
        async with session.get(url, ssl=apiserver.ssl_context()) as resp:
            assert resp.status == 200 and resp.content_type == "text/plain"
            async with asyncio.timeout(PATIENCE):
                assert await resp.content.readline() == b"from a\n"
                assert await resp.content.readline() == b"follow-1\n"
                assert kubelet.open_log_streams >= 1
    deadline = time.monotonic() + PATIENCE
    while kubelet.open_log_streams:  # the endless stream ends only if the API server hung up on it
        assert time.monotonic() < deadline, "the kubelet still streams to the API server"
        await asyncio.sleep(0.05)


# ---- kubectl exec -------------------------------------------------------------------------------------

@pytest.mark.parametrize("ctl", [kubectl_param(v) for v in VERSIONS], indirect=True)
def test_kubectl_exec(ctl: Kubectl, kubelet: FakeKubelet) -> None:
    res = run(ctl, "exec", POD, "--", "echo", "hello", "world")
    assert (res.returncode, res.stdout) == (0, "hello world\n"), res.stderr

    res = run(ctl, "exec", POD, "--", "sh", "-c", "exit 3")
    assert res.returncode == 3
    assert "command terminated with exit code 3" in res.stderr

    res = run(ctl, "exec", "-i", POD, "--", "cat", input="a\nb\n")
    assert (res.returncode, res.stdout) == (0, "a\nb\n"), res.stderr

    res = run(ctl, "exec", POD, "--", "sh", "-c", "echo out; echo err >&2")
    assert (res.returncode, res.stdout, res.stderr) == (0, "out\n", "err\n")

    res = run(ctl, "exec", TWO, "-c", "b", "--", "pwd")  # runs in the kubelet's exec directory
    assert res.stdout.strip() == os.path.realpath(kubelet.exec_dir or ""), res.stderr

    execs = [(m, q) for m, path, q in kubelet.requests if path == f"/exec/{NS}/{POD}/main"]
    assert any(q["command"] == ["echo", "hello", "world"] for _, q in execs)


@pytest.mark.parametrize("ctl", [kubectl_param(v) for v in ("1.27", "1.33")], indirect=True)
def test_kubectl_exec_errors(ctl: Kubectl) -> None:
    res = run(ctl, "exec", POD, "-c", "nope", "--", "true")
    assert res.returncode == 1 and "container nope is not valid for pod web" in res.stderr
    res = run(ctl, "exec", UNSCHEDULED, "--", "true")
    assert res.returncode == 1 and "pod unscheduled does not have a host assigned" in res.stderr
    res = run(ctl, "exec", ORPHAN, "--", "true")
    assert res.returncode == 1 and "ServiceUnavailable" in res.stderr and "cannot be reached" in res.stderr
    res = run(ctl, "exec", POD, "--", "/no/such/command")
    assert res.returncode == 1
    assert 'error executing command in container: exec: "/no/such/command": no such file' in res.stderr


# ---- the API server's exec endpoint, spoken to directly -----------------------------------------------

@pytest.mark.parametrize("ctl", [kubectl_param("1.33")], indirect=True)
def test_kubectl_exec_over_spdy_after_opting_out_of_websockets(ctl: Kubectl, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    monkeypatch.setenv("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")  # 1.33 then offers SPDY with v5
    res = run(ctl, "exec", "-i", POD, "--", "sh", "-c", "cat; echo err >&2; exit 5", input="x\ny\n")
    assert (res.returncode, res.stdout) == (5, "x\ny\n")
    assert res.stderr == "err\ncommand terminated with exit code 5\n"


def _exec_url(server: LocalAPIServer, pod: str, *command: str, **flags: str) -> str:
    return f"{server.url}/api/v1/namespaces/{NS}/pods/{pod}/exec?{_query(command, flags)}"


def _query(command: tuple[str, ...], flags: dict[str, str]) -> str:
    return urllib.parse.urlencode([("command", c) for c in command] + list(flags.items()))


async def _collect(ws: aiohttp.ClientWebSocketResponse) -> tuple[dict[int, bytes], dict[str, Any] | None]:
    out: dict[int, bytes] = {}
    status = None
    async with asyncio.timeout(PATIENCE):
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                if msg.data[0] == 3:
                    status = json.loads(msg.data[1:])
                else:
                    out[msg.data[0]] = out.get(msg.data[0], b"") + msg.data[1:]
    return out, status


async def test_api_server_relays_v4_and_v5(apiserver: LocalAPIServer, kubelet: FakeKubelet) -> None:
    async with aiohttp.ClientSession(headers=apiserver.headers()) as session:
        for protocol in (PROTOCOL_V4, PROTOCOL_V5):
            url = _exec_url(apiserver, POD, "sh", "-c", "echo $0", "x", stdout="true")
            async with session.ws_connect(url, protocols=(protocol,), ssl=apiserver.ssl_context()) as ws:
                assert ws.protocol == protocol
                out, status = await _collect(ws)
            assert out == {1: b"x\n"} and status == {"metadata": {}, "status": "Success"}


async def test_api_server_refuses_what_it_cannot_relay(apiserver: LocalAPIServer, kubelet: FakeKubelet
                                                       ) -> None:
    async with aiohttp.ClientSession(headers=apiserver.headers()) as session:
        ctx = apiserver.ssl_context()
        cases = [
            (_exec_url(apiserver, POD, "true", stdout="true"), ("v3.channel.k8s.io",), 400),
            (_exec_url(apiserver, POD, stdout="true"), (PROTOCOL_V5,), 400),  # no command
            (_exec_url(apiserver, POD, "true"), (PROTOCOL_V5,), 400),  # no stream asked for
        ]
        for url, protocols, code in cases:
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await session.ws_connect(url, protocols=protocols, ssl=ctx)
            assert e.value.status == code
        async with session.post(_exec_url(apiserver, POD, "true", stdout="true"), ssl=ctx) as resp:
            assert resp.status == 400 and (await resp.json())["message"] == "Upgrade request required"


# ---- the channel protocol (kubelet/streaming.py) ------------------------------------------------------

@pytest.fixture
async def exec_server(tmp_path: Any) -> AsyncIterator[TestServer]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await serve_exec(request, lambda opts: SubprocessExec.start(opts, cwd=str(tmp_path)))

    app = web.Application()
    app.router.add_route("*", "/exec", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


def _q(*command: str, **flags: str) -> str:
    return "/exec?" + _query(command, flags)


@contextlib.asynccontextmanager
async def _ws(server: TestServer, path: str, protocols: tuple[str, ...] = (PROTOCOL_V5,), **kw: Any
              ) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession() as session, session.ws_connect(
            server.make_url(path), protocols=protocols, **kw) as ws:
        yield ws


async def test_channels_stdout_stderr_and_success(exec_server: TestServer) -> None:
    async with _ws(exec_server, _q("sh", "-c", "echo out; echo err >&2", stdout="true", stderr="true")) as ws:
        assert ws.protocol == PROTOCOL_V5
        out, status = await _collect(ws)
    assert out == {1: b"out\n", 2: b"err\n"}
    assert status == {"metadata": {}, "status": "Success"}


async def test_channels_exit_code_status(exec_server: TestServer) -> None:
    async with _ws(exec_server, _q("sh", "-c", "exit 7", stdout="true")) as ws:
        _, status = await _collect(ws)
    assert status is not None and status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "7"}]
    assert status["message"] == "command terminated with non-zero exit code: exit status 7"


async def test_channels_stdin_and_the_v5_close_channel(exec_server: TestServer) -> None:
    async with _ws(exec_server, _q("cat", stdin="true", stdout="true")) as ws:
        await ws.send_bytes(b"\x00hello ")
        await ws.send_bytes(b"\x00world\n")
        await ws.send_bytes(b"\xff\x00")  # end of stdin: cat ends
        out, status = await _collect(ws)
    assert out == {1: b"hello world\n"} and status == {"metadata": {}, "status": "Success"}


async def test_channels_v4_is_accepted(exec_server: TestServer) -> None:
    path = _q("echo", "v4", stdout="true")
    async with _ws(exec_server, path, protocols=("v3.channel.k8s.io", PROTOCOL_V4)) as ws:
        assert ws.protocol == PROTOCOL_V4
        out, status = await _collect(ws)
    assert out == {1: b"v4\n"} and status is not None and status["status"] == "Success"


async def test_channels_tty_and_resize(exec_server: TestServer) -> None:
    async with _ws(exec_server, _q("sh", "-c", "read x; stty size", stdin="true", stdout="true",
                                   tty="true", stderr="true")) as ws:
        await ws.send_bytes(b'\x04{"Width":123,"Height":45}\n')
        await ws.send_bytes(b"\x00go\n")
        out, status = await _collect(ws)
    assert b"45 123" in out.get(1, b""), out
    assert 2 not in out  # a terminal has one output stream
    assert status is not None and status["status"] == "Success"


async def test_channels_answer_pings(exec_server: TestServer) -> None:
    async with _ws(exec_server, _q("cat", stdin="true", stdout="true"), autoping=False) as ws:
        await ws.ping(b"are you there")
        async with asyncio.timeout(PATIENCE):
            msg = await ws.receive()
        assert (msg.type, msg.data) == (WSMsgType.PONG, b"are you there")
        await ws.send_bytes(b"\xff\x00")


async def test_channels_command_that_cannot_start(exec_server: TestServer) -> None:
    async with _ws(exec_server, _q("/no/such/binary", stdout="true")) as ws:
        out, status = await _collect(ws)
    assert out == {} and status is not None
    assert (status["status"], status["reason"], status["code"]) == ("Failure", "InternalError", 500)
    assert 'exec: "/no/such/binary": no such file or directory' in status["message"]


async def test_channels_refuse_before_upgrading(exec_server: TestServer) -> None:
    async with aiohttp.ClientSession() as session:
        for path, protocols in [(_q("true", stdout="true"), ("base64.channel.k8s.io",)),
                                (_q(stdout="true"), (PROTOCOL_V5,)),
                                (_q("true", stdout="maybe"), (PROTOCOL_V5,))]:
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await session.ws_connect(exec_server.make_url(path), protocols=protocols)
            assert e.value.status == 400
        async with session.get(exec_server.make_url(_q("true", stdout="true"))) as resp:
            assert resp.status == 400


async def test_client_hang_up_kills_the_command(exec_server: TestServer) -> None:
    async with _ws(exec_server, _q("sh", "-c", "echo $$; exec sleep 60", stdout="true")) as ws:
        async with asyncio.timeout(PATIENCE):
            msg = await ws.receive()
        pid = int(msg.data[1:])
    deadline = time.monotonic() + PATIENCE
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, f"process {pid} still runs after the client left"
        await asyncio.sleep(0.05)


def test_stream_options_and_resize_parsing() -> None:
    opts = StreamOptions.from_query({"stdout": "true", "stderr": "1", "tty": "true"}, ["sh"])
    assert (opts.stdout, opts.stderr, opts.tty) == (True, False, True)  # a tty has no separate stderr
    assert parse_resize(b'{"Width":80,"Height":24}') == (80, 24)
    assert parse_resize(b"not json") is None
    assert parse_resize(b'{"Width":-1,"Height":24}') is None


# ---- SPDY framing -------------------------------------------------------------------------------------

def test_spdy_dictionary_is_the_specs() -> None:
    assert len(HEADER_DICTIONARY) == 1423 and zlib.adler32(HEADER_DICTIONARY) == 0xE3C6A7C2


def _client_syn_stream(deflate: Any, stream_id: int, headers: dict[str, str]) -> bytes:
    raw = struct.pack(">I", len(headers)) + b"".join(
        struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v)) + v.encode()
        for k, v in headers.items())
    block = deflate.compress(raw) + deflate.flush(zlib.Z_SYNC_FLUSH)
    payload = struct.pack(">IIBB", stream_id, 0, 0, 0) + block
    return struct.pack(">HHI", 0x8003, SYN_STREAM, len(payload)) + payload


def test_spdy_codec_reads_split_frames_and_shared_compression() -> None:
    deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, zdict=HEADER_DICTIONARY)
    wire = (_client_syn_stream(deflate, 1, {"streamtype": "error"})
            + _client_syn_stream(deflate, 3, {"streamtype": "stdout"})
            + FrameCodec.data(3, b"payload", fin=True))
    codec = FrameCodec()
    frames = []
    for i in range(len(wire)):  # one byte at a time: frames may be split anywhere
        frames += codec.feed(wire[i:i + 1])
    assert [(f.type, f.stream_id) for f in frames] == [(SYN_STREAM, 1), (SYN_STREAM, 3), (0, 3)]
    assert frames[1].headers == {"streamtype": ["stdout"]}
    assert frames[2].data == b"payload" and frames[2].fin

    reply = FrameCodec().syn_reply(5, {"x-test": "yes"})
    inflate = zlib.decompressobj(zdict=HEADER_DICTIONARY)
    block = inflate.decompress(reply[12:])
    assert block == struct.pack(">I", 1) + struct.pack(">I", 6) + b"x-test" + struct.pack(">I", 3) + b"yes"


def test_spdy_codec_rejects_garbage() -> None:
    with pytest.raises(SpdyProtocolError):
        FrameCodec().feed(struct.pack(">HHI", 0x8002, 1, 10) + b"\x00" * 10)  # SPDY/2
    with pytest.raises(SpdyProtocolError):
        FrameCodec().feed(struct.pack(">HHI", 0x8003, SYN_STREAM, 14) + b"\x00" * 10 + b"junk")
