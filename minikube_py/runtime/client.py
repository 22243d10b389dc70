"""The kubelet's side of the runtime socket: one async method per CRI call.

Requests and responses are the daemon's JSON (CRI's field names in camelCase); a refused call raises
the matching ``RuntimeServiceError`` subclass (``NotFoundError``, ``InvalidArgumentError``,
``UnavailableError``, ``InternalError``, ``DeadlineExceededError``) with the daemon's message. A
socket nobody serves raises ``UnavailableError`` too.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson

from minikube_py.kubelet.streaming import PROTOCOL_V4, PROTOCOL_V5
from minikube_py.runtime import (
    ERRORS_BY_CODE,
    DeadlineExceededError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    RuntimeServiceError,
    UnavailableError,
)

__all__ = ["DeadlineExceededError", "ExecResult", "InternalError", "InvalidArgumentError", "NotFoundError",
           "RuntimeClient", "RuntimeServiceError", "UnavailableError"]

# Over a local socket every call but a pull or a stop answers in milliseconds; these bound the rest.
CALL_TIMEOUT = 120.0
PULL_TIMEOUT = 900.0


@dataclass(frozen=True)
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_code: int


class RuntimeClient:
    """``RuntimeClient("/run/minikube-py/runtime.sock")``; close it (or use ``async with``) when done."""

    def __init__(self, socket_path: str | Path) -> None:
        self.socket_path = str(socket_path)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> RuntimeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self.socket_path))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, method: str, body: dict[str, Any] | None = None, *,
                   limit: float = CALL_TIMEOUT) -> dict[str, Any]:
        """POST one call (given up after ``limit`` seconds); the response body, or the call's error raised."""
        try:
            async with self._http().post(f"http://runtime/v1/{method}", data=orjson.dumps(body or {}),
                                         headers={"Content-Type": "application/json"},
                                         timeout=aiohttp.ClientTimeout(total=limit)) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientConnectionError, FileNotFoundError, ConnectionRefusedError) as e:
            raise UnavailableError(f"cannot reach the runtime at {self.socket_path}: {e}") from None
        except TimeoutError:
            raise DeadlineExceededError(f"{method} got no answer from the runtime within {limit:g}s") from None
        try:
            data = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            raise InternalError(f"{method}: the runtime answered {status} with non-JSON: {raw[:200]!r}") from None
        if status >= 400 or (isinstance(data, dict) and "error" in data):
            err = data.get("error") if isinstance(data, dict) else None
            err = err if isinstance(err, dict) else {}
            cls = ERRORS_BY_CODE.get(str(err.get("code")), InternalError)
            raise cls(str(err.get("message") or f"{method} failed with HTTP {status}"))
        return data if isinstance(data, dict) else {}

    # -- runtime --------------------------------------------------------------------------------

    async def version(self) -> dict[str, Any]:
        return await self.call("Version")

    async def status(self) -> dict[str, Any]:
        """``{"conditions": [{"type": "RuntimeReady"|"NetworkReady", "status": bool, "reason", "message"}]}``."""
        return await self.call("Status")

    async def update_runtime_config(self, pod_cidr: str) -> None:
        await self.call("UpdateRuntimeConfig", {"podCIDR": pod_cidr})

    # -- images ---------------------------------------------------------------------------------

    async def pull_image(self, image: str) -> str:
        """Pull ``image``; its image id (``sha256:...``)."""
        return str((await self.call("PullImage", {"image": image}, limit=PULL_TIMEOUT))["imageRef"])

    async def list_images(self, image: str | None = None) -> list[dict[str, Any]]:
        body = {"filter": {"image": {"image": image}}} if image else {}
        return list((await self.call("ListImages", body))["images"])

    async def image_status(self, image: str) -> dict[str, Any] | None:
        """``{"id", "repoTags", "repoDigests", "size", "username"}``, or None when the image is absent."""
        return (await self.call("ImageStatus", {"image": image})).get("image")

    async def remove_image(self, image: str) -> None:
        await self.call("RemoveImage", {"image": image})

    # -- sandboxes ------------------------------------------------------------------------------

    async def run_pod_sandbox(self, config: dict[str, Any]) -> str:
        """``config``: metadata{name,namespace,uid,attempt}, hostname, labels, annotations,
        portMappings[{containerPort,hostPort,protocol,hostIp}], dnsConfig{servers,searches,options}.
        Returns the sandbox id."""
        return str((await self.call("RunPodSandbox", {"config": config}))["podSandboxId"])

    async def stop_pod_sandbox(self, pod_sandbox_id: str) -> None:
        await self.call("StopPodSandbox", {"podSandboxId": pod_sandbox_id})

    async def remove_pod_sandbox(self, pod_sandbox_id: str) -> None:
        await self.call("RemovePodSandbox", {"podSandboxId": pod_sandbox_id})

    async def pod_sandbox_status(self, pod_sandbox_id: str) -> dict[str, Any]:
        """``{"id", "state": "SANDBOX_READY"|"SANDBOX_NOTREADY", "network": {"ip"}, "createdAt",
        "metadata", "labels", "annotations"}``."""
        return await self.call("PodSandboxStatus", {"podSandboxId": pod_sandbox_id})

    async def list_pod_sandbox(self, *, state: str | None = None, label_selector: dict[str, str] | None = None,
                               id: str | None = None) -> list[dict[str, Any]]:
        f: dict[str, Any] = {}
        if state:
            f["state"] = state
        if label_selector:
            f["labelSelector"] = label_selector
        if id:
            f["id"] = id
        return list((await self.call("ListPodSandbox", {"filter": f}))["items"])

    # -- containers -----------------------------------------------------------------------------

    async def create_container(self, pod_sandbox_id: str, config: dict[str, Any]) -> str:
        """``config``: metadata{name,attempt}, image{image}, command, args, workingDir, envs[{key,value}],
        mounts[{containerPath,hostPath,readonly}], logPath, tty, stdin,
        linux{resources{cpuShares,cpuQuota,cpuPeriod,memoryLimitInBytes}}, labels, annotations.
        Returns the container id."""
        body = {"podSandboxId": pod_sandbox_id, "config": config}
        return str((await self.call("CreateContainer", body))["containerId"])

    async def start_container(self, container_id: str) -> None:
        await self.call("StartContainer", {"containerId": container_id})

    async def stop_container(self, container_id: str, timeout: float = 0) -> None:
        """SIGTERM, ``timeout`` seconds of grace, then SIGKILL."""
        await self.call("StopContainer", {"containerId": container_id, "timeout": timeout},
                        limit=CALL_TIMEOUT + timeout)

    async def remove_container(self, container_id: str) -> None:
        await self.call("RemoveContainer", {"containerId": container_id})

    async def container_status(self, container_id: str) -> dict[str, Any]:
        """``{"id", "state": "CONTAINER_CREATED|RUNNING|EXITED|UNKNOWN", "createdAt", "startedAt",
        "finishedAt" (ns), "exitCode", "reason", "message", "image": {"image"}, "imageRef", "logPath", ...}``."""
        return await self.call("ContainerStatus", {"containerId": container_id})

    async def list_containers(self, *, pod_sandbox_id: str | None = None, state: str | None = None,
                              label_selector: dict[str, str] | None = None,
                              id: str | None = None) -> list[dict[str, Any]]:
        f: dict[str, Any] = {}
        if pod_sandbox_id:
            f["podSandboxId"] = pod_sandbox_id
        if state:
            f["state"] = state
        if label_selector:
            f["labelSelector"] = label_selector
        if id:
            f["id"] = id
        return list((await self.call("ListContainers", {"filter": f}))["containers"])

    async def exec_sync(self, container_id: str, cmd: list[str], timeout: float = 0) -> ExecResult:
        """Run ``cmd`` in the container; past ``timeout`` seconds (0: none) DeadlineExceededError."""
        data = await self.call("ExecSync", {"containerId": container_id, "cmd": cmd, "timeout": timeout},
                               limit=CALL_TIMEOUT + timeout)
        return ExecResult(base64.b64decode(data.get("stdout") or ""), base64.b64decode(data.get("stderr") or ""),
                          int(data.get("exitCode") or 0))

    def exec_url(self, container_id: str, cmd: list[str], *, tty: bool = False, stdin: bool = False,
                 stdout: bool = True, stderr: bool = True) -> str:
        """The streaming exec's path on the socket: GET it with a WebSocket upgrade offering
        ``v5.channel.k8s.io`` (see ``exec_stream``)."""
        query = [("containerId", container_id), *(("cmd", c) for c in cmd), ("tty", _b(tty)),
                 ("stdin", _b(stdin)), ("stdout", _b(stdout)), ("stderr", _b(stderr and not tty))]
        return "/v1/exec?" + urlencode(query)

    async def exec_stream(self, container_id: str, cmd: list[str], **kw: bool) -> aiohttp.ClientWebSocketResponse:
        """Open the streaming exec: a WebSocket whose binary messages carry a channel byte first.

        A refused exec (no such container, not running) raises its error before any upgrade."""
        url = "http://runtime" + self.exec_url(container_id, cmd, **kw)
        try:
            return await self._http().ws_connect(url, protocols=(PROTOCOL_V5, PROTOCOL_V4), max_msg_size=0)
        except aiohttp.WSServerHandshakeError as e:
            # The refusal's body is lost with the failed handshake: ask again without the upgrade, which
            # the daemon refuses the same way, and raise its error.
            try:
                async with self._http().get(url) as resp:
                    err = (await resp.json(content_type=None) or {}).get("error") or {}
            except (aiohttp.ClientError, ValueError, AttributeError):
                err = {}
            cls = ERRORS_BY_CODE.get(str(err.get("code")), InternalError)
            raise cls(str(err.get("message") or f"exec in container {container_id}: HTTP {e.status}")) from None
        except (aiohttp.ClientConnectionError, FileNotFoundError) as e:
            raise UnavailableError(f"cannot reach the runtime at {self.socket_path}: {e}") from None


def _b(value: bool) -> str:
    return "true" if value else "false"
