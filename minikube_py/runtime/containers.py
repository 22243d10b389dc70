"""Containers: an OCI bundle per container (config.json + an overlay rootfs over the image's layers),
started through a shim (``minikube_py.runtime.shim``) that runs runc and outlives the daemon.

Where things live, so a restarted daemon finds every container again:
- ``<root>/containers/<id>/``: ``container.json`` (the record), the bundle's ``config.json``,
  ``rootfs`` (the overlay mount point), ``upper`` and ``work``;
- ``<state>/containers/<id>/``: what the shim reports (``shim.pid``, ``started.json``, ``exit.json``,
  runc's log);
- ``<state>/runc``: runc's ``--root``, so several runtimes on one machine never see each other's
  containers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from minikube_py.runtime import (
    DeadlineExceededError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from minikube_py.runtime.sandbox import READY, Sandbox

log = logging.getLogger("minikube_py.runtime.containers")

CREATED, RUNNING, EXITED, UNKNOWN = ("CONTAINER_CREATED", "CONTAINER_RUNNING", "CONTAINER_EXITED",
                                     "CONTAINER_UNKNOWN")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Docker's default capability set, which Kubernetes pods get unless they ask otherwise.
DEFAULT_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
                "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
MASKED_PATHS = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
# The CRI caps ExecSync output at 16 MiB per stream (kubelet's maxMsgSize).
MAX_EXEC_OUTPUT = 16 * 1024 * 1024
# How long StartContainer waits for the shim to report the container started (or unable to start).
START_TIMEOUT = 30.0
# After SIGKILL, how long until the shim must have recorded the exit.
KILL_WAIT = 10.0
POLL = 0.05
MNT_DETACH = 2


class ImageService(Protocol):
    """What the runtime needs from the image store (minikube_py.runtime.images.ImageStore)."""

    def normalize(self, image: str) -> str: ...

    async def pull(self, image: str) -> Any: ...

    def get(self, image: str) -> Any: ...

    def list(self) -> list[Any]: ...

    def remove(self, image: str) -> None: ...

    def layer_dirs(self, info: Any) -> list[Path]: ...


# ---- runc ---------------------------------------------------------------------------------------------

class Runc:
    """The runc binary with this runtime's ``--root``."""

    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.root = root

    def path(self) -> str:
        found = shutil.which(self.binary)
        if found is None:
            raise UnavailableError(f"runc binary not found ({self.binary!r} is not in PATH); "
                                   f"install the runc package")
        return found

    def argv(self, *args: str) -> list[str]:
        return [self.path(), "--root", str(self.root), *args]

    async def call(self, *args: str, limit: float = 30.0) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(*self.argv(*args), stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), limit)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise InternalError(f"runc {args[0]} timed out after {limit:.0f}s") from None
        return proc.returncode or 0, out.decode(errors="replace").strip()

    async def state(self, container_id: str) -> dict[str, Any] | None:
        rc, out = await self.call("state", container_id)
        if rc != 0:
            return None
        try:
            return json.loads(out)
        except ValueError:
            return None

    async def kill(self, container_id: str, sig: str) -> None:
        rc, out = await self.call("kill", container_id, sig)
        if rc != 0 and "not running" not in out and "does not exist" not in out:
            log.info("runc kill %s %s: %s", container_id, sig, out)

    async def delete(self, container_id: str) -> None:
        rc, out = await self.call("delete", "--force", container_id)
        if rc != 0 and "does not exist" not in out:
            raise InternalError(f"runc delete {container_id}: {out}")


# ---- the record ---------------------------------------------------------------------------------------

@dataclass
class Container:
    id: str
    sandbox_id: str
    metadata: dict[str, Any]
    image: str
    image_ref: str
    created_at: int
    log_path: str
    labels: dict[str, str]
    annotations: dict[str, str]
    tty: bool
    cgroups_path: str
    lower_dirs: list[str]
    mounts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ShimReport:
    """What the shim has written to the state dir so far."""

    shim_pid: int = 0
    started: dict[str, Any] | None = None
    exit: dict[str, Any] | None = None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead: its exit file is all that is left to read.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


# ---- building the OCI spec ----------------------------------------------------------------------------

def process_args(image_config: dict[str, Any], command: Sequence[str], args: Sequence[str]) -> list[str]:
    """Kubernetes' rule: ``command`` replaces the image Entrypoint, ``args`` the image Cmd; a command
    without args drops the image's Cmd too."""
    entrypoint = list(image_config.get("Entrypoint") or [])
    cmd = list(image_config.get("Cmd") or [])
    if command:
        return [*command, *args]
    return [*entrypoint, *(args or cmd)]


def merge_env(image_env: Sequence[str], envs: Sequence[dict[str, Any]], extra: dict[str, str]) -> list[str]:
    merged: dict[str, str] = {}
    for item in image_env:
        key, _, value = str(item).partition("=")
        merged[key] = value
    merged.setdefault("PATH", DEFAULT_PATH)
    for key, value in extra.items():
        merged.setdefault(key, value)
    for e in envs:
        merged[str(e.get("key", ""))] = str(e.get("value", ""))
    merged.pop("", None)
    return [f"{k}={v}" for k, v in merged.items()]


def _inside(rootfs: Path, rel: str) -> Path | None:
    """``rootfs/rel`` with symlinks resolved as the container would, or None if it leaves the rootfs."""
    path = (rootfs / rel.lstrip("/")).resolve()
    try:
        path.relative_to(rootfs.resolve())
    except ValueError:
        return None
    return path


def _db(rootfs: Path, name: str) -> list[list[str]]:
    path = _inside(rootfs, f"etc/{name}")
    if path is None:
        return []
    try:
        return [line.split(":") for line in path.read_text(errors="replace").splitlines() if ":" in line]
    except OSError:
        return []


def resolve_user(user: str, rootfs: Path) -> tuple[int, int, list[int]]:
    """The image config's User (``uid``, ``uid:gid``, ``name``, ``name:group``) as numbers, looked up in
    the container's /etc/passwd and /etc/group as Docker does."""
    user = (user or "").strip()
    if not user:
        return 0, 0, []
    name, _, group = user.partition(":")
    passwd = _db(rootfs, "passwd")
    entry = None
    if name.isdigit():
        uid = int(name)
        entry = next((p for p in passwd if len(p) > 3 and p[2] == name), None)
    else:
        entry = next((p for p in passwd if len(p) > 3 and p[0] == name), None)
        if entry is None:
            raise InvalidArgumentError(f"unable to find user {name}: no matching entries in passwd file")
        uid = int(entry[2])
    gid = int(entry[3]) if entry is not None and entry[3].isdigit() else 0
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            g = next((g for g in _db(rootfs, "group") if len(g) > 2 and g[0] == group), None)
            if g is None:
                raise InvalidArgumentError(f"unable to find group {group}: no matching entries in group file")
            gid = int(g[2])
    username = entry[0] if entry is not None else ""
    extra = sorted({int(g[2]) for g in _db(rootfs, "group")
                    if len(g) > 3 and username and username in g[3].split(",") and g[2].isdigit()} - {gid})
    return uid, gid, extra


def _bind(destination: str, source: str, readonly: bool) -> dict[str, Any]:
    return {"destination": destination, "type": "bind", "source": source,
            "options": ["rbind", "rprivate", "ro" if readonly else "rw"]}


def build_spec(*, args: list[str], env: list[str], cwd: str, uid: int, gid: int, additional_gids: list[int],
               tty: bool, hostname: str, netns: str, pod_dir: Path, user_mounts: list[dict[str, Any]],
               cgroups_path: str, resources: dict[str, Any]) -> dict[str, Any]:
    """The bundle's config.json: new pid/ipc/uts/mount namespaces, the pod's network namespace by path."""
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        # runc mounts the container's own cgroups here (read-only), so it sees its limits as Docker's do.
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]
    taken = {m["containerPath"] for m in user_mounts}
    for name in ("hosts", "hostname", "resolv.conf"):
        if f"/etc/{name}" not in taken:
            mounts.append(_bind(f"/etc/{name}", str(pod_dir / name), readonly=False))
    mounts.extend(_bind(m["containerPath"], m["hostPath"], bool(m.get("readonly"))) for m in user_mounts)
    linux_resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    cpu: dict[str, Any] = {}
    if resources.get("cpuShares"):
        cpu["shares"] = int(resources["cpuShares"])
    if resources.get("cpuQuota"):
        cpu["quota"] = int(resources["cpuQuota"])
    if resources.get("cpuPeriod"):
        cpu["period"] = int(resources["cpuPeriod"])
    if cpu:
        linux_resources["cpu"] = cpu
    if resources.get("memoryLimitInBytes"):
        linux_resources["memory"] = {"limit": int(resources["memoryLimitInBytes"])}
    process: dict[str, Any] = {
        "terminal": tty,
        "user": {"uid": uid, "gid": gid, **({"additionalGids": additional_gids} if additional_gids else {})},
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": {k: list(DEFAULT_CAPS) for k in ("bounding", "effective", "permitted")},
        "noNewPrivileges": True,
    }
    if resources.get("oomScoreAdj") is not None:
        process["oomScoreAdj"] = int(resources["oomScoreAdj"])
    return {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": "rootfs", "readonly": False},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": linux_resources,
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                           {"type": "network", "path": netns}],
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    }


# ---- overlay ------------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def mount_overlay(lower_dirs: Sequence[str], upper: Path, work: Path, target: Path) -> None:
    for d in (*lower_dirs, str(upper), str(work)):
        if any(c in d for c in ":,"):
            raise InternalError(f"overlay cannot use a directory whose path holds ':' or ',': {d}")
    upper.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    if os.path.ismount(target):
        return
    # overlay lists the top layer first; the image store gives the lowest first.
    options = f"lowerdir={':'.join(reversed(lower_dirs))},upperdir={upper},workdir={work}"
    if len(options) >= 4096:
        raise InternalError(f"overlay options for {len(lower_dirs)} layers exceed a page; "
                            f"the image has too many layers for this runtime")
    if _libc.mount(b"overlay", str(target).encode(), b"overlay", 0, options.encode()) != 0:
        err = ctypes.get_errno()
        raise InternalError(f"mounting the container's overlay rootfs at {target}: {os.strerror(err)}")


def unmount(target: Path) -> None:
    while os.path.ismount(target):
        if _libc.umount2(str(target).encode(), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            raise InternalError(f"unmounting {target}: {os.strerror(err)}")


# ---- the store ----------------------------------------------------------------------------------------

class ContainerStore:
    """The containers of one runtime."""

    def __init__(self, root: Path, state: Path, runc: Runc, *, cgroup_parent: str = "minikube-py") -> None:
        self.dir = root / "containers"
        self.state_dir = state / "containers"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.runc = runc
        self.cgroup_parent = cgroup_parent.strip("/")
        self.containers: dict[str, Container] = {}
        self._shims: set[asyncio.Task[None]] = set()
        self._load()

    def _load(self) -> None:
        for path in sorted(self.dir.glob("*/container.json")):
            try:
                c = Container(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError) as e:
                log.warning("skipping unreadable container record %s: %s", path, e)
                continue
            self.containers[c.id] = c

    def bundle(self, container_id: str) -> Path:
        return self.dir / container_id

    def shim_dir(self, container_id: str) -> Path:
        return self.state_dir / container_id

    def save(self, c: Container) -> None:
        path = self.bundle(c.id) / "container.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(c)))
        os.replace(tmp, path)

    def get(self, container_id: str) -> Container:
        c = self.containers.get(container_id)
        if c is None:
            raise NotFoundError(f"container {container_id!r} not found")
        return c

    def in_sandbox(self, sandbox_id: str) -> list[Container]:
        return [c for c in self.containers.values() if c.sandbox_id == sandbox_id]

    # -- create ---------------------------------------------------------------------------------

    def create(self, container_id: str, sb: Sandbox, pod_dir: Path, config: Any, images: ImageService) -> Container:
        if sb.state != READY:
            raise InvalidArgumentError(f"pod sandbox {sb.id} is not ready")
        if not isinstance(config, dict):
            raise InvalidArgumentError("config must be an object")
        meta = config.get("metadata")
        if not isinstance(meta, dict) or not meta.get("name"):
            raise InvalidArgumentError("config.metadata.name is required")
        metadata = {"name": str(meta["name"]), "attempt": int(meta.get("attempt") or 0)}
        for other in self.in_sandbox(sb.id):
            if other.metadata == metadata:
                raise InvalidArgumentError(f"container name {metadata['name']!r} (attempt {metadata['attempt']}) "
                                           f"is already in use by {other.id} in pod sandbox {sb.id}")
        image = (config.get("image") or {}).get("image") if isinstance(config.get("image"), dict) else None
        if not image:
            raise InvalidArgumentError("config.image.image is required")
        info = images.get(str(image))
        if info is None:
            raise NotFoundError(f"image {image!r} not found on this node; pull it first")
        log_path = str(config.get("logPath") or "")
        if log_path and not os.path.isabs(log_path):
            raise InvalidArgumentError(f"logPath {log_path!r} must be absolute")
        user_mounts = self._user_mounts(config.get("mounts") or [])
        command, args = _str_list(config.get("command"), "command"), _str_list(config.get("args"), "args")
        argv = process_args(info.config or {}, command, args)
        if not argv:
            raise InvalidArgumentError("no command specified: the image has no Entrypoint or Cmd and the "
                                       "container gives no command")
        linux = config.get("linux") if isinstance(config.get("linux"), dict) else {}
        resources = linux.get("resources") if isinstance(linux.get("resources"), dict) else {}
        security = linux.get("securityContext") if isinstance(linux.get("securityContext"), dict) else {}
        envs = config.get("envs") or []
        if not isinstance(envs, list) or not all(isinstance(e, dict) for e in envs):
            raise InvalidArgumentError("envs must be a list of {key, value}")
        tty = bool(config.get("tty"))
        layers = [str(p) for p in images.layer_dirs(info)]
        bundle = self.bundle(container_id)
        c = Container(
            id=container_id, sandbox_id=sb.id, metadata=metadata,
            image=_image_name(info, str(image)), image_ref=str(info.id), created_at=time.time_ns(),
            log_path=log_path, labels=_str_map(config.get("labels")), annotations=_str_map(config.get("annotations")),
            tty=tty, cgroups_path=f"/{self.cgroup_parent}/{container_id}", lower_dirs=layers, mounts=user_mounts)
        bundle.mkdir(parents=True)
        try:
            mount_overlay(layers, bundle / "upper", bundle / "work", bundle / "rootfs")
            uid, gid, groups = resolve_user(str((info.config or {}).get("User") or ""), bundle / "rootfs")
            uid, gid = _run_as(security, uid, gid)
            extra_env = {"HOSTNAME": sb.hostname, **({"TERM": "xterm"} if tty else {})}
            spec = build_spec(
                args=argv, env=merge_env((info.config or {}).get("Env") or [], envs, extra_env),
                cwd=str(config.get("workingDir") or (info.config or {}).get("WorkingDir") or "/"),
                uid=uid, gid=gid, additional_gids=groups, tty=tty, hostname=sb.hostname, netns=sb.netns,
                pod_dir=pod_dir, user_mounts=user_mounts, cgroups_path=c.cgroups_path, resources=resources)
            (bundle / "config.json").write_text(json.dumps(spec, indent=1))
            self.save(c)
        except BaseException:
            with contextlib.suppress(Exception):
                unmount(bundle / "rootfs")
            shutil.rmtree(bundle, ignore_errors=True)
            raise
        self.containers[c.id] = c
        return c

    @staticmethod
    def _user_mounts(mounts: Any) -> list[dict[str, Any]]:
        if not isinstance(mounts, list):
            raise InvalidArgumentError("mounts must be a list")
        out = []
        for m in mounts:
            if not isinstance(m, dict):
                raise InvalidArgumentError("each mount must be an object")
            cpath, hpath = str(m.get("containerPath") or ""), str(m.get("hostPath") or "")
            if not cpath.startswith("/"):
                raise InvalidArgumentError(f"mount containerPath {cpath!r} must be absolute")
            if not hpath.startswith("/"):
                raise InvalidArgumentError(f"mount hostPath {hpath!r} must be absolute")
            if not os.path.exists(hpath):
                raise InvalidArgumentError(f"mount hostPath {hpath} does not exist")
            out.append({"containerPath": cpath, "hostPath": hpath, "readonly": bool(m.get("readonly"))})
        return out

    # -- start ----------------------------------------------------------------------------------

    async def start(self, c: Container) -> None:
        state = await self.state_of(c)
        if state != CREATED or self.report(c.id).shim_pid:
            raise InvalidArgumentError(f"container {c.id} is {state_word(state)}, not created; it cannot be started")
        runc = self.runc.path()
        bundle = self.bundle(c.id)
        mount_overlay(c.lower_dirs, bundle / "upper", bundle / "work", bundle / "rootfs")  # gone after a reboot
        shim_dir = self.shim_dir(c.id)
        shim_dir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "minikube_py.runtime.shim", "--id", c.id, "--bundle", str(bundle),
                "--state-dir", str(shim_dir), "--root", str(self.runc.root), "--runc", runc,
                "--log-path", c.log_path, "--cgroup", c.cgroups_path, *(["--tty"] if c.tty else [])]
        shim_log = os.open(shim_dir / "shim.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=shim_log, stderr=shim_log, cwd="/",
                start_new_session=True, env={**os.environ, "PYTHONPATH": _package_root()})
        finally:
            os.close(shim_log)
        (shim_dir / "shim.pid").write_text(str(proc.pid))
        # Reap the shim when it ends (a restarted daemon's shims are re-parented to init instead).
        task = asyncio.ensure_future(proc.wait())
        self._shims.add(task)
        task.add_done_callback(self._shims.discard)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            report = self.report(c.id)
            if report.exit is not None:
                if report.exit.get("reason") == "ContainerCannotRun":
                    raise InternalError(f"failed to start container {c.id}: {report.exit.get('message')}")
                return
            if report.started is not None:
                return
            if proc.returncode is not None:
                text = (shim_dir / "shim.log").read_text(errors="replace").strip()[-2000:]
                raise InternalError(f"the shim of container {c.id} exited before starting it: {text}")
            await asyncio.sleep(POLL)
        raise InternalError(f"container {c.id} did not start within {START_TIMEOUT:.0f}s")

    # -- status ---------------------------------------------------------------------------------

    def report(self, container_id: str) -> ShimReport:
        d = self.shim_dir(container_id)
        pid = 0
        with contextlib.suppress(OSError, ValueError):
            pid = int((d / "shim.pid").read_text().strip())
        return ShimReport(pid, _read_json(d / "started.json"), _read_json(d / "exit.json"))

    async def state_of(self, c: Container) -> str:
        report = self.report(c.id)
        if report.exit is not None:
            return EXITED
        if report.started is None:
            if report.shim_pid and not _pid_alive(report.shim_pid):
                return UNKNOWN  # the shim died before it could say anything
            return CREATED
        if _pid_alive(report.shim_pid):
            return RUNNING
        # The shim is gone without an exit record (killed): ask runc.
        st = await self.runc.state(c.id)
        return RUNNING if st and st.get("status") in ("running", "paused") else UNKNOWN

    async def status(self, c: Container) -> dict[str, Any]:
        report = self.report(c.id)
        state = await self.state_of(c)
        exit_info = report.exit or {}
        return {
            "id": c.id,
            "podSandboxId": c.sandbox_id,
            "metadata": c.metadata,
            "state": state,
            "createdAt": c.created_at,
            "startedAt": int((report.started or {}).get("startedAt") or 0),
            "finishedAt": int(exit_info.get("finishedAt") or 0),
            "exitCode": int(exit_info.get("exitCode") or 0),
            "reason": str(exit_info.get("reason") or ""),
            "message": str(exit_info.get("message") or ""),
            "image": {"image": c.image},
            "imageRef": c.image_ref,
            "labels": c.labels,
            "annotations": c.annotations,
            "mounts": c.mounts,
            "logPath": c.log_path,
        }

    async def summary(self, c: Container) -> dict[str, Any]:
        return {"id": c.id, "podSandboxId": c.sandbox_id, "metadata": c.metadata, "image": {"image": c.image},
                "imageRef": c.image_ref, "state": await self.state_of(c), "createdAt": c.created_at,
                "labels": c.labels, "annotations": c.annotations}

    # -- stop and remove ------------------------------------------------------------------------

    async def stop(self, c: Container, grace: float) -> None:
        """SIGTERM, up to ``grace`` seconds for the container to exit, then SIGKILL (docker stop's way)."""
        if await self.state_of(c) != RUNNING:
            return
        if grace > 0:
            await self.runc.kill(c.id, "TERM")
            if await self._wait_exit(c, grace):
                return
        await self.runc.kill(c.id, "KILL")
        if not await self._wait_exit(c, KILL_WAIT):
            raise InternalError(f"container {c.id} did not exit within {KILL_WAIT:.0f}s of SIGKILL")

    async def _wait_exit(self, c: Container, within: float) -> bool:
        deadline = time.monotonic() + within
        while True:
            report = self.report(c.id)
            if report.exit is not None:
                return True
            if report.started is not None and not _pid_alive(report.shim_pid):
                st = await self.runc.state(c.id)
                if not st or st.get("status") == "stopped":
                    # Nobody is left to record the exit; record what is known.
                    _write_json(self.shim_dir(c.id) / "exit.json",
                                {"exitCode": 137, "finishedAt": time.time_ns(), "reason": "Error",
                                 "message": "the container's shim was gone; its exit code is unknown"})
                    return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL)

    async def remove(self, container_id: str) -> None:
        """Stop it if needed, delete it from runc, unmount and delete everything of it. Idempotent."""
        c = self.containers.get(container_id)
        if c is None:
            return
        await self.stop(c, 0)
        if self.report(c.id).shim_pid:  # never started: runc never heard of it (and may be missing)
            await self.runc.delete(c.id)
        bundle = self.bundle(c.id)
        unmount(bundle / "rootfs")
        shutil.rmtree(self.shim_dir(c.id), ignore_errors=True)
        shutil.rmtree(bundle, ignore_errors=True)
        self.containers.pop(c.id, None)

    # -- exec -----------------------------------------------------------------------------------

    def exec_argv(self, c: Container, cmd: Sequence[str], *, tty: bool = False,
                  pid_file: Path | None = None) -> list[str]:
        opts = ["-t"] if tty else []
        if pid_file is not None:
            opts += ["--pid-file", str(pid_file)]
        return self.runc.argv("exec", *opts, c.id, *cmd)

    async def require_running(self, c: Container) -> None:
        state = await self.state_of(c)
        if state != RUNNING:
            raise InvalidArgumentError(f"container {c.id} is {state_word(state)}, not running")

    async def exec_sync(self, c: Container, cmd: Sequence[str], time_limit: float) -> dict[str, Any]:
        """runc exec, output captured; past ``time_limit`` seconds (0: none) the command is killed."""
        if not cmd:
            raise InvalidArgumentError("cmd must not be empty")
        await self.require_running(c)
        pid_file = self.shim_dir(c.id) / f"exec-{os.urandom(6).hex()}.pid"
        proc = await asyncio.create_subprocess_exec(
            *self.exec_argv(c, cmd, pid_file=pid_file), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            stdout_task = asyncio.ensure_future(_read_capped(proc.stdout))
            stderr_task = asyncio.ensure_future(_read_capped(proc.stderr))
            try:
                await asyncio.wait_for(proc.wait(), time_limit if time_limit > 0 else None)
            except TimeoutError:
                # runc cannot forward SIGKILL: kill the command inside the container by its pid.
                with contextlib.suppress(OSError, ValueError):
                    os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise DeadlineExceededError(f"command {list(cmd)} timed out after {time_limit:g}s") from None
            out, err = await asyncio.gather(stdout_task, stderr_task)
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            with contextlib.suppress(FileNotFoundError):
                pid_file.unlink()
        return {"stdout": base64.b64encode(out).decode(), "stderr": base64.b64encode(err).decode(),
                "exitCode": proc.returncode or 0}


async def _read_capped(stream: asyncio.StreamReader | None) -> bytes:
    """Everything up to MAX_EXEC_OUTPUT; the rest is read and dropped so the command never blocks."""
    if stream is None:
        return b""
    chunks, size = [], 0
    while data := await stream.read(64 * 1024):
        if size < MAX_EXEC_OUTPUT:
            chunks.append(data[:MAX_EXEC_OUTPUT - size])
        size += len(data)
    return b"".join(chunks)


def state_word(state: str) -> str:
    return state.removeprefix("CONTAINER_").lower()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _image_name(info: Any, requested: str) -> str:
    tags = list(getattr(info, "repo_tags", None) or [])
    return tags[0] if tags else requested


def _str_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgumentError(f"{what} must be a list of strings")
    return value


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _run_as(security: dict[str, Any], uid: int, gid: int) -> tuple[int, int]:
    """CRI's linux.securityContext runAsUser/runAsGroup ({"value": N}) override the image's user."""
    def value(key: str) -> int | None:
        v = security.get(key)
        if isinstance(v, dict):
            v = v.get("value")
        return int(v) if isinstance(v, int) and v >= 0 else None

    run_uid, run_gid = value("runAsUser"), value("runAsGroup")
    return (uid if run_uid is None else run_uid), (gid if run_gid is None else run_gid)


def _package_root() -> str:
    """The directory holding the minikube_py package, so the shim imports the same code as the daemon."""
    return str(Path(__file__).resolve().parents[2])
