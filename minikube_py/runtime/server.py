"""The runtime daemon: CRI's runtime and image services as JSON over HTTP on a unix socket.

``POST /v1/<Method>`` with a JSON body answers the method's response object, or
``{"error": {"code": "NotFound|InvalidArgument|Unavailable|Internal|DeadlineExceeded", "message"}}``
with a 4xx/5xx status. ``GET /v1/exec?containerId=..&cmd=..&cmd=..&tty=&stdin=`` upgrades to a
WebSocket speaking the ``v5.channel.k8s.io`` framing, so the kubelet can relay ``kubectl exec``
without re-framing.

Missing binaries (runc, the CNI plugins, ``ip``) never stop the daemon: Status reports them and the
calls that need them fail with Unavailable, naming what is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

import minikube_py
from minikube_py.kubelet.streaming import StreamOptions, StreamRequestError, SubprocessExec, parse_bool, serve_exec
from minikube_py.runtime import (
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    RuntimeServiceError,
    UnavailableError,
)
from minikube_py.runtime.cni import CNI, load_network, node_conflist, write_conflist
from minikube_py.runtime.containers import RUNNING, Container, ContainerStore, ImageService, Runc
from minikube_py.runtime.sandbox import SandboxStore, matches, parse_sandbox_config

log = logging.getLogger("minikube_py.runtime.server")

RUNTIME_NAME = "minikube-py"
RUNTIME_API_VERSION = "v1"
MAX_BODY = 8 * 1024 * 1024


@dataclass
class RuntimeConfig:
    root_dir: Path = Path("/var/lib/minikube-py/runtime")
    state_dir: Path = Path("/run/minikube-py/runtime")
    socket: Path = Path("/run/minikube-py/runtime.sock")
    cni_conf_dir: Path = Path("/etc/cni/net.d")
    cni_bin_dir: Path = Path("/usr/lib/cni")
    cni_bridge: str = "cni0"
    cni_network: str = "minikube-py"
    runc: str = "runc"
    cgroup_parent: str = "minikube-py"


class UnavailableImages:
    """Stands in for the image store when it cannot be loaded: every image call says why."""

    def __init__(self, why: str) -> None:
        self.why = why

    def _fail(self, *_: Any) -> Any:
        raise UnavailableError(f"the image service is unavailable: {self.why}")

    normalize = get = list = remove = layer_dirs = _fail

    async def pull(self, image: str) -> Any:
        self._fail()


class RuntimeService:
    """Every CRI call, by name; each takes the request body and returns the response body."""

    def __init__(self, config: RuntimeConfig, images: ImageService) -> None:
        self.config = config
        self.images = images
        for d in (config.root_dir, config.state_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.cni = CNI(config.cni_conf_dir, config.cni_bin_dir)
        self.runc = Runc(config.runc, config.state_dir / "runc")
        self.sandboxes = SandboxStore(config.root_dir, self.cni)
        self.containers = ContainerStore(config.root_dir, config.state_dir, self.runc,
                                         cgroup_parent=config.cgroup_parent)
        # One operation at a time per sandbox / container; reads take no lock.
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.methods: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            name: getattr(self, name) for name in (
                "Version", "Status", "UpdateRuntimeConfig", "PullImage", "ListImages", "ImageStatus",
                "RemoveImage", "RunPodSandbox", "StopPodSandbox", "RemovePodSandbox", "PodSandboxStatus",
                "ListPodSandbox", "CreateContainer", "StartContainer", "StopContainer", "RemoveContainer",
                "ContainerStatus", "ListContainers", "ExecSync")
        }

    # -- runtime --------------------------------------------------------------------------------

    async def Version(self, body: dict[str, Any]) -> dict[str, Any]:
        runc_version = ""
        with contextlib.suppress(RuntimeServiceError, OSError):
            rc, out = await self.runc.call("--version")
            runc_version = out.splitlines()[0] if rc == 0 and out else ""
        return {"version": "0.1.0", "runtimeName": RUNTIME_NAME,
                "runtimeVersion": getattr(minikube_py, "__version__", "0.1.0"),
                "runtimeApiVersion": RUNTIME_API_VERSION, "runcVersion": runc_version}

    async def Status(self, body: dict[str, Any]) -> dict[str, Any]:
        runtime_ok, runtime_reason, runtime_msg = True, "", ""
        try:
            self.runc.path()
            if os.geteuid() != 0:
                runtime_ok, runtime_reason, runtime_msg = False, "NotRoot", "the runtime must run as root"
        except UnavailableError as e:
            runtime_ok, runtime_reason, runtime_msg = False, "RuncNotFound", e.message
        net_ok, net_reason, net_msg = self.cni.status()
        if net_ok and shutil.which("ip") is None:
            net_ok, net_reason, net_msg = (False, "NetworkPluginNotReady",
                                           "the 'ip' command (iproute2) is not installed")
        return {"conditions": [
            {"type": "RuntimeReady", "status": runtime_ok, "reason": runtime_reason, "message": runtime_msg},
            {"type": "NetworkReady", "status": net_ok, "reason": net_reason, "message": net_msg},
        ]}

    async def UpdateRuntimeConfig(self, body: dict[str, Any]) -> dict[str, Any]:
        cidr = body.get("podCIDR")
        if cidr is None:  # CRI's own shape: runtimeConfig.networkConfig.podCidr
            cidr = ((body.get("runtimeConfig") or {}).get("networkConfig") or {}).get("podCidr")
        if not cidr:
            return {}
        conflist = node_conflist(str(cidr), bridge=self.config.cni_bridge, network_name=self.config.cni_network,
                                 ipam_data_dir=self.config.state_dir / "ipam")
        with contextlib.suppress(ValueError):
            current = load_network(self.config.cni_conf_dir)
            if current is not None and current.to_dict() == {k: conflist[k] for k in ("name", "cniVersion", "plugins")}:
                return {}
        path = write_conflist(self.config.cni_conf_dir, conflist)
        log.info("wrote CNI config %s for pod CIDR %s", path, cidr)
        return {}

    # -- images ---------------------------------------------------------------------------------

    async def PullImage(self, body: dict[str, Any]) -> dict[str, Any]:
        image = _image_arg(body)
        try:
            info = await self.images.pull(image)
        except RuntimeServiceError:
            raise
        except Exception as e:
            # The image store's ImagePullError (InvalidImageName is also a ValueError): its message is
            # what kubectl describe shows.
            if isinstance(e, ValueError):
                raise InvalidArgumentError(str(e)) from None
            if type(e).__name__ == "ImagePullError":
                raise InternalError(str(e)) from None
            raise
        return {"imageRef": info.id}

    async def ListImages(self, body: dict[str, Any]) -> dict[str, Any]:
        wanted = ((body.get("filter") or {}).get("image") or {}).get("image")
        infos = self.images.list()
        if wanted:
            one = self.images.get(str(wanted))
            infos = [i for i in infos if one is not None and i.id == one.id]
        return {"images": [_image_dict(i) for i in infos]}

    async def ImageStatus(self, body: dict[str, Any]) -> dict[str, Any]:
        info = self.images.get(_image_arg(body))
        return {"image": _image_dict(info) if info is not None else None}

    async def RemoveImage(self, body: dict[str, Any]) -> dict[str, Any]:
        image = _image_arg(body)
        info = self.images.get(image)
        if info is None:
            return {}
        users = [c.id for c in self.containers.containers.values() if c.image_ref == info.id]
        if users:
            raise InvalidArgumentError(f"image {image} is in use by container {users[0]}; remove the container first")
        self.images.remove(image)
        return {}

    # -- sandboxes ------------------------------------------------------------------------------

    async def RunPodSandbox(self, body: dict[str, Any]) -> dict[str, Any]:
        sb = parse_sandbox_config(secrets.token_hex(32), body.get("config"))
        async with self._locks[sb.id]:
            await self.sandboxes.run(sb)
        log.info("pod sandbox %s (%s/%s) ready at %s", sb.id[:12], sb.metadata["namespace"],
                 sb.metadata["name"], sb.ip)
        return {"podSandboxId": sb.id}

    async def StopPodSandbox(self, body: dict[str, Any]) -> dict[str, Any]:
        sandbox_id = _id_arg(body, "podSandboxId")
        async with self._locks[sandbox_id]:
            sb = self.sandboxes.get(sandbox_id)
            if sb is None:
                return {}  # CRI: idempotent once everything is reclaimed
            for c in self.containers.in_sandbox(sandbox_id):
                async with self._locks[c.id]:
                    await self.containers.stop(c, 0)
            await self.sandboxes.stop(sb)
        return {}

    async def RemovePodSandbox(self, body: dict[str, Any]) -> dict[str, Any]:
        sandbox_id = _id_arg(body, "podSandboxId")
        async with self._locks[sandbox_id]:
            sb = self.sandboxes.get(sandbox_id)
            for c in self.containers.in_sandbox(sandbox_id):
                async with self._locks[c.id]:
                    await self.containers.remove(c.id)
                self._locks.pop(c.id, None)
            if sb is not None:
                await self.sandboxes.remove(sb)
        self._locks.pop(sandbox_id, None)
        return {}

    async def PodSandboxStatus(self, body: dict[str, Any]) -> dict[str, Any]:
        sandbox_id = _id_arg(body, "podSandboxId", "id")
        sb = self.sandboxes.get(sandbox_id)
        if sb is None:
            raise NotFoundError(f"pod sandbox {sandbox_id!r} not found")
        return sb.status()

    async def ListPodSandbox(self, body: dict[str, Any]) -> dict[str, Any]:
        f = body.get("filter") or {}
        state = _state_filter(f.get("state"))
        items = [sb.summary() for sb in self.sandboxes.sandboxes.values()
                 if (not f.get("id") or sb.id == f["id"]) and (not state or sb.state == state)
                 and matches(sb.labels, f.get("labelSelector"))]
        items.sort(key=lambda s: s["createdAt"])
        return {"items": items}

    # -- containers -----------------------------------------------------------------------------

    async def CreateContainer(self, body: dict[str, Any]) -> dict[str, Any]:
        sandbox_id = _id_arg(body, "podSandboxId")
        async with self._locks[sandbox_id]:
            sb = self.sandboxes.get(sandbox_id)
            if sb is None:
                raise NotFoundError(f"pod sandbox {sandbox_id!r} not found")
            c = self.containers.create(secrets.token_hex(32), sb, self.sandboxes.pod_dir(sb.id),
                                       body.get("config"), self.images)
        return {"containerId": c.id}

    async def StartContainer(self, body: dict[str, Any]) -> dict[str, Any]:
        c = self._container(body)
        async with self._locks[c.id]:
            await self.containers.start(c)
        return {}

    async def StopContainer(self, body: dict[str, Any]) -> dict[str, Any]:
        c = self._container(body)
        timeout = body.get("timeout", 0)
        if not isinstance(timeout, int | float) or timeout < 0:
            raise InvalidArgumentError(f"timeout {timeout!r} must be a number of seconds >= 0")
        async with self._locks[c.id]:
            await self.containers.stop(c, float(timeout))
        return {}

    async def RemoveContainer(self, body: dict[str, Any]) -> dict[str, Any]:
        container_id = _id_arg(body, "containerId")
        async with self._locks[container_id]:
            await self.containers.remove(container_id)
        self._locks.pop(container_id, None)
        return {}

    async def ContainerStatus(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.containers.status(self._container(body))

    async def ListContainers(self, body: dict[str, Any]) -> dict[str, Any]:
        f = body.get("filter") or {}
        state = _state_filter(f.get("state"))
        out = []
        for c in list(self.containers.containers.values()):
            if f.get("id") and c.id != f["id"]:
                continue
            if f.get("podSandboxId") and c.sandbox_id != f["podSandboxId"]:
                continue
            if not matches(c.labels, f.get("labelSelector")):
                continue
            item = await self.containers.summary(c)
            if state and item["state"] != state:
                continue
            out.append(item)
        out.sort(key=lambda s: s["createdAt"])
        return {"containers": out}

    async def ExecSync(self, body: dict[str, Any]) -> dict[str, Any]:
        c = self._container(body)
        cmd = body.get("cmd")
        if not isinstance(cmd, list) or not cmd or not all(isinstance(x, str) for x in cmd):
            raise InvalidArgumentError("cmd must be a non-empty list of strings")
        timeout = body.get("timeout", 0)
        if not isinstance(timeout, int | float) or timeout < 0:
            raise InvalidArgumentError(f"timeout {timeout!r} must be a number of seconds >= 0")
        return await self.containers.exec_sync(c, cmd, float(timeout))

    def _container(self, body: dict[str, Any]) -> Container:
        return self.containers.get(_id_arg(body, "containerId", "id"))


def _id_arg(body: dict[str, Any], *keys: str) -> str:
    for key in keys:
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
    raise InvalidArgumentError(f"{keys[0]} is required")


def _image_arg(body: dict[str, Any]) -> str:
    image = body.get("image")
    if isinstance(image, dict):  # CRI's ImageSpec
        image = image.get("image")
    if not isinstance(image, str) or not image:
        raise InvalidArgumentError("image is required")
    return image


def _state_filter(value: Any) -> str:
    if isinstance(value, dict):  # CRI's {"state": {"state": "..."}}
        value = value.get("state")
    return str(value or "")


def _image_dict(info: Any) -> dict[str, Any]:
    config = info.config or {}
    return {"id": info.id, "repoTags": list(info.repo_tags), "repoDigests": list(info.repo_digests),
            "size": info.size, "username": str(config.get("User") or ""),
            "spec": {"image": info.id}}


# ---- HTTP ---------------------------------------------------------------------------------------------

def error_response(err: RuntimeServiceError) -> web.Response:
    return web.Response(status=err.http_status, content_type="application/json",
                        body=orjson.dumps({"error": {"code": err.code, "message": err.message}}))


def build_app(service: RuntimeService) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)

    async def call(request: web.Request) -> web.Response:
        method = request.match_info["method"]
        handler = service.methods.get(method)
        if handler is None:
            return error_response(NotFoundError(f"unknown method {method!r}"))
        raw = await request.read()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError as e:
            return error_response(InvalidArgumentError(f"request body is not JSON: {e}"))
        if not isinstance(body, dict):
            return error_response(InvalidArgumentError("request body must be a JSON object"))
        try:
            result = await handler(body)
        except RuntimeServiceError as e:
            log.info("%s failed: %s: %s", method, e.code, e.message)
            return error_response(e)
        except Exception as e:
            log.exception("%s failed", method)
            return error_response(InternalError(f"{type(e).__name__}: {e}"))
        return web.Response(body=orjson.dumps(result), content_type="application/json")

    async def exec_stream(request: web.Request) -> web.StreamResponse:
        q = request.query
        try:
            c = service.containers.get(q.get("containerId", ""))
            await service.containers.require_running(c)
            cmd = q.getall("cmd", []) or q.getall("command", [])
            tty = parse_bool(q, "tty")
            options = StreamOptions(tuple(cmd), stdin=parse_bool(q, "stdin"),
                                    stdout=parse_bool(q, "stdout") if "stdout" in q else True,
                                    stderr=(parse_bool(q, "stderr") if "stderr" in q else True) and not tty,
                                    tty=tty)
            if not cmd:
                raise InvalidArgumentError("cmd is required")
            pid_file = service.containers.shim_dir(c.id) / f"exec-{secrets.token_hex(6)}.pid"
            runc_argv = service.containers.exec_argv(c, cmd, tty=tty, pid_file=pid_file)
        except StreamRequestError as e:
            return error_response(InvalidArgumentError(str(e)))
        except RuntimeServiceError as e:
            return error_response(e)

        async def start(opts: StreamOptions) -> RuncExec:
            proc = await SubprocessExec.start(StreamOptions(tuple(runc_argv), opts.stdin, opts.stdout,
                                                            opts.stderr, opts.tty))
            return RuncExec(proc, pid_file)

        return await serve_exec(request, start, options)

    app.router.add_post("/v1/{method}", call)
    app.router.add_get("/v1/exec", exec_stream)
    return app


class RuncExec:
    """A ``runc exec`` session whose kill (the client hung up) also reaches the command in the container
    by the pid runc wrote: runc cannot forward a SIGKILL, and its parent-death signal is all that
    would otherwise take the command down with it."""

    def __init__(self, inner: SubprocessExec, pid_file: Path) -> None:
        self.inner = inner
        self.pid_file = pid_file
        self.write_stdin, self.close_stdin = inner.write_stdin, inner.close_stdin
        self.read_stdout, self.read_stderr = inner.read_stdout, inner.read_stderr
        self.resize, self.wait = inner.resize, inner.wait

    def kill(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(self.pid_file.read_text().strip()), signal.SIGKILL)
        self.inner.kill()

    def close(self) -> None:
        self.inner.close()
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()


def _socket_in_use(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


async def serve(config: RuntimeConfig, images: ImageService, stop: asyncio.Event,
                ready: Callable[[], None] | None = None) -> None:
    """Serve until ``stop`` is set. A live socket at the path means another daemon: refuse."""
    service = RuntimeService(config, images)
    if config.socket.exists() or config.socket.is_symlink():
        if _socket_in_use(config.socket):
            raise OSError(f"{config.socket} is served by another process")
        config.socket.unlink()
    config.socket.parent.mkdir(parents=True, exist_ok=True)
    runner = web.AppRunner(build_app(service), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.UnixSite(runner, str(config.socket))
    await site.start()
    os.chmod(config.socket, 0o660)
    status = await service.Status({})
    for cond in status["conditions"]:
        if not cond["status"]:
            log.warning("%s is false: %s", cond["type"], cond["message"])
    states = [await service.containers.state_of(c) for c in list(service.containers.containers.values())]
    running = states.count(RUNNING)
    log.info("serving on %s: %d pod sandboxes, %d containers (%d running)", config.socket,
             len(service.sandboxes.sandboxes), len(service.containers.containers), running)
    if ready is not None:
        ready()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        with contextlib.suppress(FileNotFoundError):
            config.socket.unlink()

