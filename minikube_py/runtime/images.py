"""The node's image store: pull OCI / Docker v2 images and keep their layers unpacked for overlayfs.

Layout under ``root``::

    blobs/sha256/<hex>     every manifest, config and compressed layer, named by its digest
    layers/<diffid hex>/   each layer unpacked once, whiteouts already in overlayfs form
    index.json             which images exist, their tags/digests and layer lists (survives restarts)
    tmp/                   partial downloads and unpacks; emptied on start

Whiteouts become what overlayfs understands natively, so the runtime mounts the layer directories
as ``lowerdir``s without any further translation: ``.wh.NAME`` turns into a 0/0 character device
``NAME`` and ``.wh..wh..opq`` into the ``trusted.overlay.opaque=y`` xattr on its directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import gzip
import hashlib
import json
import logging
import os
import platform
import shutil
import stat
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

from minikube_py.runtime.registry_client import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    INDEX_TYPES,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    InvalidReference,
    Reference,
    RegistryClient,
    RegistryError,
    is_digest,
    parse_reference,
)

log = logging.getLogger("minikube_py.runtime.images")

DEFAULT_STORE_ROOT = Path("/var/lib/minikube-py/runtime/images")
INDEX_VERSION = 1
_LAYER_TYPES = (OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, DOCKER_LAYER_GZIP,
                "application/vnd.docker.image.rootfs.diff.tar")
_CONFIG_TYPES = (OCI_CONFIG, DOCKER_CONFIG)
_MAX_CONFIG_BYTES = 8 * 1024 * 1024
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"


class ImagePullError(Exception):
    """Pulling failed; the message is what ``kubectl describe pod`` should show."""


class InvalidImageName(ImagePullError, ValueError):
    """The reference itself is malformed (the kubelet's InvalidImageName)."""


class LayerError(Exception):
    """A layer archive that must not be unpacked (corrupt, or trying to escape its directory)."""


@dataclass
class ImageInfo:
    id: str                        # sha256:... of the image config
    repo_tags: list[str]
    repo_digests: list[str]
    size: int                      # config + compressed layers, as registries count it
    config: dict[str, Any]         # the image config's "config" section (Entrypoint, Cmd, Env, ...)


@dataclass
class _Record:
    info: ImageInfo
    diff_ids: list[str]
    blobs: list[str] = field(default_factory=list)   # config, layer and manifest digests to keep


def host_platform() -> tuple[str, str]:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    return "linux", arch


def _hex(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise LayerError(f"unsupported digest {digest!r}")
    return hexpart


class ImageStore:
    """Images pulled onto this node, for the runtime's image service.

    One store per root and per process, used from one event loop (the runtime daemon's): it empties
    ``tmp/`` when it starts and deduplicates pulls with asyncio primitives.
    """

    def __init__(self, root: Path, *, default_registry: str = "127.0.0.1:5000",
                 insecure_registries: Sequence[str] = ("*",), registry_mirrors: Sequence[str] = ()) -> None:
        self.root = Path(root)
        self.default_registry = default_registry
        self.insecure_registries = tuple(insecure_registries)
        # Other endpoints serving the default registry's images (an HA lab: every master runs a registry
        # with the demo images). Images keep the default registry's name whichever endpoint served them.
        self.registry_mirrors = tuple(m for m in registry_mirrors if m != default_registry)
        self._endpoint = default_registry   # the one that answered last: tried first
        self.blobs_dir = self.root / "blobs" / "sha256"
        self.layers_dir = self.root / "layers"
        self.tmp_dir = self.root / "tmp"
        for d in (self.blobs_dir, self.layers_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp_dir.iterdir():   # half-finished work of a previous run
            _remove_path(leftover)
        self._index_path = self.root / "index.json"
        self._records: dict[str, _Record] = self._load_index()
        self._index_lock = threading.Lock()
        self._inflight: dict[str, asyncio.Future[ImageInfo]] = {}
        self._layer_locks: dict[str, asyncio.Lock] = {}

    # -- references -----------------------------------------------------------------------------

    def normalize(self, image: str) -> str:
        """``demo/web`` -> ``<default registry>/demo/web:latest``; digests are kept as given."""
        return str(self._parse(image))

    def _parse(self, image: str) -> Reference:
        try:
            ref = parse_reference(image, self.default_registry)
        except InvalidReference as e:
            raise InvalidImageName(str(e)) from None
        if not ref.registry:
            raise InvalidImageName(f"invalid image name {image!r}: no registry in it and no default registry")
        return ref

    def _is_insecure(self, registry: str) -> bool:
        return any(fnmatch.fnmatchcase(registry, pattern) for pattern in self.insecure_registries)

    # -- queries --------------------------------------------------------------------------------

    def get(self, image: str) -> ImageInfo | None:
        """By id (``sha256:...`` or bare hex), by reference, or by normalized reference."""
        record = self._find(image)
        return _copy(record.info) if record else None

    def list(self) -> list[ImageInfo]:
        return [_copy(r.info) for r in self._records.values()]

    def layer_dirs(self, info: ImageInfo) -> list[Path]:
        """The unpacked layers of ``info``, lowest first (reverse them for overlay's lowerdir)."""
        record = self._records.get(info.id)
        if record is None:
            raise KeyError(f"image {info.id} is not in the store")
        return [self.layers_dir / _hex(d) for d in record.diff_ids]

    def _find(self, image: str) -> _Record | None:
        text = image.strip()
        if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
            text = "sha256:" + text
        if text in self._records:
            return self._records[text]
        try:
            ref = parse_reference(text, self.default_registry)
        except InvalidReference:
            return None
        for record in self._records.values():
            if ref.digest:
                if ref.with_digest(ref.digest) in record.info.repo_digests:
                    return record
            elif ref.tagged in record.info.repo_tags:
                return record
        return None

    # -- removal --------------------------------------------------------------------------------

    def remove(self, image: str) -> None:
        """Forget the image (all its tags) and delete layers and blobs no other image uses.

        Removing an image that is missing is not an error (CRI RemoveImage is idempotent). The
        caller must not remove an image whose layers are mounted by a running container.
        """
        record = self._find(image)
        if record is None:
            return
        with self._index_lock:
            self._records.pop(record.info.id, None)
            self._save_index()
            keep_layers = {d for r in self._records.values() for d in r.diff_ids}
            keep_blobs = {b for r in self._records.values() for b in r.blobs}
        for diff_id in record.diff_ids:
            if diff_id not in keep_layers:
                _remove_path(self.layers_dir / _hex(diff_id))
        for digest in record.blobs:
            if digest not in keep_blobs:
                with contextlib.suppress(FileNotFoundError):
                    (self.blobs_dir / _hex(digest)).unlink()

    # -- pulling --------------------------------------------------------------------------------

    async def pull(self, image: str) -> ImageInfo:
        """Pull ``image`` (idempotent); concurrent pulls of one reference share a single download."""
        ref = self._parse(image)
        key = str(ref)
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._pull(image, ref))
            self._inflight[key] = future
            future.add_done_callback(lambda f: self._pull_done(key, f))
        # Shielded: one caller giving up (a cancelled pod) must not cancel the others' pull.
        return _copy(await asyncio.shield(future))

    def _pull_done(self, key: str, future: asyncio.Future[ImageInfo]) -> None:
        self._inflight.pop(key, None)
        if not future.cancelled():
            future.exception()   # retrieved here so an abandoned failure is not logged as unhandled

    async def _pull(self, image: str, ref: Reference) -> ImageInfo:
        if ref.digest:
            known = self._find(str(ref))
            if known is not None and self._layers_present(known):
                return known.info
        try:
            return await self._pull_via_endpoints(ref)
        except (RegistryError, LayerError) as e:
            raise ImagePullError(f'failed to pull image "{image}": {e}') from None
        except aiohttp.ClientResponseError as e:
            raise ImagePullError(f'failed to pull image "{image}": {e.status} {e.message}') from None
        except (TimeoutError, aiohttp.ClientError) as e:
            why = str(e) or type(e).__name__
            tried = self._endpoints(ref.registry)[1:]
            also = f" nor its mirror(s) {', '.join(tried)}" if tried else ""
            raise ImagePullError(f'failed to pull image "{image}": cannot reach registry '
                                 f'{ref.registry}{also}: {why}') from None
        except OSError as e:
            raise ImagePullError(f'failed to pull image "{image}": {e}') from None

    def _endpoints(self, registry: str) -> list[str]:
        if registry != self.default_registry or not self.registry_mirrors:
            return [registry]
        every = [self.default_registry, *self.registry_mirrors]
        return [self._endpoint, *(e for e in every if e != self._endpoint)]

    async def _pull_via_endpoints(self, ref: Reference) -> ImageInfo:
        """Pull from the registry, or from the next endpoint of it when one cannot be reached at all (an
        answer, even an error, ends the search: the endpoints serve the same images)."""
        endpoints = self._endpoints(ref.registry)
        for i, endpoint in enumerate(endpoints):
            try:
                async with RegistryClient(endpoint, insecure=self._is_insecure(endpoint)) as rc:
                    info = await self._pull_from(rc, ref)
            except (TimeoutError, aiohttp.ClientConnectionError) as e:
                if i + 1 == len(endpoints):
                    raise
                log.warning("registry %s cannot be reached (%s); trying %s", endpoint, str(e) or type(e).__name__,
                            endpoints[i + 1])
                continue
            if ref.registry == self.default_registry:
                self._endpoint = endpoint
            return info
        raise AssertionError("unreachable: at least one endpoint")

    def _layers_present(self, record: _Record) -> bool:
        return all((self.layers_dir / _hex(d)).is_dir() for d in record.diff_ids)

    async def _pull_from(self, rc: RegistryClient, ref: Reference) -> ImageInfo:
        repo = ref.repository
        top = await rc.get_manifest(repo, ref.digest or ref.tag or "latest")
        manifest = top
        if top.media_type in INDEX_TYPES:
            chosen = _pick_platform(top.json())
            manifest = await rc.get_manifest(repo, chosen)
        doc = manifest.json()
        if doc.get("schemaVersion") != 2 or not isinstance(doc.get("config"), dict):
            raise RegistryError(0, "MANIFEST_INVALID",
                                f"unsupported manifest {manifest.media_type or '(no media type)'} "
                                "(only OCI and Docker schema 2 images are supported)")
        self._write_blob(top.digest, top.body)
        self._write_blob(manifest.digest, manifest.body)
        config_desc = doc["config"]
        config_digest = _descriptor_digest(config_desc)
        if config_desc.get("mediaType", OCI_CONFIG) not in _CONFIG_TYPES:
            raise RegistryError(0, "MANIFEST_INVALID",
                                f"not an image: config type {config_desc.get('mediaType')}")
        config = await self._fetch_config(rc, repo, config_desc)
        layers = doc.get("layers")
        diff_ids = (config.get("rootfs") or {}).get("diff_ids")
        if not isinstance(layers, list) or not isinstance(diff_ids, list) or len(layers) != len(diff_ids):
            raise RegistryError(0, "MANIFEST_INVALID",
                                "manifest layers do not match the config's rootfs.diff_ids")
        for diff_id in diff_ids:
            _hex(str(diff_id))
        await asyncio.gather(*(self._ensure_layer(rc, repo, desc, str(diff_id))
                               for desc, diff_id in zip(layers, diff_ids, strict=True)))
        size = int(config_desc.get("size", 0)) + sum(int(desc.get("size", 0)) for desc in layers)
        info = ImageInfo(id=config_digest, repo_tags=[], repo_digests=[], size=size,
                         config=dict(config.get("config") or {}))
        blobs = [config_digest, top.digest, manifest.digest, *(_descriptor_digest(d) for d in layers)]
        return self._record(ref, top.digest, info, [str(d) for d in diff_ids], blobs)

    async def _fetch_config(self, rc: RegistryClient, repo: str, desc: dict[str, Any]) -> dict[str, Any]:
        digest = _descriptor_digest(desc)
        path = self.blobs_dir / _hex(digest)
        size = desc.get("size")
        if size is not None and int(size) > _MAX_CONFIG_BYTES:
            raise RegistryError(0, "SIZE_INVALID", f"image config of {size} bytes is too large")
        if not path.exists():
            await rc.download_blob(repo, digest, path, int(size) if size is not None else None)
        try:
            config = json.loads(path.read_bytes())
        except ValueError as e:
            raise RegistryError(0, "MANIFEST_INVALID", f"image config is not JSON: {e}") from None
        if not isinstance(config, dict):
            raise RegistryError(0, "MANIFEST_INVALID", "image config is not a JSON object")
        return config

    async def _ensure_layer(self, rc: RegistryClient, repo: str, desc: dict[str, Any], diff_id: str) -> None:
        target = self.layers_dir / _hex(diff_id)
        if target.is_dir():
            return
        lock = self._layer_locks.setdefault(diff_id, asyncio.Lock())
        async with lock:
            if target.is_dir():   # another image's pull unpacked it while we waited
                return
            digest = _descriptor_digest(desc)
            media_type = str(desc.get("mediaType", OCI_LAYER_GZIP))
            if media_type not in _LAYER_TYPES:
                raise LayerError(f"unsupported layer type {media_type}")
            blob = self.blobs_dir / _hex(digest)
            if not blob.exists():
                size = desc.get("size")
                await rc.download_blob(repo, digest, blob, int(size) if size is not None else None)
            await asyncio.to_thread(unpack_layer, blob, target, diff_id, self.tmp_dir)

    def _write_blob(self, digest: str, body: bytes) -> None:
        path = self.blobs_dir / _hex(digest)
        if not path.exists():
            _atomic_write(path, body)

    # -- the index ------------------------------------------------------------------------------

    def _record(self, ref: Reference, manifest_digest: str, info: ImageInfo, diff_ids: list[str],
                blobs: list[str]) -> ImageInfo:
        with self._index_lock:
            tag = ref.tagged
            if tag:   # a tag names one image: it moves off whatever it named before
                for other in self._records.values():
                    if tag in other.info.repo_tags and other.info.id != info.id:
                        other.info.repo_tags.remove(tag)
            record = self._records.get(info.id)
            if record is None:
                record = self._records[info.id] = _Record(info=info, diff_ids=diff_ids, blobs=[])
            if tag and tag not in record.info.repo_tags:
                record.info.repo_tags.append(tag)
            repo_digest = ref.with_digest(manifest_digest)
            if repo_digest not in record.info.repo_digests:
                record.info.repo_digests.append(repo_digest)
            record.blobs = sorted(set(record.blobs) | set(blobs))
            self._save_index()
            return _copy(record.info)

    def _load_index(self) -> dict[str, _Record]:
        try:
            doc = json.loads(self._index_path.read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError as e:
            raise ImagePullError(f"image index {self._index_path} is corrupt: {e}") from None
        records = {}
        for entry in doc.get("images", []):
            info = ImageInfo(**entry["info"])
            records[info.id] = _Record(info=info, diff_ids=list(entry["diff_ids"]),
                                       blobs=list(entry["blobs"]))
        return records

    def _save_index(self) -> None:
        doc = {"version": INDEX_VERSION,
               "images": [{"info": asdict(r.info), "diff_ids": r.diff_ids, "blobs": r.blobs}
                          for r in self._records.values()]}
        _atomic_write(self._index_path, json.dumps(doc, indent=1, sort_keys=True).encode())


def _copy(info: ImageInfo) -> ImageInfo:
    return ImageInfo(id=info.id, repo_tags=list(info.repo_tags), repo_digests=list(info.repo_digests),
                     size=info.size, config=json.loads(json.dumps(info.config)))


def _descriptor_digest(desc: Any) -> str:
    digest = desc.get("digest") if isinstance(desc, dict) else None
    if not isinstance(digest, str) or not is_digest(digest):
        raise RegistryError(0, "MANIFEST_INVALID", f"descriptor without a sha256 digest: {desc!r:.200}")
    return digest


def _pick_platform(index: dict[str, Any]) -> str:
    want_os, want_arch = host_platform()
    entries = index.get("manifests") or []
    seen = []
    for entry in entries:
        plat = entry.get("platform") or {}
        seen.append(f"{plat.get('os')}/{plat.get('architecture')}")
        if plat.get("os") == want_os and plat.get("architecture") == want_arch:
            return _descriptor_digest(entry)
    have = ", ".join(seen) or "nothing"
    raise RegistryError(0, "MANIFEST_UNKNOWN", f"no {want_os}/{want_arch} image in the index (has: {have})")


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# -- unpacking ------------------------------------------------------------------------------------

class _HashingReader:
    """A read-only stream that hashes what passes through (the diff id is the uncompressed tar's)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self.sha256.update(data)
        return data

    def drain(self) -> None:
        while self.read(1024 * 1024):
            pass


def _open_decompressed(f: IO[bytes]) -> IO[bytes]:
    magic = f.read(4)
    f.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=f, mode="rb")   # type: ignore[return-value]
    if magic == b"\x28\xb5\x2f\xfd":
        try:
            import zstandard  # type: ignore[import-not-found]
        except ImportError:
            raise LayerError("zstd-compressed layer: install the 'zstandard' package to pull it") from None
        return zstandard.ZstdDecompressor().stream_reader(f)  # type: ignore[no-any-return]
    return f


def unpack_layer(blob: Path, target: Path, diff_id: str, tmp_dir: Path) -> None:
    """Unpack the layer archive ``blob`` into the new directory ``target``.

    The uncompressed stream must hash to ``diff_id``. Nothing appears at ``target`` unless the
    whole layer unpacked cleanly: the work happens in ``tmp_dir`` and is renamed into place.
    """
    work = Path(tempfile.mkdtemp(prefix=f"{_hex(diff_id)[:12]}-", dir=tmp_dir))
    try:
        os.chmod(work, 0o755)
        with blob.open("rb") as raw:
            reader = _HashingReader(_open_decompressed(raw))
            try:
                with tarfile.open(fileobj=reader, mode="r|") as tar:   # type: ignore[call-overload]
                    _extract_all(tar, work)
                reader.drain()
            except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as e:
                raise LayerError(f"layer {diff_id[:19]} is not a valid tar archive: {e}") from None
        actual = "sha256:" + reader.sha256.hexdigest()
        if actual != diff_id:
            raise LayerError(f"layer diff id mismatch: expected {diff_id}, got {actual}")
        try:
            os.rename(work, target)
        except OSError:
            if not target.is_dir():   # lost a race against another unpack of the same layer: fine
                raise
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _safe_relpath(name: str, what: str) -> str:
    """The member path relative to the layer root; ``..`` anywhere is refused, not normalized."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"path traversal refused: {what} {name!r} contains '..'")
    return "/".join(parts)


def _resolve_inside(root: Path, rel: str, *, create_parents: bool) -> Path:
    """``root/rel``, refusing any parent component that is a symlink (it could point anywhere)."""
    current = root
    parts = rel.split("/")
    for part in parts[:-1]:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            if not create_parents:
                raise LayerError(f"path {rel!r} does not exist in the layer") from None
            os.mkdir(current, 0o755)
            continue
        if stat.S_ISLNK(st.st_mode):
            raise LayerError(f"path traversal refused: {rel!r} goes through the symlink {part!r}")
        if not stat.S_ISDIR(st.st_mode):
            raise LayerError(f"path {rel!r}: {part!r} is not a directory")
    return current / parts[-1]


def _clear(path: Path, keep_dir: bool) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if not keep_dir:
            shutil.rmtree(path)
    else:
        os.unlink(path)


def _extract_all(tar: tarfile.TarFile, root: Path) -> None:
    dirs: list[tuple[Path, tarfile.TarInfo]] = []
    for member in tar:
        rel = _safe_relpath(member.name, "entry")
        if not rel:   # the layer root itself
            if member.isdir():
                dirs.append((root, member))
            continue
        path = _resolve_inside(root, rel, create_parents=True)
        base = path.name
        if base == OPAQUE_MARKER:
            os.setxattr(path.parent, OPAQUE_XATTR, b"y")
            continue
        if base.startswith(WHITEOUT_PREFIX):
            hidden = base[len(WHITEOUT_PREFIX):]
            if hidden in ("", ".", ".."):
                raise LayerError(f"bad whiteout {member.name!r}")
            victim = path.parent / hidden
            _clear(victim, keep_dir=False)
            os.mknod(victim, stat.S_IFCHR | 0o600, os.makedev(0, 0))
            continue
        _extract_member(tar, member, root, path)
        if member.isdir():
            dirs.append((path, member))
    # Directories last, deepest first: creating their children changed their mtimes, and a
    # read-only mode set early would have been in the way of non-root unpacking.
    for path, member in sorted(dirs, key=lambda pm: len(pm[0].parts), reverse=True):
        _apply_metadata(path, member)


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path, path: Path) -> None:
    _clear(path, keep_dir=member.isdir())
    if member.isdir():
        if not path.is_dir():
            os.mkdir(path, 0o755)
        return   # metadata at the end
    if member.isreg():
        src = tar.extractfile(member)
        assert src is not None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, 1024 * 1024)
    elif member.issym():
        # Stored verbatim: inside the container an absolute target resolves in the container's
        # root. We never follow it while unpacking (see _resolve_inside).
        os.symlink(member.linkname, path)
    elif member.islnk():
        target_rel = _safe_relpath(member.linkname, "hardlink target")
        if not target_rel:
            raise LayerError(f"hardlink {member.name!r} to the layer root")
        target = _resolve_inside(root, target_rel, create_parents=False)
        if not os.path.lexists(target):
            raise LayerError(f"hardlink {member.name!r} to {member.linkname!r}, which is not in the layer")
        os.link(target, path, follow_symlinks=False)
        return   # a hard link shares the target's inode and metadata
    elif member.ischr() or member.isblk():
        kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
        os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor))
    elif member.isfifo():
        os.mkfifo(path, 0o600)
    else:
        raise LayerError(f"unsupported tar entry type {member.type!r} for {member.name!r}")
    _apply_metadata(path, member)


def _apply_metadata(path: Path, member: tarfile.TarInfo) -> None:
    is_link = member.issym()
    with contextlib.suppress(PermissionError):   # numeric ownership needs root; rootless keeps ours
        os.chown(path, member.uid, member.gid, follow_symlinks=False)
    if not is_link:
        # After chown: chown clears setuid/setgid bits.
        os.chmod(path, member.mode & 0o7777)
        for key, value in member.pax_headers.items():
            if key.startswith("SCHILY.xattr.") and not key.startswith("SCHILY.xattr.trusted.overlay."):
                with contextlib.suppress(OSError):
                    os.setxattr(path, key[len("SCHILY.xattr."):], value.encode("utf-8", "surrogateescape"))
    os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
