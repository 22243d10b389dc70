"""Pod volumes on the node, under ``<root-dir>/pods/<uid>/volumes/<plugin>/<name>`` as the kubelet lays
them out, and the bind mounts the runtime gets for each container's ``volumeMounts``.

Supported: emptyDir (a directory; ``medium: Memory`` is a directory too, never a tmpfs left mounted),
hostPath (with its ``type`` checks and *OrCreate), configMap and secret (``items``, ``defaultMode``,
per-item ``mode``, ``optional``), downwardAPI, and projected volumes made of those and of
``serviceAccountToken`` sources (a TokenRequest bound to the pod, from ``sa_tokens``). Files are
rewritten on every sync, so a changed ConfigMap (or a refreshed token) reaches running containers
(they see the directory). A projected volume is written as Kubernetes' AtomicWriter does: the files
in a timestamped directory, ``..data`` a symlink to it swapped by one rename, and each visible name a
symlink through ``..data`` — a reader never sees a new token beside an old CA, or half a set.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import secrets
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minikube_py.kubelet.envvars import ContainerConfigError, ObjectGetter, _data_of, field_value, resource_value

if TYPE_CHECKING:
    from minikube_py.kubelet.sa_tokens import TokenManager

log = logging.getLogger("minikube_py.kubelet.volumes")

DEFAULT_MODE = 0o644
# Plugin directory names as the kubelet uses them, so an operator finds volumes where they expect.
PLUGIN_DIRS = {"emptyDir": "kubernetes.io~empty-dir", "hostPath": "kubernetes.io~host-path",
               "configMap": "kubernetes.io~configmap", "secret": "kubernetes.io~secret",
               "downwardAPI": "kubernetes.io~downward-api", "projected": "kubernetes.io~projected"}


class VolumeError(ContainerConfigError):
    """A volume cannot be set up (the pod waits, reason CreateContainerConfigError, with this message)."""


def volume_kind(volume: dict[str, Any]) -> str | None:
    return next((k for k in PLUGIN_DIRS if volume.get(k) is not None), None)


def _safe_relpath(path: str, what: str) -> str:
    parts = Path(path).parts
    if not path or path.startswith("/") or ".." in parts:
        raise VolumeError(f"{what} {path!r} must be a relative path without '..'")
    return path


def write_files(target: Path, files: dict[str, tuple[bytes, int]]) -> None:
    """Make ``target`` hold exactly ``files`` (relative path -> (content, mode)); each file is replaced
    atomically, so a reader never sees half a file."""
    target.mkdir(parents=True, exist_ok=True)
    wanted = set()
    for rel, (content, mode) in files.items():
        path = target / _safe_relpath(rel, "file path")
        wanted.add(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file(path, content, mode)
    for path in sorted(target.rglob("*"), reverse=True):
        if path.is_file() and path not in wanted:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


DATA_LINK = "..data"


def write_atomic(target: Path, files: dict[str, tuple[bytes, int]]) -> bool:
    """Make ``target`` show exactly ``files`` the AtomicWriter way (see the module's docstring); returns
    whether anything changed. Kubernetes reserves names starting with ``..`` for this layout."""
    target.mkdir(parents=True, exist_ok=True)
    tops = set()
    for rel in files:
        _safe_relpath(rel, "file path")
        top = Path(rel).parts[0]
        if top.startswith(".."):
            raise VolumeError(f"file path {rel!r} must not start with '..'")
        tops.add(top)
    link = target / DATA_LINK
    current = os.readlink(link) if link.is_symlink() else None
    if current is None or _read_tree(target / current) != files:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y_%m_%d_%H_%M_%S")
        new_dir = target / f"..{stamp}.{secrets.token_hex(4)}"
        new_dir.mkdir(mode=0o755)
        for rel, (content, mode) in files.items():
            path = new_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            os.chmod(path, mode)
        tmp_link = target / f"{DATA_LINK}_tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp_link.unlink()
        tmp_link.symlink_to(new_dir.name)
        os.replace(tmp_link, link)  # the one atomic step: readers go from the old set to the new
        current = new_dir.name
        changed = True
    else:
        changed = False
    for top in tops:
        visible = target / top
        if not (visible.is_symlink() and os.readlink(visible) == f"{DATA_LINK}/{top}"):
            _remove(visible)
            visible.symlink_to(f"{DATA_LINK}/{top}")
    for entry in target.iterdir():
        if entry.name not in tops and entry.name not in (DATA_LINK, current):
            _remove(entry)  # old timestamped sets, names no longer projected, files of an older layout
    return changed


def _read_tree(root: Path) -> dict[str, tuple[bytes, int]] | None:
    if not root.is_dir():
        return None
    out = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(root))] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    return out


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def write_file(path: Path, content: bytes, mode: int) -> None:
    """Replace ``path`` atomically (unless it already holds ``content`` with ``mode``)."""
    try:
        if path.read_bytes() == content and stat.S_IMODE(path.stat().st_mode) == mode:
            return
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _items(data: dict[str, str], items: list[dict[str, Any]] | None, mode: int, where: str,
           optional: bool) -> dict[str, tuple[bytes, int]]:
    if not items:
        return {k: (v.encode(), mode) for k, v in data.items()}
    out = {}
    for item in items:
        key = str(item.get("key") or "")
        if key not in data:
            if optional:
                continue
            raise VolumeError(f"configmap references non-existent config key: {key}" if where == "configMap"
                              else f"references non-existent secret key: {key}")
        item_mode = item.get("mode")
        out[str(item.get("path") or key)] = (data[key].encode(), int(item_mode) if item_mode is not None else mode)
    return out


def downward_files(pod: dict[str, Any], items: list[dict[str, Any]], mode: int, pod_ip: str, host_ip: str,
                   allocatable: dict[str, str]) -> dict[str, tuple[bytes, int]]:
    out = {}
    containers = {c.get("name"): c for c in (pod.get("spec") or {}).get("containers") or ()}
    for item in items or ():
        path = str(item.get("path") or "")
        item_mode = int(item["mode"]) if item.get("mode") is not None else mode
        if item.get("fieldRef"):
            value = field_value(pod, str(item["fieldRef"].get("fieldPath") or ""), pod_ip, host_ip)
        elif item.get("resourceFieldRef"):
            ref = item["resourceFieldRef"]
            container = containers.get(ref.get("containerName")) or {}
            value = resource_value(container, ref, allocatable)
        else:
            continue
        out[path] = (value.encode(), item_mode)
    return out


class PodVolumes:
    """The volumes of one pod: set up (idempotent) and the mounts for each container."""

    def __init__(self, root: Path, pod: dict[str, Any]) -> None:
        self.pod = pod
        self.uid = str((pod.get("metadata") or {}).get("uid") or "")
        if not self.uid or "/" in self.uid or self.uid in (".", ".."):
            raise VolumeError(f"pod uid {self.uid!r} cannot name a directory")
        self.pod_dir = root / "pods" / self.uid
        self.paths: dict[str, Path] = {}   # volume name -> host path
        self.read_only: set[str] = set()
        self.tokens: TokenManager | None = None

    def volume_dir(self, kind: str, name: str) -> Path:
        return self.pod_dir / "volumes" / PLUGIN_DIRS[kind] / name

    async def setup(self, get: ObjectGetter, *, pod_ip: str = "", host_ip: str = "",
                    allocatable: dict[str, str] | None = None, tokens: TokenManager | None = None) -> None:
        """Write every volume (again); ``tokens`` serves ``serviceAccountToken`` projections."""
        self.tokens = tokens
        namespace = str((self.pod.get("metadata") or {}).get("namespace") or "default")
        for volume in (self.pod.get("spec") or {}).get("volumes") or ():
            name = str(volume.get("name") or "")
            kind = volume_kind(volume)
            if not name or kind is None:
                raise VolumeError(f"volume {name!r}: unsupported volume type (supported: {', '.join(PLUGIN_DIRS)})")
            src = volume[kind] or {}
            if kind == "hostPath":
                self.paths[name] = host_path(str(src.get("path") or ""), str(src.get("type") or ""))
                continue
            target = self.volume_dir(kind, name)
            if kind == "emptyDir":
                target.mkdir(parents=True, exist_ok=True)
                os.chmod(target, 0o777)  # as the kubelet: any container user may write its emptyDir
            else:
                files = await self._files(kind, src, namespace, get, pod_ip, host_ip, allocatable or {})
                if kind == "projected":
                    write_atomic(target, files)
                else:
                    write_files(target, files)
                self.read_only.add(name)
            self.paths[name] = target

    async def _files(self, kind: str, src: dict[str, Any], namespace: str, get: ObjectGetter, pod_ip: str,
                     host_ip: str, allocatable: dict[str, str]) -> dict[str, tuple[bytes, int]]:
        mode = int(src["defaultMode"]) if src.get("defaultMode") is not None else DEFAULT_MODE
        if kind == "downwardAPI":
            return downward_files(self.pod, src.get("items") or [], mode, pod_ip, host_ip, allocatable)
        if kind in ("configMap", "secret"):
            return await self._object_files(kind, src, namespace, get, mode)
        files: dict[str, tuple[bytes, int]] = {}
        for source in src.get("sources") or ():   # projected
            for sub in ("configMap", "secret"):
                if source.get(sub) is not None:
                    files.update(await self._object_files(sub, source[sub], namespace, get, mode))
            if source.get("downwardAPI") is not None:
                files.update(downward_files(self.pod, source["downwardAPI"].get("items") or [], mode, pod_ip,
                                            host_ip, allocatable))
            if source.get("serviceAccountToken") is not None:
                files.update(await self._token_file(source["serviceAccountToken"], mode))
        return files

    async def _token_file(self, src: dict[str, Any], mode: int) -> dict[str, tuple[bytes, int]]:
        if self.tokens is None:
            # A kubelet without an API client for tokens (fake nodes): nothing to write.
            log.info("pod %s: no token source; serviceAccountToken projection skipped", self.uid)
            return {}
        path = _safe_relpath(str(src.get("path") or ""), "serviceAccountToken path")
        audience = src.get("audience")
        token = await self.tokens.token(self.pod, [audience] if audience else [], src.get("expirationSeconds"))
        return {path: (token.encode(), mode)}

    async def _object_files(self, kind: str, src: dict[str, Any], namespace: str, get: ObjectGetter, mode: int
                            ) -> dict[str, tuple[bytes, int]]:
        plural = "configmaps" if kind == "configMap" else "secrets"
        name = str(src.get("name") or src.get("secretName") or "")
        optional = bool(src.get("optional"))
        obj = await get(plural, namespace, name)
        if obj is None:
            if optional:
                return {}
            raise VolumeError(f'{"configmap" if kind == "configMap" else "secret"} "{name}" not found')
        return _items(_data_of(obj, plural), src.get("items"), mode, kind, optional)

    def mounts(self, container: dict[str, Any]) -> list[dict[str, Any]]:
        """The runtime's ``mounts`` for ``container``'s volumeMounts (set up first)."""
        out = []
        for vm in container.get("volumeMounts") or ():
            name = str(vm.get("name") or "")
            if name not in self.paths:
                raise VolumeError(f'container "{container.get("name")}": volumeMount "{name}" has no volume')
            host = self.paths[name]
            if vm.get("subPath"):
                host = host / _safe_relpath(str(vm["subPath"]), "subPath")
                if not host.exists():
                    host.mkdir(parents=True, exist_ok=True)
            out.append({"containerPath": str(vm.get("mountPath") or ""), "hostPath": str(host),
                        "readonly": bool(vm.get("readOnly")) or name in self.read_only})
        return out

    def write_etc_hosts(self, pod_ip: str) -> Path:
        """The pod's /etc/hosts (the kubelet's ``etc-hosts``): localhost, the pod's own name, hostAliases."""
        spec = self.pod.get("spec") or {}
        hostname = str(spec.get("hostname") or (self.pod.get("metadata") or {}).get("name") or "")
        lines = ["# Kubernetes-managed hosts file.", "127.0.0.1\tlocalhost",
                 "::1\tlocalhost ip6-localhost ip6-loopback", "fe00::0\tip6-localnet", "fe00::0\tip6-mcastprefix",
                 "fe00::1\tip6-allnodes", "fe00::2\tip6-allrouters"]
        if pod_ip:
            fqdn = f"{hostname}.{spec['subdomain']}.{self.pod['metadata'].get('namespace')}.svc.cluster.local" \
                if spec.get("subdomain") else ""
            lines.append(f"{pod_ip}\t{fqdn}\t{hostname}" if fqdn else f"{pod_ip}\t{hostname}")
        aliases = spec.get("hostAliases") or ()
        if aliases:
            lines.append("\n# Entries added by HostAliases.")
            for alias in aliases:
                lines.append(f"{alias.get('ip')}\t" + "\t".join(alias.get("hostnames") or ()))
        path = self.pod_dir / "etc-hosts"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file(path, ("\n".join(lines) + "\n").encode(), 0o644)
        return path

    def teardown(self) -> None:
        """Remove the pod's directory (its emptyDirs and written volumes); hostPaths are never touched."""
        if self.pod_dir.exists():
            _assert_no_mounts(self.pod_dir)
            shutil.rmtree(self.pod_dir, ignore_errors=True)


def _assert_no_mounts(path: Path) -> None:
    # A bind mount under the pod dir would let rmtree reach into the host's files.
    prefix = str(path.resolve()) + "/"
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            if len(fields) > 4 and fields[4].startswith(prefix):
                raise VolumeError(f"{fields[4]} is still mounted; not removing {path}")


def host_path(path: str, kind: str) -> Path:
    """A hostPath volume's path, checked (or created) per its ``type``."""
    if not path.startswith("/"):
        raise VolumeError(f"hostPath {path!r} must be absolute")
    p = Path(path)
    if kind == "DirectoryOrCreate":
        p.mkdir(mode=0o755, parents=True, exist_ok=True)
    elif kind == "FileOrCreate":
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch(mode=0o644, exist_ok=True)
    checks = {"Directory": p.is_dir, "DirectoryOrCreate": p.is_dir, "File": p.is_file, "FileOrCreate": p.is_file,
              "Socket": p.is_socket, "CharDevice": p.is_char_device, "BlockDevice": p.is_block_device}
    if kind in checks and not checks[kind]():
        raise VolumeError(f"hostPath type check failed: {path} is not a {kind.removesuffix('OrCreate')}")
    if kind and kind not in checks:
        raise VolumeError(f"hostPath type {kind!r} is not supported")
    if not kind and not p.exists():
        # An untyped hostPath is created as a directory by the runtime in Kubernetes; do the same.
        p.mkdir(mode=0o755, parents=True, exist_ok=True)
    return p
