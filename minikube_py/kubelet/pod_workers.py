"""One worker per pod (keyed by uid), serialized: the kubelet's ``podWorkers`` + ``SyncPod``.

Each sync compares the pod's spec with what the runtime runs (found again by the labels the kubelet
puts on sandboxes and containers, so a restarted kubelet picks its pods up) and takes the next steps:
the sandbox, the init containers in order (each to completion), then every regular container; image
pulls per ``imagePullPolicy``; restarts per ``restartPolicy`` with the crash-loop back-off; probes;
and at the end the pod's status, written only when it changed. The runtime has no event stream, so
the worker re-syncs every ``sync_period`` (the kubelet's PLEG relist is 1 s too) and at once when the
pod changes or a probe result flips.

A pod with a ``deletionTimestamp`` is terminated (SIGTERM, the grace period, SIGKILL), its sandbox
stopped and removed, its volumes and logs deleted, and then the API object is deleted with
``gracePeriodSeconds=0`` and a uid precondition, as the kubelet's status manager does.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from minikube_py.api.validation import parse_quantity
from minikube_py.client import ApiStatusError
from minikube_py.kubelet.backoff import format_duration
from minikube_py.kubelet.envvars import ContainerConfigError, container_env, expand_args
from minikube_py.kubelet.pod_status import (
    CREATED,
    EXITED,
    RUNNING,
    ContainerView,
    RuntimeContainer,
    pod_status,
    status_differs,
)
from minikube_py.kubelet.probes import (
    FAILURE,
    LIVENESS,
    READINESS,
    STARTUP,
    SUCCESS,
    ProbeOutcome,
    ProbeSpec,
    ProbeWorker,
    run_handler,
)
from minikube_py.kubelet.volumes import PodVolumes
from minikube_py.runtime import NotFoundError, RuntimeServiceError

if TYPE_CHECKING:
    from minikube_py.kubelet.kubelet import Kubelet

log = logging.getLogger("minikube_py.kubelet.pods")

POD_UID_LABEL = "io.kubernetes.pod.uid"
POD_NAME_LABEL = "io.kubernetes.pod.name"
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
CONTAINER_NAME_LABEL = "io.kubernetes.container.name"
DEFAULT_GRACE = 30
# Volumes (ConfigMaps, Secrets, downward API) are rewritten at least this often while a pod runs.
VOLUME_REFRESH = 60.0
# CPU shares as the kubelet computes them from requests: 1024 per core, at least 2.
MIN_SHARES, SHARES_PER_CPU, QUOTA_PERIOD = 2, 1024, 100_000
_DNS_LABEL = re.compile(r"[^a-z0-9-]")


def container_key(uid: str, name: str) -> str:
    return f"{uid}/{name}"


def pod_label(pod: dict[str, Any]) -> str:
    """The kubelet's ``format.Pod``: ``name_namespace(uid)``."""
    meta = pod.get("metadata") or {}
    return f"{meta.get('name')}_{meta.get('namespace')}({meta.get('uid')})"


def linux_resources(container: dict[str, Any]) -> dict[str, int]:
    """requests.cpu -> shares, limits.cpu -> quota/period, limits.memory -> the memory limit."""
    resources = container.get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    out: dict[str, int] = {}
    cpu_request = requests.get("cpu", limits.get("cpu"))
    if cpu_request is not None:
        out["cpuShares"] = max(MIN_SHARES, int(parse_quantity(str(cpu_request)) * SHARES_PER_CPU))
    if limits.get("cpu") is not None:
        quota = math.ceil(parse_quantity(str(limits["cpu"])) * QUOTA_PERIOD)
        out["cpuQuota"], out["cpuPeriod"] = max(quota, 1000), QUOTA_PERIOD
    if limits.get("memory") is not None:
        out["memoryLimitInBytes"] = int(parse_quantity(str(limits["memory"])).to_integral_value())
    return out


def pull_policy(container: dict[str, Any]) -> str:
    policy = container.get("imagePullPolicy")
    if policy in ("Always", "IfNotPresent", "Never"):
        return str(policy)
    image = str(container.get("image") or "")
    tagged = ":" in image.rsplit("/", 1)[-1] or "@" in image
    return "IfNotPresent" if tagged and not image.endswith(":latest") else "Always"


def sandbox_hostname(pod: dict[str, Any]) -> str:
    spec, meta = pod.get("spec") or {}, pod.get("metadata") or {}
    name = str(spec.get("hostname") or meta.get("name") or "pod").lower()
    return _DNS_LABEL.sub("-", name)[:63].strip("-") or "pod"


def _rv(pod: dict[str, Any]) -> int:
    rv = str((pod.get("metadata") or {}).get("resourceVersion") or "")
    return int(rv) if rv.isdigit() else 0


def _sync_relevant(pod: dict[str, Any]) -> tuple[Any, ...]:
    meta = pod.get("metadata") or {}
    return (pod.get("spec"), meta.get("labels"), meta.get("annotations"), meta.get("deletionTimestamp"),
            meta.get("deletionGracePeriodSeconds"), (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"))


@dataclass
class _Tracked:
    """What the worker remembers of one container of the spec between syncs."""

    latest: RuntimeContainer | None = None
    previous: RuntimeContainer | None = None
    waiting: tuple[str, str] | None = None


class PodWorker:
    """Keeps one pod's containers in line with its spec until the pod is gone."""

    def __init__(self, kubelet: Kubelet, pod: dict[str, Any]) -> None:
        self.kubelet = kubelet
        self.runtime = kubelet.runtime
        self.pod = pod
        meta = pod["metadata"]
        self.uid = str(meta.get("uid") or "")
        self.key = f"{meta.get('namespace')}/{meta.get('name')}"
        self.sandbox_id: str | None = None
        self.pod_ip = ""
        self.volumes = PodVolumes(kubelet.config.root_dir, pod)
        self.volumes_at = 0.0
        self.tracked: dict[str, _Tracked] = {}
        self.probes: dict[tuple[str, str], ProbeWorker] = {}
        self.removed = False      # gone from the API (deleted, or no longer bound here)
        self.finished = False     # terminated and cleaned up: the worker ends
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._exited_cache: dict[str, RuntimeContainer] = {}
        self._next_sync: float | None = None
        self._sandbox_stopped = False

    # ---- life cycle --------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"pod-worker-{self.key}")

    def update(self, pod: dict[str, Any]) -> None:
        """A newer version of the pod. Only a change of what the kubelet acts on starts a sync: its own
        status writes coming back through the watch do not (the kubelet's pod config ignores them too)."""
        before = self.pod
        if _rv(pod) < _rv(before) and _sync_relevant(before) == _sync_relevant(pod):
            return  # an older copy (our own status write's event arriving late): keep the newer
        self.pod = pod
        self.volumes.pod = pod
        if _sync_relevant(before) != _sync_relevant(pod):
            self.wake()

    def remove(self) -> None:
        self.removed = True
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """Stop working on the pod (the kubelet is shutting down); its containers keep running."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._stop_probes()

    async def wait(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        period = self.kubelet.config.sync_period
        failures = 0
        while not self.finished:
            self._wake.clear()
            self._next_sync = None
            try:
                await self.sync()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as e:
                failures += 1
                log.warning("pod %s: sync failed (%d in a row): %s: %s", self.key, failures, type(e).__name__, e)
                log.debug("pod %s: sync failure", self.key, exc_info=True)
            if self.finished:
                break
            delay = period * min(2 ** max(failures - 1, 0), 10)
            if self._next_sync is not None:
                delay = min(delay, max(self._next_sync - time.monotonic(), 0.05))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
        self.kubelet.worker_done(self)

    def _retry_in(self, seconds: float) -> None:
        at = time.monotonic() + seconds
        if self._next_sync is None or at < self._next_sync:
            self._next_sync = at

    # ---- the sync ----------------------------------------------------------------------------------

    async def sync(self) -> None:
        pod = self.pod
        meta, spec = pod["metadata"], pod.get("spec") or {}
        if self.removed or meta.get("deletionTimestamp"):
            await self.terminate(self._grace_period())
            if not self.removed:
                await self._delete_from_api()
            self.finished = True
            return
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            await self._stop_terminal_pod()
            return
        if not await self._ensure_sandbox():
            return
        await self._refresh(spec)
        if any(t.latest is not None and t.latest.state == RUNNING for t in self.tracked.values()):
            # As the kubelet remounts projected volumes on its sync: ConfigMaps edited and tokens
            # refreshed (sa_tokens) reach running containers, at most every VOLUME_REFRESH seconds.
            try:
                await self._setup_volumes()
            except (ContainerConfigError, ApiStatusError, OSError) as e:
                log.warning("pod %s: cannot refresh volumes: %s", self.key, e)
        inits = spec.get("initContainers") or []
        containers = spec.get("containers") or []
        policy = str(spec.get("restartPolicy") or "Always")
        if not self._init_views_done(inits):
            await self._step_init(inits, policy)
        else:
            for c in containers:
                await self._step_container(c, policy)
        await self._write_status()
        if self._phase_now() in ("Succeeded", "Failed"):
            await self._stop_terminal_pod()

    def _grace_period(self) -> int:
        meta, spec = self.pod["metadata"], self.pod.get("spec") or {}
        for value in (meta.get("deletionGracePeriodSeconds"), spec.get("terminationGracePeriodSeconds")):
            if isinstance(value, int) and value >= 0:
                return value
        return DEFAULT_GRACE

    # ---- sandbox -------------------------------------------------------------------------------------

    async def _ensure_sandbox(self) -> bool:
        """A ready sandbox for the pod (found again, or made); False when it could not be had now."""
        if self.sandbox_id is not None:
            try:
                st = await self.runtime.pod_sandbox_status(self.sandbox_id)
                if st.get("state") == "SANDBOX_READY":
                    self.pod_ip = str((st.get("network") or {}).get("ip") or "")
                    return True
            except NotFoundError:
                pass
            log.info("pod %s: sandbox %s is gone or not ready; making a new one", self.key, self.sandbox_id[:12])
            await self._remove_sandbox(self.sandbox_id)
            self.sandbox_id = None
        attempt = 0
        for sb in await self.runtime.list_pod_sandbox(label_selector={POD_UID_LABEL: self.uid}):
            attempt = max(attempt, int((sb.get("metadata") or {}).get("attempt") or 0) + 1)
            if sb.get("state") == "SANDBOX_READY" and self.sandbox_id is None:
                self.sandbox_id = str(sb["id"])
            else:
                await self._remove_sandbox(str(sb["id"]))
        if self.sandbox_id is not None:
            st = await self.runtime.pod_sandbox_status(self.sandbox_id)
            self.pod_ip = str((st.get("network") or {}).get("ip") or "")
            return True
        try:
            self.sandbox_id = await self.runtime.run_pod_sandbox(self._sandbox_config(attempt))
        except RuntimeServiceError as e:
            self.kubelet.event(self.pod, "Warning", "FailedCreatePodSandBox",
                               f"Failed to create pod sandbox: {e}")
            log.warning("pod %s: creating the sandbox failed: %s", self.key, e)
            self._retry_in(5.0)
            return False
        st = await self.runtime.pod_sandbox_status(self.sandbox_id)
        self.pod_ip = str((st.get("network") or {}).get("ip") or "")
        self._sandbox_stopped = False
        # A new sandbox means every container starts again in it.
        for tracked in self.tracked.values():
            tracked.waiting = None
        return True

    def _sandbox_config(self, attempt: int) -> dict[str, Any]:
        meta, spec = self.pod["metadata"], self.pod.get("spec") or {}
        labels = {**(meta.get("labels") or {}), POD_UID_LABEL: self.uid, POD_NAME_LABEL: meta["name"],
                  POD_NAMESPACE_LABEL: meta.get("namespace") or "default"}
        ports = []
        for c in spec.get("containers") or ():
            for p in c.get("ports") or ():
                if p.get("hostPort"):
                    ports.append({"containerPort": int(p.get("containerPort") or 0), "hostPort": int(p["hostPort"]),
                                  "protocol": str(p.get("protocol") or "TCP"), "hostIp": str(p.get("hostIP") or "")})
        return {"metadata": {"name": meta["name"], "namespace": meta.get("namespace") or "default",
                             "uid": self.uid, "attempt": attempt},
                "hostname": sandbox_hostname(self.pod), "labels": labels,
                "annotations": {k: str(v) for k, v in (meta.get("annotations") or {}).items()},
                "portMappings": ports, "dnsConfig": self.kubelet.dns_config(self.pod)}

    async def _remove_sandbox(self, sandbox_id: str) -> None:
        with contextlib.suppress(NotFoundError):
            await self.runtime.stop_pod_sandbox(sandbox_id)
        with contextlib.suppress(NotFoundError):
            await self.runtime.remove_pod_sandbox(sandbox_id)

    # ---- what runs -----------------------------------------------------------------------------------

    async def _refresh(self, spec: dict[str, Any]) -> None:
        """Read the pod's containers from the runtime: per name, the latest run and the one before."""
        found: dict[str, list[dict[str, Any]]] = {}
        for c in await self.runtime.list_containers(label_selector={POD_UID_LABEL: self.uid}):
            if c.get("podSandboxId") != self.sandbox_id:
                # Left from an earlier sandbox: it cannot run any more; keep it for lastState only.
                if c.get("state") != EXITED:
                    with contextlib.suppress(NotFoundError):
                        await self.runtime.stop_container(str(c["id"]), 0)
            name = str((c.get("labels") or {}).get(CONTAINER_NAME_LABEL) or (c.get("metadata") or {}).get("name"))
            found.setdefault(name, []).append(c)
        names = {str(c.get("name")) for c in (*(spec.get("initContainers") or ()), *(spec.get("containers") or ()))}
        for name in names:
            runs = sorted(found.get(name, []), key=lambda c: (int((c.get("metadata") or {}).get("attempt") or 0),
                                                               int(c.get("createdAt") or 0)))
            tracked = self.tracked.setdefault(name, _Tracked())
            tracked.latest = await self._status_of(runs[-1]) if runs else None
            tracked.previous = await self._status_of(runs[-2]) if len(runs) > 1 else None
            for old in runs[:-2]:
                # The kubelet keeps one dead container per name for `logs --previous`; older ones go.
                with contextlib.suppress(NotFoundError):
                    await self.runtime.remove_container(str(old["id"]))
                self._exited_cache.pop(str(old["id"]), None)
            if tracked.latest is not None and tracked.latest.state == RUNNING:
                tracked.waiting = None
        for name in [n for n in self.tracked if n not in names]:
            del self.tracked[name]
        await self._sync_probes()

    async def _status_of(self, summary: dict[str, Any]) -> RuntimeContainer:
        cid = str(summary["id"])
        cached = self._exited_cache.get(cid)
        if cached is not None:
            return cached
        try:
            rc = RuntimeContainer.from_status(await self.runtime.container_status(cid))
        except NotFoundError:
            rc = RuntimeContainer.from_status({**summary, "state": "CONTAINER_UNKNOWN"})
        if rc.state == EXITED:
            self._exited_cache[cid] = rc
        return rc

    def _init_views_done(self, inits: list[dict[str, Any]]) -> bool:
        return all((t := self.tracked.get(str(c.get("name")))) is not None and t.latest is not None
                   and t.latest.succeeded for c in inits)

    # ---- steps ---------------------------------------------------------------------------------------

    async def _step_init(self, inits: list[dict[str, Any]], policy: str) -> None:
        for c in inits:
            t = self.tracked[str(c.get("name"))]
            if t.latest is not None and t.latest.succeeded:
                continue
            if t.latest is None or t.latest.state == CREATED:
                await self._start(c, t, attempt=await self._reuse_attempt(t))
            elif t.latest.exited:
                if policy != "Never":
                    await self._restart_after_exit(c, t)
            return  # one init container at a time, each to completion

    async def _step_container(self, c: dict[str, Any], policy: str) -> None:
        name = str(c.get("name"))
        t = self.tracked[name]
        latest = t.latest
        if latest is None or latest.state == CREATED:
            await self._start(c, t, attempt=await self._reuse_attempt(t))
            return
        if latest.state == RUNNING:
            failed = self._probe_failed(latest.id)
            if failed is None:
                return
            kind, _ = failed
            self.kubelet.event(self.pod, "Normal", "Killing",
                               f"Container {name} failed {kind.lower()} probe, will be restarted")
            await self._stop_probes(latest.id)
            with contextlib.suppress(NotFoundError):
                await self.runtime.stop_container(latest.id, self._container_grace())
            self._exited_cache.pop(latest.id, None)
            t.latest = await self._status_of({"id": latest.id, "metadata": {"name": name, "attempt": latest.attempt}})
            if policy == "Never":
                return
            # Restarted at once, without the crash back-off: the kubelet killed it itself.
            await self._start(c, t, attempt=latest.attempt + 1)
            return
        restart = policy == "Always" or (policy == "OnFailure" and not latest.succeeded)
        if restart:
            await self._restart_after_exit(c, t)

    async def _restart_after_exit(self, c: dict[str, Any], t: _Tracked) -> None:
        """Start a crashed/finished container again, unless it is in its crash-loop back-off."""
        assert t.latest is not None
        name = str(c.get("name"))
        key = container_key(self.uid, name)
        backoff = self.kubelet.container_backoff
        finished = t.latest.finished_at / 1e9 if t.latest.finished_at else time.time()
        if backoff.in_backoff_since(key, finished):
            delay = backoff.get(key)
            message = f"back-off {format_duration(delay)} restarting failed container={name} pod={pod_label(self.pod)}"
            if t.waiting is None or t.waiting[1] != message:
                self.kubelet.event(self.pod, "Warning", "BackOff",
                                   f"Back-off restarting failed container {name} in pod {pod_label(self.pod)}")
            t.waiting = ("CrashLoopBackOff", message)
            self._retry_in(backoff.remaining(key, finished) + 0.01)
            return
        backoff.next(key, finished)
        await self._start(c, t, attempt=t.latest.attempt + 1)

    async def _reuse_attempt(self, t: _Tracked) -> int:
        """The attempt number for a container that has no run yet; one created but never started (the
        kubelet stopped in between) is removed so that its attempt can be made again."""
        if t.latest is None:
            return 0
        with contextlib.suppress(NotFoundError):
            await self.runtime.remove_container(t.latest.id)
        attempt, t.latest = t.latest.attempt, t.previous
        t.previous = None
        return attempt

    def _container_grace(self) -> int:
        value = (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds")
        return value if isinstance(value, int) and value >= 0 else DEFAULT_GRACE

    # ---- starting a container ------------------------------------------------------------------------

    async def _start(self, c: dict[str, Any], t: _Tracked, *, attempt: int) -> None:
        name = str(c.get("name"))
        if not await self._ensure_image(c, t):
            return
        try:
            await self._setup_volumes(force=True)
            env = await container_env(self.pod, c, self.kubelet.get_object, pod_ip=self.pod_ip,
                                      host_ip=self.kubelet.config.node_ip,
                                      node_allocatable=self.kubelet.allocatable)
            mounts = self.volumes.mounts(c)
            resources = linux_resources(c)
        except (ContainerConfigError, ValueError) as e:
            self._config_error(t, "CreateContainerConfigError", str(e))
            return
        if not any(m["containerPath"] == "/etc/hosts" for m in mounts):
            mounts.append({"containerPath": "/etc/hosts", "hostPath": str(self.volumes.write_etc_hosts(self.pod_ip)),
                           "readonly": False})
        log_path = self.kubelet.container_log_path(self.pod, name, attempt)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            log_path.unlink()  # a run of the same attempt number before a sandbox change
        config = {
            "metadata": {"name": name, "attempt": attempt}, "image": {"image": str(c.get("image") or "")},
            "command": expand_args(list(c.get("command") or []), env),
            "args": expand_args(list(c.get("args") or []), env),
            "workingDir": str(c.get("workingDir") or ""), "envs": env, "mounts": mounts, "logPath": str(log_path),
            "tty": bool(c.get("tty")), "stdin": bool(c.get("stdin")),
            "linux": {"resources": resources, "securityContext": self._security_context(c)},
            "labels": {POD_UID_LABEL: self.uid, POD_NAME_LABEL: self.pod["metadata"]["name"],
                       POD_NAMESPACE_LABEL: self.pod["metadata"].get("namespace") or "default",
                       CONTAINER_NAME_LABEL: name},
            "annotations": {"io.kubernetes.container.restartCount": str(attempt)},
        }
        assert self.sandbox_id is not None
        try:
            cid = await self.runtime.create_container(self.sandbox_id, config)
        except RuntimeServiceError as e:
            self._config_error(t, "CreateContainerError", str(e))
            return
        self.kubelet.event(self.pod, "Normal", "Created", f"Created container: {name}")
        t.waiting = None
        try:
            await self.runtime.start_container(cid)
        except RuntimeServiceError as e:
            # The runtime recorded the container as exited with runc's message: the status shows it.
            self.kubelet.event(self.pod, "Warning", "Failed", f"Error: {e}")
            log.info("pod %s: container %s could not start: %s", self.key, name, e)
        else:
            self.kubelet.event(self.pod, "Normal", "Started", f"Started container {name}")
        t.previous, t.latest = t.latest, await self._status_of({"id": cid, "metadata": config["metadata"]})
        self._start_probes(c, t.latest)

    def _config_error(self, t: _Tracked, reason: str, message: str) -> None:
        if t.waiting != (reason, message):
            self.kubelet.event(self.pod, "Warning", "Failed", f"Error: {message}")
        t.waiting = (reason, message)
        self._retry_in(self.kubelet.config.backoff_initial)

    @staticmethod
    def _security_context(c: dict[str, Any]) -> dict[str, Any]:
        sc = c.get("securityContext") or {}
        out: dict[str, Any] = {}
        for key in ("runAsUser", "runAsGroup"):
            if isinstance(sc.get(key), int):
                out[key] = {"value": sc[key]}
        return out

    async def _ensure_image(self, c: dict[str, Any], t: _Tracked) -> bool:
        image = str(c.get("image") or "")
        policy = pull_policy(c)
        if not image:
            self._config_error(t, "InvalidImageName", "the container has no image")
            return False
        present = False
        if policy != "Always":
            try:
                present = await self.runtime.image_status(image) is not None
            except RuntimeServiceError as e:
                self._config_error(t, "InvalidImageName", f'Failed to inspect image "{image}": {e}')
                return False
        if present:
            if t.waiting is None or t.waiting[0] in ("ErrImagePull", "ImagePullBackOff"):
                self.kubelet.event(self.pod, "Normal", "Pulled",
                                   f'Container image "{image}" already present on machine')
            return True
        if policy == "Never":
            self._config_error(t, "ErrImageNeverPull",
                               f'Container image "{image}" is not present with pull policy of Never')
            return False
        key = f"{self.uid}_{image}"
        backoff = self.kubelet.image_backoff
        if backoff.in_backoff_since_update(key):
            if t.waiting is not None and t.waiting[0] == "ErrImagePull" \
                    and backoff.get(key) - backoff.remaining(key) < backoff.get(key) / 2:
                # The failed pull's reason stays shown for the first half of the wait, as the kubelet's
                # slower resync leaves it; then the pod says it is backing off.
                self._retry_in(backoff.remaining(key) - backoff.get(key) / 2 + 0.01)
                return False
            last = t.waiting[1] if t.waiting is not None and t.waiting[0] in ("ErrImagePull", "ImagePullBackOff") \
                else ""
            cause = last.split(": ErrImagePull: ", 1)[-1] if last else ""
            message = f'Back-off pulling image "{image}"' + (f": ErrImagePull: {cause}" if cause else "")
            if t.waiting is None or t.waiting[0] != "ImagePullBackOff":
                self.kubelet.event(self.pod, "Normal", "BackOff", f'Back-off pulling image "{image}"')
                self.kubelet.event(self.pod, "Warning", "Failed", "Error: ImagePullBackOff")
            t.waiting = ("ImagePullBackOff", message)
            self._retry_in(backoff.remaining(key) + 0.01)
            return False
        self.kubelet.event(self.pod, "Normal", "Pulling", f'Pulling image "{image}"')
        started = time.monotonic()
        try:
            await self.kubelet.pull_image(image)
        except RuntimeServiceError as e:
            backoff.next(key)
            self.kubelet.event(self.pod, "Warning", "Failed", f'Failed to pull image "{image}": {e}')
            self.kubelet.event(self.pod, "Warning", "Failed", "Error: ErrImagePull")
            t.waiting = ("ErrImagePull", str(e))
            self._retry_in(backoff.remaining(key) + 0.01)
            return False
        took = time.monotonic() - started
        backoff.reset(key)
        size = ""
        with contextlib.suppress(RuntimeServiceError):
            st = await self.runtime.image_status(image)
            if st is not None:
                size = f" Image size: {st.get('size')} bytes."
        self.kubelet.event(self.pod, "Normal", "Pulled",
                           f'Successfully pulled image "{image}" in {took:.3f}s ({took:.3f}s including waiting).'
                           f"{size}")
        return True

    async def _setup_volumes(self, force: bool = False) -> None:
        if not force and time.monotonic() - self.volumes_at < VOLUME_REFRESH:
            return
        await self.volumes.setup(self.kubelet.get_object, pod_ip=self.pod_ip, host_ip=self.kubelet.config.node_ip,
                                 allocatable=self.kubelet.allocatable, tokens=self.kubelet.sa_tokens)
        self.volumes_at = time.monotonic()

    # ---- probes ----------------------------------------------------------------------------------------

    def _start_probes(self, c: dict[str, Any], rc: RuntimeContainer) -> None:
        if rc.state != RUNNING:
            return
        has_startup = c.get("startupProbe") is not None
        for kind, field in ((STARTUP, "startupProbe"), (LIVENESS, "livenessProbe"), (READINESS, "readinessProbe")):
            probe = c.get(field)
            if probe is None or (rc.id, kind) in self.probes:
                continue
            spec = ProbeSpec.from_api(probe)
            cid = rc.id

            def attempt(spec: ProbeSpec = spec, cid: str = cid, c: dict[str, Any] = c) -> Awaitable[ProbeOutcome]:
                return run_handler(spec.handler, container=c, container_id=cid, pod_ip=self.pod_ip,
                                   runtime=self.runtime, timeout=spec.timeout)

            started: Callable[[], bool] | None = None
            if has_startup and kind != STARTUP:
                started = self._startup_done_fn(cid)
            worker = ProbeWorker(kind, spec, attempt, on_change=lambda _w: self.wake(),
                                 on_failure=self._probe_failure_event(str(c.get("name"))), started=started)
            self.probes[(cid, kind)] = worker
            worker.start()

    def _startup_done_fn(self, cid: str) -> Callable[[], bool]:
        def done() -> bool:
            w = self.probes.get((cid, STARTUP))
            return w is None or w.result == SUCCESS
        return done

    def _probe_failure_event(self, name: str) -> Callable[[ProbeWorker, ProbeOutcome], None]:
        def record(worker: ProbeWorker, outcome: ProbeOutcome) -> None:
            message = f"{worker.kind} probe failed: {outcome.output}".strip()
            self.kubelet.event(self.pod, "Warning", "Unhealthy", message)
        return record

    def _probe_failed(self, cid: str) -> tuple[str, str] | None:
        for kind in (STARTUP, LIVENESS):
            w = self.probes.get((cid, kind))
            if w is not None and w.result == FAILURE:
                return kind, w.last_output
        return None

    async def _sync_probes(self) -> None:
        """Probe workers for running containers only; a container that stopped loses its workers."""
        running = {t.latest.id for t in self.tracked.values() if t.latest is not None and t.latest.state == RUNNING}
        for cid in {cid for cid, _ in self.probes if cid not in running}:
            await self._stop_probes(cid)
        spec = self.pod.get("spec") or {}
        by_name = {str(c.get("name")): c for c in spec.get("containers") or ()}
        for name, t in self.tracked.items():
            if t.latest is not None and t.latest.state == RUNNING and name in by_name:
                self._start_probes(by_name[name], t.latest)

    async def _stop_probes(self, cid: str | None = None) -> None:
        for key in [k for k in self.probes if cid is None or k[0] == cid]:
            await self.probes.pop(key).stop()

    def _ready(self, rc: RuntimeContainer | None) -> tuple[bool, bool]:
        """(ready, started) of a running container from its probes."""
        if rc is None or rc.state != RUNNING:
            return False, False
        startup = self.probes.get((rc.id, STARTUP))
        started = startup is None or startup.result == SUCCESS
        readiness = self.probes.get((rc.id, READINESS))
        spec = next((c for c in (self.pod.get("spec") or {}).get("containers") or ()
                     if c.get("name") == rc.name), {})
        if spec.get("readinessProbe") is not None and readiness is None:
            return False, started
        return started and (readiness is None or readiness.result == SUCCESS), started

    # ---- status --------------------------------------------------------------------------------------

    def _views(self) -> tuple[list[ContainerView], list[ContainerView]]:
        spec = self.pod.get("spec") or {}

        def view(c: dict[str, Any]) -> ContainerView:
            t = self.tracked.get(str(c.get("name"))) or _Tracked()
            ready, started = self._ready(t.latest)
            return ContainerView(c, t.latest, t.previous, t.waiting, ready, started)

        return [view(c) for c in spec.get("initContainers") or ()], [view(c) for c in spec.get("containers") or ()]

    def _phase_now(self) -> str:
        return str((self.pod.get("status") or {}).get("phase") or "")

    def computed_status(self) -> dict[str, Any]:
        inits, containers = self._views()
        return pod_status(self.pod, sandbox_ready=self.sandbox_id is not None and not self._sandbox_stopped,
                          pod_ip=self.pod_ip, host_ip=self.kubelet.config.node_ip, inits=inits,
                          containers=containers)

    async def _write_status(self) -> None:
        status = self.computed_status()
        for _ in range(3):
            if not status_differs(self.pod.get("status") or {}, status):
                return
            body = copy.deepcopy(self.pod)
            body["status"] = status
            try:
                self.pod = await self.kubelet.client.update_status("pods", body)
                self.pod.setdefault("apiVersion", "v1")
                self.pod.setdefault("kind", "Pod")
                self.volumes.pod = self.pod
                return
            except ApiStatusError as e:
                if e.code == 404:
                    self.remove()
                    return
                if e.code != 409:
                    raise
            fresh = await self.kubelet.client.get_or_none("pods", self.pod["metadata"]["name"],
                                                          self.pod["metadata"].get("namespace"))
            if fresh is None or fresh["metadata"].get("uid") != self.uid:
                self.remove()
                return
            fresh.setdefault("apiVersion", "v1")
            fresh.setdefault("kind", "Pod")
            self.pod = fresh
            status = self.computed_status()

    # ---- ending --------------------------------------------------------------------------------------

    async def _stop_terminal_pod(self) -> None:
        """A Succeeded/Failed pod keeps its dead containers (for logs) but not its sandbox's network."""
        if self._sandbox_stopped:
            return
        await self._stop_probes()
        if self.sandbox_id is None:
            for sb in await self.runtime.list_pod_sandbox(label_selector={POD_UID_LABEL: self.uid}):
                self.sandbox_id = str(sb["id"])
        if self.sandbox_id is not None:
            await self._kill_containers(self._container_grace())
            with contextlib.suppress(NotFoundError):
                await self.runtime.stop_pod_sandbox(self.sandbox_id)
        self._sandbox_stopped = True

    async def _kill_containers(self, grace: int) -> None:
        running = [c for c in await self.runtime.list_containers(label_selector={POD_UID_LABEL: self.uid})
                   if c.get("state") == RUNNING]

        async def kill(c: dict[str, Any]) -> None:
            name = str((c.get("labels") or {}).get(CONTAINER_NAME_LABEL) or "")
            self.kubelet.event(self.pod, "Normal", "Killing", f"Stopping container {name}")
            with contextlib.suppress(NotFoundError):
                await self.runtime.stop_container(str(c["id"]), grace)

        await asyncio.gather(*(kill(c) for c in running))

    async def terminate(self, grace: int) -> None:
        """Stop every container (SIGTERM, ``grace`` seconds, SIGKILL), remove the sandbox, volumes and logs."""
        await self._stop_probes()
        await self._kill_containers(grace)
        for sb in await self.runtime.list_pod_sandbox(label_selector={POD_UID_LABEL: self.uid}):
            await self._remove_sandbox(str(sb["id"]))
        for c in await self.runtime.list_containers(label_selector={POD_UID_LABEL: self.uid}):
            with contextlib.suppress(NotFoundError):
                await self.runtime.remove_container(str(c["id"]))
        self.sandbox_id = None
        self.volumes.teardown()
        shutil.rmtree(self.kubelet.pod_log_dir(self.pod), ignore_errors=True)
        self.kubelet.container_backoff.forget_prefix(self.uid)
        self.kubelet.image_backoff.forget_prefix(self.uid)

    async def _delete_from_api(self) -> None:
        meta = self.pod["metadata"]
        try:
            await self.kubelet.client.delete("pods", meta["name"], meta.get("namespace"), grace_period_seconds=0,
                                             preconditions={"uid": self.uid})
        except ApiStatusError as e:
            if e.code not in (404, 409):  # gone already, or a new pod under the same name: not ours
                raise

    # ---- for the kubelet API ---------------------------------------------------------------------------

    def container(self, name: str, previous: bool = False) -> RuntimeContainer | None:
        t = self.tracked.get(name)
        if t is None:
            return None
        return t.previous if previous else t.latest

