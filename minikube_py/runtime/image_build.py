"""Build OCI images without Docker from an ``image.yaml`` recipe, keep them in an OCI layout, push them.

A recipe directory holds ``image.yaml`` and the files it copies::

    args: {VERSION: "1.0"}          # defaults for ${VERSION} in any string below (--build-arg overrides)
    from: scratch                   # the only base: images start empty
    busybox: true                   # a layer with Debian's static /bin/busybox and its applet symlinks
    rootfs: rootfs/                 # a directory copied as the image's /
    copy:                           # files or directories from the recipe directory
      - {src: www, dest: /web/www, mode: "0755"}
    layers:                         # more layers on top, each with the keys above plus
      - {delete: [/etc/motd], opaque: [/var/cache]}   # whiteouts for what lower layers hold
    entrypoint: ["/bin/sh", "/web/serve.sh"]
    cmd: ["sh"]
    env: {PORT: "8080"}             # or a list of "KEY=value"
    workdir: /web
    ports: [8080]                   # or exposedPorts: ["8080/tcp"]
    user: "0"
    labels: {org.opencontainers.image.title: demo/web}

Builds are reproducible: entries sorted, every mtime 0, owner root, gzip without name or time, and a
fixed ``created`` date, so the same recipe always yields the same digests (and identical busybox
layers are stored and pushed once).
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import struct
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from minikube_py.runtime.images import OPAQUE_MARKER, WHITEOUT_PREFIX, host_platform
from minikube_py.runtime.registry_client import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    InvalidReference,
    Reference,
    RegistryClient,
    RegistryError,
    parse_reference,
)

SPEC_FILE = "image.yaml"
BUSYBOX_PATH = Path("/bin/busybox")
FIXED_CREATED = "1970-01-01T00:00:00Z"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NAME_ANNOTATION = "io.containerd.image.name"
REF_ANNOTATION = "org.opencontainers.image.ref.name"

_LAYER_KEYS = {"busybox", "rootfs", "copy", "delete", "opaque"}
_TOP_KEYS = {"args", "from", "busybox", "rootfs", "copy", "layers", "entrypoint", "cmd", "env", "workdir",
             "ports", "exposedPorts", "user", "labels"}
_ARG = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ImageBuildError(Exception):
    """A recipe that cannot be built, or a push that failed; the message says which and why."""


def default_output_dir() -> Path:
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "minikube-py" / "images"


def local_name(text: str) -> str:
    """A build tag normalized: ``demo/web`` -> ``demo/web:latest`` (no registry is added)."""
    try:
        ref = parse_reference(text)
    except InvalidReference as e:
        raise ImageBuildError(str(e)) from None
    if ref.digest:
        raise ImageBuildError(f"cannot tag a build with a digest: {text!r}")
    return str(ref)


# -- the OCI image layout ---------------------------------------------------------------------------

class OCILayout:
    """An OCI image layout directory: ``oci-layout``, ``index.json`` and ``blobs/sha256/``.

    Images are named in the index by the ``io.containerd.image.name`` annotation (full name:tag),
    as containerd does, so one layout holds many repositories.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        marker = self.root / "oci-layout"
        if not marker.exists():
            marker.write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))

    def blob_path(self, digest: str) -> Path:
        algo, _, hexpart = digest.partition(":")
        if algo != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexpart):
            raise ImageBuildError(f"bad digest {digest!r}")
        return self.blobs / hexpart

    def add_blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self.blob_path(digest)
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=self.blobs, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        return digest

    def read_blob(self, digest: str) -> bytes:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise ImageBuildError(f"blob {digest} missing from {self.root}") from None

    @contextlib.contextmanager
    def _locked_index(self) -> Iterator[dict[str, Any]]:
        with (self.root / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            index = self._read_index()
            yield index
            data = json.dumps(index, indent=1, sort_keys=True).encode()
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".index-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.root / "index.json")

    def _read_index(self) -> dict[str, Any]:
        try:
            index = json.loads((self.root / "index.json").read_bytes())
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        except ValueError as e:
            raise ImageBuildError(f"{self.root}/index.json is corrupt: {e}") from None
        return dict(index)

    def tag(self, name: str, manifest_digest: str, size: int) -> None:
        name = local_name(name)
        tag = name.rsplit(":", 1)[1]
        with self._locked_index() as index:
            entries = [m for m in index.get("manifests", [])
                       if (m.get("annotations") or {}).get(NAME_ANNOTATION) != name]
            entries.append({"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": size,
                            "annotations": {NAME_ANNOTATION: name, REF_ANNOTATION: tag}})
            index["manifests"] = sorted(entries, key=lambda m: m["annotations"][NAME_ANNOTATION])

    def resolve(self, name: str) -> str | None:
        """The manifest digest tagged ``name``, or None."""
        name = local_name(name)
        for entry in self._read_index().get("manifests", []):
            if (entry.get("annotations") or {}).get(NAME_ANNOTATION) == name:
                return str(entry["digest"])
        return None

    def names(self) -> list[tuple[str, str]]:
        """(name, manifest digest) of every tagged image."""
        return [(str((m.get("annotations") or {}).get(NAME_ANNOTATION, "")), str(m["digest"]))
                for m in self._read_index().get("manifests", [])]


# -- layers ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerBlob:
    digest: str      # of the gzip blob
    diff_id: str     # of the uncompressed tar
    size: int


@dataclass
class _Entry:
    kind: str                        # dir, file, symlink, hardlink
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    data: bytes | None = None
    source: Path | None = None
    target: str = ""


class _HashingWriter:
    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        self._out.write(data)
        return len(data)

    def flush(self) -> None:
        self._out.flush()


def _image_path(path: str) -> str:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageBuildError(f"path {path!r} must not contain '..'")
    if not parts:
        raise ImageBuildError(f"path {path!r} names the image root")
    return "/".join(parts)


class LayerWriter:
    """Collects a layer's entries and writes them as one reproducible tar+gzip blob."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def add_dir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        self._entries[_image_path(path)] = _Entry("dir", mode, uid, gid)

    def add_file(self, path: str, data: bytes | Path, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
        entry = _Entry("file", mode, uid, gid)
        if isinstance(data, Path):
            entry.source = data
        else:
            entry.data = data
        self._entries[_image_path(path)] = entry

    def add_symlink(self, path: str, target: str) -> None:
        self._entries[_image_path(path)] = _Entry("symlink", 0o777, target=target)

    def add_hardlink(self, path: str, target: str) -> None:
        self._entries[_image_path(path)] = _Entry("hardlink", 0o644, target=_image_path(target))

    def add_whiteout(self, path: str) -> None:
        """Hide ``path`` of the layers below."""
        parent, _, base = _image_path(path).rpartition("/")
        self.add_file(f"{parent}/{WHITEOUT_PREFIX}{base}" if parent else f"{WHITEOUT_PREFIX}{base}", b"")

    def add_opaque(self, path: str) -> None:
        """Hide everything the layers below have in directory ``path`` (this layer may refill it)."""
        self.add_dir(path)
        self.add_file(f"{_image_path(path)}/{OPAQUE_MARKER}", b"")

    def add_tree(self, source: Path, dest: str, mode: int | None = None) -> None:
        """Copy ``source`` (file or directory) to ``dest``; modes become 0755/0644 unless ``mode``."""
        if source.is_symlink():
            self.add_symlink(dest, os.readlink(source))
        elif source.is_dir():
            if dest.strip("/"):
                self.add_dir(dest)
            for child in sorted(source.iterdir()):
                self.add_tree(child, f"{dest.rstrip('/')}/{child.name}", mode)
        elif source.is_file():
            if mode is None:
                mode = 0o755 if source.stat().st_mode & 0o111 else 0o644
            self.add_file(dest, source, mode)
        else:
            raise ImageBuildError(f"{source}: only files, directories and symlinks can be copied")

    def _with_parents(self) -> dict[str, _Entry]:
        entries = dict(self._entries)
        for path in list(entries):
            parts = path.split("/")
            for i in range(1, len(parts)):
                entries.setdefault("/".join(parts[:i]), _Entry("dir", 0o755))
        return entries

    def write(self, layout: OCILayout) -> LayerBlob:
        fd, tmp = tempfile.mkstemp(dir=layout.blobs, prefix=".layer-")
        try:
            with os.fdopen(fd, "wb") as raw:
                outer = _HashingWriter(raw)
                # No file name and mtime 0 in the gzip header: byte-identical output every time.
                with gzip.GzipFile(filename="", mode="wb", fileobj=outer, mtime=0, compresslevel=6) as gz:
                    inner = _HashingWriter(gz)   # type: ignore[arg-type]
                    with tarfile.open(fileobj=inner, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                        entries = self._with_parents()
                        for path in sorted(entries):
                            self._add_to_tar(tar, path, entries[path])
            digest = "sha256:" + outer.sha256.hexdigest()
            os.chmod(tmp, 0o644)
            os.replace(tmp, layout.blob_path(digest))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return LayerBlob(digest=digest, diff_id="sha256:" + inner.sha256.hexdigest(), size=outer.size)

    @staticmethod
    def _add_to_tar(tar: tarfile.TarFile, path: str, entry: _Entry) -> None:
        info = tarfile.TarInfo(path)
        info.mode, info.uid, info.gid, info.mtime = entry.mode, entry.uid, entry.gid, 0
        info.uname = info.gname = ""
        if entry.kind == "dir":
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        elif entry.kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, entry.target
            tar.addfile(info)
        elif entry.kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, entry.target
            tar.addfile(info)
        elif entry.source is not None:
            with entry.source.open("rb") as f:
                info.size = os.fstat(f.fileno()).st_size
                tar.addfile(info, f)
        else:
            data = entry.data or b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def busybox_layer(writer: LayerWriter, busybox: Path = BUSYBOX_PATH) -> None:
    """/bin/busybox from Debian's busybox-static, a symlink per applet, and a minimal /etc."""
    if not busybox.is_file():
        raise ImageBuildError(f"busybox: true needs Debian's busybox-static ({busybox} is missing; "
                              "apt-get install busybox-static)")
    if not _is_static_elf(busybox):
        raise ImageBuildError(f"{busybox} is dynamically linked and would not run in an empty image; "
                              "install Debian's busybox-static instead of busybox")
    try:
        listing = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=True,
                                 timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise ImageBuildError(f"{busybox} --list-full failed: {e}") from None
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "var", "run"):
        writer.add_dir(d)
    writer.add_dir("tmp", 0o1777)
    writer.add_dir("root", 0o700)
    writer.add_file("bin/busybox", busybox, 0o755)
    for line in sorted(set(listing.split())):
        applet = line.strip("/")
        if applet and applet != "bin/busybox" and ".." not in applet.split("/"):
            writer.add_symlink(applet, "/bin/busybox")
    writer.add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
                                  b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    writer.add_file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")


# Bump when busybox_layer() changes what it writes: cached layers of the old shape are then ignored.
_BUSYBOX_LAYER_FORMAT = "1"


def _cached_busybox_layer(layout: OCILayout, busybox: Path = BUSYBOX_PATH) -> LayerBlob:
    """The busybox layer, reused from an earlier build into this layout when the binary is the same.

    Builds are reproducible, so this only saves time (gzip of the 2 MB binary: ~0.4 s a build).
    """
    try:
        key = hashlib.sha256(_BUSYBOX_LAYER_FORMAT.encode() + busybox.read_bytes()).hexdigest()
    except OSError:
        key = ""
    memo = layout.root / "cache" / f"busybox-{key}.json"
    if key:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            cached = LayerBlob(**json.loads(memo.read_text()))
            if layout.blob_path(cached.digest).exists():
                return cached
    writer = LayerWriter()
    busybox_layer(writer, busybox)
    layer = writer.write(layout)
    if key:
        memo.parent.mkdir(exist_ok=True)
        memo.write_text(json.dumps({"digest": layer.digest, "diff_id": layer.diff_id, "size": layer.size}))
    return layer


def _is_static_elf(path: Path) -> bool:
    """True when the ELF file has no PT_INTERP program header (no dynamic loader needed)."""
    with path.open("rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[5] != 1:   # only little-endian is checked
            return True
        if header[4] == 2:
            phoff, = struct.unpack_from("<Q", header, 32)
            phentsize, phnum = struct.unpack_from("<HH", header, 54)
        else:
            phoff, = struct.unpack_from("<I", header, 28)
            phentsize, phnum = struct.unpack_from("<HH", header, 42)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


# -- recipes --------------------------------------------------------------------------------------

@dataclass
class BuiltImage:
    manifest_digest: str
    config_digest: str
    size: int                            # manifest bytes
    tags: list[str] = field(default_factory=list)
    layers: list[LayerBlob] = field(default_factory=list)


def load_spec(context: Path, build_args: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read ``context/image.yaml`` with ``${ARG}`` substituted from its ``args`` and ``build_args``."""
    spec_path = context / SPEC_FILE
    try:
        spec = yaml.safe_load(spec_path.read_text())
    except FileNotFoundError:
        raise ImageBuildError(f"{context} has no {SPEC_FILE}") from None
    except yaml.YAMLError as e:
        raise ImageBuildError(f"{spec_path}: not valid YAML: {e}") from None
    if not isinstance(spec, dict):
        raise ImageBuildError(f"{spec_path}: expected a mapping at the top")
    unknown = set(spec) - _TOP_KEYS
    if unknown:
        raise ImageBuildError(f"{spec_path}: unknown keys {sorted(unknown)} (known: {sorted(_TOP_KEYS)})")
    args = {str(k): str(v) for k, v in (spec.pop("args", None) or {}).items()}
    for k, v in (build_args or {}).items():
        if k not in args:
            raise ImageBuildError(f"{spec_path}: --build-arg {k} is not declared under args")
        args[k] = v

    def substitute(value: Any) -> Any:
        if isinstance(value, str):
            def one(m: re.Match[str]) -> str:
                if m.group(1) not in args:
                    raise ImageBuildError(f"{spec_path}: ${{{m.group(1)}}} is not declared under args")
                return args[m.group(1)]
            return _ARG.sub(one, value)
        if isinstance(value, list):
            return [substitute(v) for v in value]
        if isinstance(value, dict):
            return {k: substitute(v) for k, v in value.items()}
        return value

    spec = substitute(spec)
    base = spec.get("from", "scratch")
    if base != "scratch":
        raise ImageBuildError(f"{spec_path}: from: {base!r}: only 'scratch' is supported "
                              "(use busybox: true for a shell and the usual tools)")
    return spec


def _mode(value: Any, where: str) -> int | None:
    if value is None:
        return None
    # Strings only: YAML reads 0755 as octal but 755 as decimal, and 420 could be either.
    if isinstance(value, str) and re.fullmatch(r"0?[0-7]{3,4}", value):
        return int(value, 8)
    raise ImageBuildError(f"{where}: mode {value!r}: give an octal mode as a string, like mode: \"0755\"")


def _fill_layer(writer: LayerWriter, part: Mapping[str, Any], context: Path, where: str) -> None:
    if part.get("busybox"):
        busybox_layer(writer)
    root = context.resolve()
    if part.get("rootfs"):
        src = (context / str(part["rootfs"])).resolve()
        if not src.is_relative_to(root) or not src.is_dir():
            raise ImageBuildError(f"{where}: rootfs {part['rootfs']!r} is not a directory inside {context}")
        writer.add_tree(src, "/")
    copies = part.get("copy") or []
    if not isinstance(copies, list):
        raise ImageBuildError(f"{where}: copy must be a list of {{src, dest, mode}}")
    for item in copies:
        if not isinstance(item, dict) or "src" not in item or "dest" not in item:
            raise ImageBuildError(f"{where}: each copy item needs src and dest, got {item!r}")
        src = (context / str(item["src"])).resolve()
        if not src.is_relative_to(root) or not src.exists():
            raise ImageBuildError(f"{where}: copy src {item['src']!r} does not exist inside {context}")
        dest = str(item["dest"])
        if src.is_file() and dest.endswith("/"):
            dest += src.name
        writer.add_tree(src, dest, _mode(item.get("mode"), where))
    for path in _str_list(part.get("delete"), f"{where}: delete"):
        writer.add_whiteout(path)
    for path in _str_list(part.get("opaque"), f"{where}: opaque"):
        writer.add_opaque(path)


def _str_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ImageBuildError(f"{where} must be a list of paths")
    return value


def _command(value: Any, where: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return ["/bin/sh", "-c", value]   # shell form, as in a Dockerfile
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return [str(v) for v in value]
    raise ImageBuildError(f"{where} must be a list of strings or one shell command")


def image_config(spec: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The OCI config's ``config`` section from a recipe."""
    config: dict[str, Any] = {}
    env = spec.get("env") or {}
    if isinstance(env, dict):
        env_list = [f"{k}={v}" for k, v in env.items()]
    elif isinstance(env, list) and all(isinstance(e, str) and "=" in e for e in env):
        env_list = list(env)
    else:
        raise ImageBuildError(f"{where}: env must be a mapping or a list of KEY=value")
    if not any(e.startswith("PATH=") for e in env_list):
        env_list.insert(0, f"PATH={DEFAULT_PATH}")
    config["Env"] = env_list
    for key, name in (("entrypoint", "Entrypoint"), ("cmd", "Cmd")):
        command = _command(spec.get(key), f"{where}: {key}")
        if command is not None:
            config[name] = command
    if spec.get("workdir"):
        config["WorkingDir"] = str(spec["workdir"])
    if spec.get("user") is not None:
        config["User"] = str(spec["user"])
    ports = list(spec.get("ports") or []) + list(spec.get("exposedPorts") or [])
    if ports:
        exposed = {}
        for port in ports:
            text = str(port)
            valid = re.fullmatch(r"\d{1,5}(/(tcp|udp|sctp))?", text) is not None
            if not valid or not 0 < int(text.split("/")[0]) < 65536:
                raise ImageBuildError(f"{where}: bad port {port!r} (want 8080 or \"8080/tcp\")")
            exposed[text if "/" in text else f"{text}/tcp"] = {}
        config["ExposedPorts"] = exposed
    labels = spec.get("labels") or {}
    if not isinstance(labels, dict):
        raise ImageBuildError(f"{where}: labels must be a mapping")
    if labels:
        config["Labels"] = {str(k): str(v) for k, v in labels.items()}
    return config


def build_image(context: Path, tags: Sequence[str], *, output: Path | None = None,
                build_args: Mapping[str, str] | None = None) -> BuiltImage:
    """Build the recipe in ``context`` into the OCI layout ``output`` and tag it with every tag."""
    context = Path(context)
    where = str(context / SPEC_FILE)
    names = [local_name(t) for t in tags]
    if not names:
        raise ImageBuildError("give the image at least one tag (-t NAME:TAG)")
    spec = load_spec(context, build_args)
    layout = OCILayout(output or default_output_dir())
    parts: list[tuple[str, dict[str, Any]]] = []
    if spec.get("busybox"):
        parts.append(("busybox", {"busybox": True}))
    top = {k: spec[k] for k in ("rootfs", "copy") if spec.get(k)}
    if top:
        parts.append(("files", top))
    extra = spec.get("layers") or []
    if not isinstance(extra, list):
        raise ImageBuildError(f"{where}: layers must be a list")
    for i, part in enumerate(extra):
        if not isinstance(part, dict) or set(part) - _LAYER_KEYS:
            raise ImageBuildError(f"{where}: layers[{i}] must be a mapping with keys from "
                                  f"{sorted(_LAYER_KEYS)}")
        parts.append((f"layers[{i}]", part))
    if not parts:
        raise ImageBuildError(f"{where}: nothing to put in the image (give busybox, rootfs, copy or layers)")
    layers: list[LayerBlob] = []
    history = []
    for label, part in parts:
        if part == {"busybox": True}:
            layers.append(_cached_busybox_layer(layout))
            history.append({"created": FIXED_CREATED, "created_by": f"minikube-py image build: {label}"})
            continue
        writer = LayerWriter()
        _fill_layer(writer, part, context, f"{where}: {label}")
        if not len(writer):
            raise ImageBuildError(f"{where}: {label} adds nothing")
        layers.append(writer.write(layout))
        history.append({"created": FIXED_CREATED, "created_by": f"minikube-py image build: {label}"})
    os_name, arch = host_platform()
    config = {
        "created": FIXED_CREATED, "architecture": arch, "os": os_name,
        "config": image_config(spec, where),
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": history,
    }
    return write_image(layout, layers, config, names)


def _canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def write_image(layout: OCILayout, layers: Sequence[LayerBlob], config: dict[str, Any],
                tags: Sequence[str]) -> BuiltImage:
    """Store config and manifest for already written ``layers`` and tag the result."""
    config_bytes = _canonical(config)
    config_digest = layout.add_blob(config_bytes)
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.size}
                   for layer in layers],
    }
    manifest_bytes = _canonical(manifest)
    manifest_digest = layout.add_blob(manifest_bytes)
    names = [local_name(t) for t in tags]
    for name in names:
        layout.tag(name, manifest_digest, len(manifest_bytes))
    return BuiltImage(manifest_digest=manifest_digest, config_digest=config_digest, size=len(manifest_bytes),
                      tags=names, layers=list(layers))


def add_tar_layer(layout: OCILayout, tar_bytes: bytes) -> LayerBlob:
    """Store an already made (uncompressed) tar as a gzip layer: for hand-crafted test layers."""
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
        gz.write(tar_bytes)
    blob = out.getvalue()
    return LayerBlob(digest=layout.add_blob(blob), diff_id="sha256:" + hashlib.sha256(tar_bytes).hexdigest(),
                     size=len(blob))


# -- pushing --------------------------------------------------------------------------------------

async def push_image(name: str, *, registry: str | None = None, output: Path | None = None,
                     insecure: bool = True) -> str:
    """Upload image ``name`` from the layout to ``registry`` (or the registry in its name).

    Blobs the registry already has are skipped (HEAD). Returns ``registry/repo:tag@digest``.
    """
    layout = OCILayout(output or default_output_dir())
    local = local_name(name)
    digest = layout.resolve(local)
    if digest is None:
        raise ImageBuildError(f"no image {local} in {layout.root} (build it first)")
    ref = parse_reference(local)
    target = Reference(registry=registry or ref.registry, repository=ref.repository, tag=ref.tag)
    if not target.registry:
        raise ImageBuildError(f"{local} names no registry: give --registry HOST:PORT")
    manifest_bytes = layout.read_blob(digest)
    manifest = json.loads(manifest_bytes)
    blobs = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
    try:
        async with RegistryClient(target.registry, insecure=insecure) as rc:
            for blob in blobs:
                if not await rc.blob_exists(target.repository, blob):
                    await rc.upload_blob(target.repository, blob, layout.blob_path(blob))
            pushed = await rc.put_manifest(target.repository, target.tag or "latest", manifest_bytes,
                                           manifest.get("mediaType", OCI_MANIFEST))
    except RegistryError as e:
        raise ImageBuildError(f"push {target}: {e}") from None
    except OSError as e:   # aiohttp's connection errors are OSErrors too
        raise ImageBuildError(f"push {target}: cannot reach registry {target.registry}: {e}") from None
    return f"{target}@{pushed}"
