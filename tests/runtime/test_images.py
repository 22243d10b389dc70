"""Images without Docker: build, push to a real docker-registry, pull, verify, unpack, run with runc."""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import tarfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from minikube_py.cli.main import main as cli_main
from minikube_py.images import DEMO_IMAGES, build_demo_images
from minikube_py.runtime import registry_client
from minikube_py.runtime.image_build import (
    BUSYBOX_PATH,
    ImageBuildError,
    OCILayout,
    add_tar_layer,
    build_image,
    push_image,
    write_image,
)
from minikube_py.runtime.images import (
    OPAQUE_XATTR,
    ImagePullError,
    ImageStore,
    InvalidImageName,
    LayerError,
    unpack_layer,
)

from .registry_harness import LocalRegistry, registry_available

IS_ROOT = os.geteuid() == 0
needs_busybox = pytest.mark.skipif(not BUSYBOX_PATH.is_file(),
                                   reason="Debian's busybox-static (/bin/busybox) is not installed")
needs_root = pytest.mark.skipif(not IS_ROOT, reason="overlay mounts and runc need root")
needs_runc = pytest.mark.skipif(shutil.which("runc") is None,
                                reason="runc is not installed (Debian package runc)")
DIGEST = "sha256:" + "ab" * 32


# -- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    if not registry_available():
        pytest.skip("docker-registry is not installed (Debian package docker-registry)")
    reg = LocalRegistry(tmp_path_factory.mktemp("registry"))
    reg.start()
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def demo(registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """All demo images built and pushed once for the module: local name -> pushed digest."""
    if not BUSYBOX_PATH.is_file():
        pytest.skip("Debian's busybox-static (/bin/busybox) is not installed")
    layout = tmp_path_factory.mktemp("layout")
    pushed = asyncio.run(build_demo_images(registry.address, output=layout))
    out = {}
    for ref in pushed:
        name, digest = ref.split("@")
        out[name.removeprefix(registry.address + "/")] = digest
    return out


@pytest.fixture
def store(tmp_path: Path, registry: LocalRegistry) -> ImageStore:
    return ImageStore(tmp_path / "store", default_registry=registry.address)


_libc = ctypes.CDLL(None, use_errno=True)


def _mount_overlay(lower: list[Path], tmp: Path) -> Path:
    """Mount the layers (given lowest first) as overlayfs in ``tmp``; the caller must unmount."""
    upper, work, merged = tmp / "upper", tmp / "work", tmp / "merged"
    for d in (upper, work, merged):
        d.mkdir(parents=True)
    opts = f"lowerdir={':'.join(str(p) for p in reversed(lower))},upperdir={upper},workdir={work}"
    if _libc.mount(b"overlay", str(merged).encode(), b"overlay", 0, opts.encode()) != 0:
        raise OSError(ctypes.get_errno(), f"mount overlay: {os.strerror(ctypes.get_errno())}")
    return merged


def _umount(path: Path) -> None:
    if os.path.ismount(path):
        _libc.umount2(str(path).encode(), 2)   # MNT_DETACH: never leave a mount behind a failed test


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def _entry(name: str, kind: bytes = tarfile.REGTYPE, **attrs: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for k, v in attrs.items():
        setattr(info, k, v)
    return info


def _unpack_bytes(tar_bytes: bytes, tmp: Path, diff_id: str | None = None) -> Path:
    blob = tmp / "layer.tar"
    blob.write_bytes(tar_bytes)
    target = tmp / "unpacked"
    (tmp / "work").mkdir(exist_ok=True)
    unpack_layer(blob, target, diff_id or "sha256:" + hashlib.sha256(tar_bytes).hexdigest(), tmp / "work")
    return target


async def _push_raw_image(registry: LocalRegistry, layout_dir: Path, name: str, tars: list[bytes]) -> str:
    layout = OCILayout(layout_dir)
    layers = [add_tar_layer(layout, t) for t in tars]
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
              "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}}
    write_image(layout, layers, config, [name])
    return await push_image(name, registry=registry.address, output=layout_dir)


# -- references -----------------------------------------------------------------------------------

@pytest.mark.parametrize("given,normalized", [
    ("demo/web", "127.0.0.1:5000/demo/web:latest"),
    ("busybox", "127.0.0.1:5000/busybox:latest"),
    ("demo/web:2.0", "127.0.0.1:5000/demo/web:2.0"),
    (f"busybox@{DIGEST}", f"127.0.0.1:5000/busybox@{DIGEST}"),
    (f"demo/web:1.0@{DIGEST}", f"127.0.0.1:5000/demo/web:1.0@{DIGEST}"),
    ("localhost/x", "localhost/x:latest"),
    ("10.0.0.1:5000/demo/web", "10.0.0.1:5000/demo/web:latest"),
    ("registry.example.org/a/b/c:v1.2_3", "registry.example.org/a/b/c:v1.2_3"),
    ("docker.io/busybox", "docker.io/library/busybox:latest"),
    ("  demo/web  ", "127.0.0.1:5000/demo/web:latest"),
])
def test_normalize(tmp_path: Path, given: str, normalized: str) -> None:
    assert ImageStore(tmp_path).normalize(given) == normalized


@pytest.mark.parametrize("bad,why", [
    ("Demo/Web", "lowercase"),
    ("demo/web:", "bad tag"),
    ("demo/web:-x", "bad tag"),
    ("demo/web@sha256:abc", "bad digest"),
    ("demo//web", "bad path component"),
    ("", "empty"),
])
def test_normalize_rejects(tmp_path: Path, bad: str, why: str) -> None:
    with pytest.raises(InvalidImageName, match=why) as err:
        ImageStore(tmp_path).normalize(bad)
    assert isinstance(err.value, ImagePullError)   # the kubelet can treat it as a pull failure too


def test_default_registry_is_configurable(tmp_path: Path) -> None:
    assert ImageStore(tmp_path, default_registry="10.1.2.3:5000").normalize("demo/web") == \
        "10.1.2.3:5000/demo/web:latest"


# -- building -------------------------------------------------------------------------------------

@needs_busybox
def test_build_is_reproducible(tmp_path: Path) -> None:
    recipe = Path(__file__).resolve().parents[2] / "minikube_py/images/web"
    first = build_image(recipe, ["demo/web:1.0"], output=tmp_path / "a")
    second = build_image(recipe, ["demo/web:1.0"], output=tmp_path / "b")
    assert first.manifest_digest == second.manifest_digest
    assert [layer.digest for layer in first.layers] == [layer.digest for layer in second.layers]
    v2 = build_image(recipe, ["demo/web:2.0"], output=tmp_path / "a", build_args={"VERSION": "2.0"})
    assert v2.manifest_digest != first.manifest_digest
    assert v2.layers == first.layers            # only the config (WEB_VERSION) differs
    names = dict(OCILayout(tmp_path / "a").names())
    assert names == {"demo/web:1.0": first.manifest_digest, "demo/web:2.0": v2.manifest_digest}


@pytest.mark.parametrize("spec,files,message", [
    ("from: debian\ncopy: [{src: f, dest: /f}]\n", {"f": "x"}, "only 'scratch'"),
    ("copy: [{src: f, dest: /f}]\nbogus: 1\n", {"f": "x"}, "unknown keys"),
    ("copy: [{src: ../outside, dest: /f}]\n", {}, "does not exist inside"),
    ("copy: [{src: f, dest: /f, mode: 755}]\n", {"f": "x"}, "octal mode"),
    ("copy: [{src: f, dest: /../f}]\n", {"f": "x"}, "must not contain '..'"),
    ("cmd: [sh]\n", {}, "nothing to put in the image"),
    ("env: {V: '${NOPE}'}\ncopy: [{src: f, dest: /f}]\n", {"f": "x"}, "not declared under args"),
    ("ports: [99999]\ncopy: [{src: f, dest: /f}]\n", {"f": "x"}, "bad port"),
    ("copy: [{src: f, dest: /f}\n", {"f": "x"}, "not valid YAML"),
])
def test_bad_recipes_are_refused(tmp_path: Path, spec: str, files: dict[str, str], message: str) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (tmp_path / "outside").write_text("secret")
    (ctx / "image.yaml").write_text(spec)
    for name, content in files.items():
        (ctx / name).write_text(content)
    with pytest.raises(ImageBuildError, match=message):
        build_image(ctx, ["t/x:1"], output=tmp_path / "out")


# -- round trip through a real registry -----------------------------------------------------------

async def test_pull_demo_images(store: ImageStore, registry: LocalRegistry, demo: dict[str, str]) -> None:
    assert set(demo) == {name for d in DEMO_IMAGES for name in d.names}
    busybox = await store.pull("demo/busybox")
    assert busybox.config["Cmd"] == ["sh"]
    assert busybox.repo_tags == [f"{registry.address}/demo/busybox:latest"]
    assert busybox.repo_digests == [f"{registry.address}/demo/busybox@{demo['demo/busybox:latest']}"]
    [layer] = store.layer_dirs(busybox)
    assert hashlib.sha256((layer / "bin/busybox").read_bytes()).digest() == \
        hashlib.sha256(BUSYBOX_PATH.read_bytes()).digest()
    for applet in ("bin/sh", "bin/sleep", "usr/sbin/httpd", "usr/bin/nc", "usr/bin/wget", "bin/cat"):
        assert os.readlink(layer / applet) == "/bin/busybox", applet
    assert stat.S_IMODE(os.lstat(layer / "tmp").st_mode) == 0o1777

    web1, web2 = await store.pull("demo/web:1.0"), await store.pull("demo/web:2.0")
    assert web1.id != web2.id
    assert "WEB_VERSION=1.0" in web1.config["Env"] and "WEB_VERSION=2.0" in web2.config["Env"]
    assert web1.config["ExposedPorts"] == {"8080/tcp": {}}
    assert web1.config["Entrypoint"] == ["/bin/sh", "/web/serve.sh"]
    web_layers = store.layer_dirs(web1)
    assert web_layers[0] == layer                       # the busybox layer is shared, unpacked once
    assert stat.S_IMODE(os.stat(web_layers[1] / "web/www/cgi-bin/index.cgi").st_mode) == 0o755

    latest = await store.pull("demo/web:latest")        # same image as 1.0: one record, two tags
    assert latest.id == web1.id
    assert sorted(latest.repo_tags) == [f"{registry.address}/demo/web:{t}" for t in ("1.0", "latest")]
    assert store.get(web1.id) == latest
    assert store.get(web1.id.removeprefix("sha256:")) == latest
    assert store.get(f"{registry.address}/demo/web:1.0") == latest
    assert store.get("demo/web:9.9") is None
    assert len(store.list()) == 3


async def test_state_survives_restart(store: ImageStore, registry: LocalRegistry,
                                      demo: dict[str, str]) -> None:
    info = await store.pull("demo/busybox:1.0")
    digest_ref = f"demo/busybox@{demo['demo/busybox:1.0']}"
    await store.pull(digest_ref)
    # A new store on the same root, pointed at a registry that is not there.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    again = ImageStore(store.root, default_registry=dead)
    assert again.get(f"{registry.address}/demo/busybox:1.0") == info
    assert again.layer_dirs(info) == store.layer_dirs(info)
    offline = await again.pull(f"{registry.address}/{digest_ref}")   # by digest: nothing to ask
    assert offline.id == info.id
    unreachable = f'failed to pull image "demo/busybox": cannot reach registry {dead}'
    with pytest.raises(ImagePullError, match=unreachable):
        await again.pull("demo/busybox")


async def test_a_mirror_serves_the_default_registrys_images_when_it_is_down(
        tmp_path: Path, registry: LocalRegistry, demo: dict[str, str]) -> None:
    # The HA lab's case: the first master (the default registry) is stopped, another master's registry
    # has the same images. They keep the default registry's name; the next pull starts at the mirror.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    store = ImageStore(tmp_path / "store", default_registry=dead, registry_mirrors=[registry.address])
    info = await store.pull("demo/busybox")
    assert info.repo_tags == [f"{dead}/demo/busybox:latest"]
    assert info.repo_digests == [f"{dead}/demo/busybox@{demo['demo/busybox:latest']}"]
    assert store._endpoints(dead) == [registry.address, dead]
    # An answer from the mirror ends the search (no fall-back to other endpoints on an HTTP error).
    with pytest.raises(ImagePullError, match="manifest unknown"):
        await store.pull("demo/nope")
    # Names of other registries are not sent to the mirrors.
    with pytest.raises(ImagePullError, match=f"cannot reach registry {dead}: "):
        await ImageStore(tmp_path / "other", default_registry=registry.address,
                         registry_mirrors=[registry.address]).pull(f"{dead}/x/busybox")


async def test_every_endpoint_down_names_the_registry_and_its_mirrors(tmp_path: Path) -> None:
    dead = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead.append(f"127.0.0.1:{s.getsockname()[1]}")
    store = ImageStore(tmp_path / "store", default_registry=dead[0], registry_mirrors=[dead[1]])
    with pytest.raises(ImagePullError) as err:
        await store.pull("demo/busybox")
    assert str(err.value).startswith(f'failed to pull image "demo/busybox": cannot reach registry {dead[0]} '
                                     f"nor its mirror(s) {dead[1]}: ")


async def test_missing_image_is_manifest_unknown(store: ImageStore, registry: LocalRegistry) -> None:
    with pytest.raises(ImagePullError) as err:
        await store.pull("demo/nope")
    assert str(err.value) == 'failed to pull image "demo/nope": manifest unknown'
    assert store.list() == []


async def test_remove_keeps_shared_layers(store: ImageStore, demo: dict[str, str]) -> None:
    busybox = await store.pull("demo/busybox")
    web = await store.pull("demo/web")
    shared, own = store.layer_dirs(web)
    store.remove("demo/web")
    assert store.get("demo/web") is None
    assert shared.is_dir() and not own.exists()
    assert store.get(busybox.id) is not None
    store.remove("demo/web")                              # removing again is not an error
    store.remove(busybox.id)
    assert not shared.exists() and store.list() == []
    assert list(store.blobs_dir.iterdir()) == []


async def test_corrupted_blob_is_rejected(tmp_path: Path, store: ImageStore, registry: LocalRegistry) -> None:
    payload = os.urandom(4096)
    pushed = await _push_raw_image(registry, tmp_path / "layout", "test/corrupt:1", [
        _tar((_entry("data.bin"), payload))])
    manifest = json.loads((tmp_path / "layout/blobs/sha256" / pushed.split("@sha256:")[1]).read_bytes())
    blob = registry.blob_data(manifest["layers"][0]["digest"])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF                          # same size, different content
    blob.write_bytes(bytes(data))
    with pytest.raises(ImagePullError, match="digest mismatch"):
        await store.pull("test/corrupt:1")
    assert list(store.layers_dir.iterdir()) == []
    assert not (store.blobs_dir / manifest["layers"][0]["digest"].split(":")[1]).exists()
    assert list(store.tmp_dir.iterdir()) == []
    assert store.list() == []


async def test_pull_docker_schema2_image(tmp_path: Path, store: ImageStore, registry: LocalRegistry) -> None:
    """A Docker v2 schema 2 manifest with Docker media types, as `docker push` makes them."""
    layer_tar = _tar((_entry("hello.txt"), b"from docker\n"))
    layout = OCILayout(tmp_path / "layout")
    layer = add_tar_layer(layout, layer_tar)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/hello"]},
                         "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]}}).encode()
    config_digest = layout.add_blob(config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": registry_client.DOCKER_MANIFEST,
        "config": {"mediaType": registry_client.DOCKER_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": registry_client.DOCKER_LAYER_GZIP, "digest": layer.digest,
                    "size": layer.size}],
    }).encode()
    async with registry_client.RegistryClient(registry.address, insecure=True) as rc:
        for digest in (config_digest, layer.digest):
            await rc.upload_blob("test/docker", digest, layout.blob_path(digest))
        assert await rc.blob_exists("test/docker", layer.digest)
        await rc.put_manifest("test/docker", "v1", manifest, registry_client.DOCKER_MANIFEST)
    info = await store.pull("test/docker:v1")
    assert info.id == config_digest and info.config == {"Cmd": ["/hello"]}
    assert (store.layer_dirs(info)[0] / "hello.txt").read_text() == "from docker\n"


async def test_index_and_bearer_token(tmp_path: Path, demo: dict[str, str]) -> None:
    """An OCI index (linux/amd64 is picked), an uncompressed layer, and a Bearer token challenge."""
    from aiohttp import web

    layer_tar = _tar((_entry("arch.txt"), b"amd64\n"))
    layout = OCILayout(tmp_path / "layout")
    layer_digest = layout.add_blob(layer_tar)           # stored uncompressed: media type ...tar
    diff_id = "sha256:" + hashlib.sha256(layer_tar).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    config_digest = layout.add_blob(config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": registry_client.OCI_MANIFEST,
                           "config": {"mediaType": registry_client.OCI_CONFIG, "digest": config_digest,
                                      "size": len(config)},
                           "layers": [{"mediaType": registry_client.OCI_LAYER, "digest": layer_digest,
                                       "size": len(layer_tar)}]}).encode()
    manifest_digest = layout.add_blob(manifest)
    index = json.dumps({"schemaVersion": 2, "mediaType": registry_client.OCI_INDEX, "manifests": [
        {"mediaType": registry_client.OCI_MANIFEST, "digest": DIGEST, "size": 10,
         "platform": {"os": "linux", "architecture": "arm64"}},
        {"mediaType": registry_client.OCI_MANIFEST, "digest": manifest_digest, "size": len(manifest),
         "platform": {"os": "linux", "architecture": "amd64"}},
    ]}).encode()
    index_digest = layout.add_blob(index)
    seen: list[str] = []

    async def token(request: web.Request) -> web.Response:
        assert request.query["scope"] == "repository:multi/arch:pull"
        return web.json_response({"token": "t0k"})

    async def v2(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer t0k":
            realm = f"http://{request.host}/token"
            return web.json_response(
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}, status=401,
                headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="fake",'
                                             'scope="repository:multi/arch:pull"'})
        kind, ref = request.match_info["kind"], request.match_info["ref"]
        seen.append(f"{kind}/{ref}")
        if kind == "manifests" and ref == "1":
            return web.Response(body=index, content_type=registry_client.OCI_INDEX)
        if ref == DIGEST:
            return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "arm64 asked"}]},
                                     status=404)
        body = layout.read_blob(ref)
        kind_type = registry_client.OCI_MANIFEST if kind == "manifests" else "application/octet-stream"
        return web.Response(body=body, content_type=kind_type)

    app = web.Application()
    app.router.add_get("/token", token)
    app.router.add_get("/v2/multi/arch/{kind}/{ref}", v2)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        store = ImageStore(tmp_path / "store", default_registry=f"127.0.0.1:{port}")
        info = await store.pull("multi/arch:1")
        assert (store.layer_dirs(info)[0] / "arch.txt").read_text() == "amd64\n"
        assert info.repo_digests == [f"127.0.0.1:{port}/multi/arch@{index_digest}"]
        assert f"manifests/{DIGEST}" not in seen and f"manifests/{manifest_digest}" in seen
    finally:
        await runner.cleanup()


# -- unpacking: whiteouts, metadata, traversal ----------------------------------------------------

@needs_root
async def test_whiteouts_become_overlay_markers(tmp_path: Path, store: ImageStore,
                                                registry: LocalRegistry) -> None:
    ctx = tmp_path / "ctx"
    for rel, text in {"base/keep.txt": "keep", "base/gone.txt": "gone", "base/cache/a": "a",
                      "base/cache/sub/b": "b", "new/c": "c"}.items():
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx / rel).write_text(text)
    (ctx / "image.yaml").write_text(
        "copy: [{src: base, dest: /}]\n"
        "layers:\n"
        "  - {delete: [/gone.txt], opaque: [/cache], copy: [{src: new/c, dest: /cache/}]}\n")
    build_image(ctx, ["test/whiteout:1"], output=tmp_path / "layout")
    await push_image("test/whiteout:1", registry=registry.address, output=tmp_path / "layout")
    info = await store.pull("test/whiteout:1")
    lower, top = store.layer_dirs(info)
    assert (lower / "gone.txt").read_text() == "gone"
    st = os.lstat(top / "gone.txt")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 0 and os.minor(st.st_rdev) == 0
    assert os.getxattr(top / "cache", OPAQUE_XATTR) == b"y"
    assert not (top / "cache/.wh..wh..opq").exists() and not (top / ".wh.gone.txt").exists()
    merged = None
    try:
        merged = _mount_overlay([lower, top], tmp_path / "ovl")
        assert sorted(os.listdir(merged)) == ["cache", "keep.txt"]
        assert os.listdir(merged / "cache") == ["c"]
    finally:
        if merged is not None:
            _umount(merged)


def test_unpack_keeps_metadata(tmp_path: Path) -> None:
    tar = _tar(
        (_entry(".", tarfile.DIRTYPE, mode=0o755), None),
        (_entry("./etc", tarfile.DIRTYPE, mode=0o700, uid=1000, gid=1001, mtime=1000), None),
        (_entry("etc/suid", mode=0o4755, uid=0, gid=0, mtime=12345), b"#!/bin/sh\n"),
        (_entry("etc/owned", mode=0o640, uid=1000, gid=1001), b"x"),
        (_entry("etc/link", tarfile.SYMTYPE, linkname="/etc/suid"), None),
        (_entry("etc/hard", tarfile.LNKTYPE, linkname="etc/suid"), None),
        (_entry("/abs/file", mode=0o644), b"abs"),          # leading '/' is just the layer root
        (_entry("etc/fifo", tarfile.FIFOTYPE, mode=0o600), None),
    )
    root = _unpack_bytes(tar, tmp_path)
    suid = os.lstat(root / "etc/suid")
    assert stat.S_IMODE(suid.st_mode) == 0o4755 and suid.st_mtime == 12345
    assert os.readlink(root / "etc/link") == "/etc/suid"
    assert os.lstat(root / "etc/hard").st_ino == suid.st_ino
    assert (root / "abs/file").read_text() == "abs"
    assert stat.S_ISFIFO(os.lstat(root / "etc/fifo").st_mode)
    etc = os.lstat(root / "etc")
    assert stat.S_IMODE(etc.st_mode) == 0o700 and etc.st_mtime == 1000
    if IS_ROOT:
        owned = os.lstat(root / "etc/owned")
        assert (owned.st_uid, owned.st_gid) == (1000, 1001) and (etc.st_uid, etc.st_gid) == (1000, 1001)


def test_unpack_rejects_wrong_diff_id(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match="diff id mismatch"):
        _unpack_bytes(_tar((_entry("f"), b"x")), tmp_path, diff_id=DIGEST)
    assert not (tmp_path / "unpacked").exists() and list((tmp_path / "work").iterdir()) == []


@pytest.mark.parametrize("members", [
    [(_entry("../evil"), b"x")],
    [(_entry("a/../../evil"), b"x")],
    [(_entry("link", tarfile.SYMTYPE, linkname="{outside}"), None), (_entry("link/evil"), b"x")],
    [(_entry("dir", tarfile.DIRTYPE), None), (_entry("dir/up", tarfile.SYMTYPE, linkname="../.."), None),
     (_entry("dir/up/evil"), b"x")],
    [(_entry("hard", tarfile.LNKTYPE, linkname="../../outside/victim"), None)],
    [(_entry(".wh...", mode=0o644), b"")],
], ids=["dotdot", "nested-dotdot", "abs-symlink-escape", "rel-symlink-escape", "hardlink-escape",
        "bad-whiteout"])
def test_unpack_refuses_escapes(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("untouched")
    for info, _ in members:
        info.linkname = info.linkname.replace("{outside}", str(outside))
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(LayerError):
        _unpack_bytes(_tar(*members), work)
    assert sorted(os.listdir(outside)) == ["victim"] and (outside / "victim").read_text() == "untouched"
    assert not (tmp_path / "evil").exists() and not (work / "unpacked").exists()
    assert list((work / "work").iterdir()) == []


async def test_traversal_layer_fails_the_pull(tmp_path: Path, store: ImageStore,
                                              registry: LocalRegistry) -> None:
    await _push_raw_image(registry, tmp_path / "layout", "test/evil:1", [_tar((_entry("../../evil"), b"x"))])
    with pytest.raises(ImagePullError, match=r'failed to pull image "test/evil:1": path traversal refused'):
        await store.pull("test/evil:1")
    assert list(store.layers_dir.iterdir()) == []


# -- concurrency ----------------------------------------------------------------------------------

async def test_concurrent_pulls_share_downloads(store: ImageStore, demo: dict[str, str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    manifests: Counter[str] = Counter()
    blobs: Counter[str] = Counter()
    real_manifest = registry_client.RegistryClient.get_manifest
    real_blob = registry_client.RegistryClient.download_blob

    async def count_manifest(self, repository, reference, *a, **kw):  # type: ignore[no-untyped-def]
        manifests[f"{repository}:{reference}"] += 1
        await asyncio.sleep(0.05)   # widen the window in which duplicate pulls would overlap
        return await real_manifest(self, repository, reference, *a, **kw)

    async def count_blob(self, repository, digest, *a, **kw):  # type: ignore[no-untyped-def]
        blobs[digest] += 1
        return await real_blob(self, repository, digest, *a, **kw)

    monkeypatch.setattr(registry_client.RegistryClient, "get_manifest", count_manifest)
    monkeypatch.setattr(registry_client.RegistryClient, "download_blob", count_blob)
    refs = ["demo/web:1.0"] * 4 + ["demo/web:2.0"] * 3 + ["demo/busybox"] * 2
    results = await asyncio.gather(*(store.pull(r) for r in refs))
    assert len({r.id for r in results[:4]}) == 1 and len({r.id for r in results[4:7]}) == 1
    assert manifests == {"demo/web:1.0": 1, "demo/web:2.0": 1, "demo/busybox:latest": 1}
    assert blobs and all(n == 1 for n in blobs.values()), blobs   # shared busybox layer fetched once
    assert len(list(store.layers_dir.iterdir())) == 2


async def test_cancelled_caller_does_not_cancel_others(store: ImageStore, demo: dict[str, str]) -> None:
    first = asyncio.ensure_future(store.pull("demo/web:1.0"))
    second = asyncio.ensure_future(store.pull("demo/web:1.0"))
    await asyncio.sleep(0)
    first.cancel()
    info = await second
    assert info.config["ExposedPorts"] == {"8080/tcp": {}}


# -- running what was pulled ----------------------------------------------------------------------

def _bundle(tmp: Path, rootfs: Path, args: list[str], env: list[str], host_network: bool = False) -> Path:
    bundle = tmp / "bundle"
    bundle.mkdir()
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["root"] = {"path": str(rootfs), "readonly": True}
    spec["process"].update(terminal=False, args=args, env=env, cwd="/")
    if host_network:
        spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


def _runc(state: Path, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runc", "--root", str(state), *args], capture_output=True, text=True,
                          timeout=30, **kwargs)  # type: ignore[call-overload,no-any-return]


@needs_root
@needs_runc
def test_pulled_busybox_runs_in_runc(tmp_path: Path, store: ImageStore, demo: dict[str, str]) -> None:
    info = asyncio.run(store.pull("demo/busybox"))
    merged = None
    state = tmp_path / "runc-state"
    try:
        merged = _mount_overlay(store.layer_dirs(info), tmp_path / "ovl")
        script = "echo hello from $(busybox | head -1 | cut -d' ' -f1)"
        bundle = _bundle(tmp_path, merged, ["sh", "-c", script], ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
        out = _runc(state, "run", "--bundle", str(bundle), "images-test-echo")
        assert out.returncode == 0, out.stderr
        assert out.stdout == "hello from BusyBox\n"
    finally:
        _runc(state, "delete", "--force", "images-test-echo")
        if merged is not None:
            _umount(merged)


@needs_root
@needs_runc
def test_demo_web_answers_with_pod_details(tmp_path: Path, store: ImageStore, demo: dict[str, str]) -> None:
    info = asyncio.run(store.pull("demo/web:2.0"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = [*info.config["Env"], f"PORT=127.0.0.1:{port}", "POD_NAME=web-abc12", "POD_IP=10.244.1.7",
           "NODE_NAME=worker1"]
    merged = None
    state = tmp_path / "runc-state"
    proc = None
    try:
        merged = _mount_overlay(store.layer_dirs(info), tmp_path / "ovl")
        bundle = _bundle(tmp_path, merged, info.config["Entrypoint"], env, host_network=True)
        with (tmp_path / "web.log").open("wb") as log:   # read it when this test fails
            proc = subprocess.Popen(["runc", "--root", str(state), "run", "--bundle", str(bundle),
                                     "images-test-web"], stdout=log, stderr=log)
        body = _get_when_up(f"http://127.0.0.1:{port}/", proc)
        assert body == "demo/web 2.0: pod=web-abc12 ip=10.244.1.7 node=worker1\n"
        assert _get_when_up(f"http://127.0.0.1:{port}/healthz", proc) == "ok\n"
    finally:
        _runc(state, "kill", "images-test-web", "KILL")
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _runc(state, "delete", "--force", "images-test-web")
        if merged is not None:
            _umount(merged)


def _get_when_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.read().decode()
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- the command line -----------------------------------------------------------------------------

@needs_busybox
def test_cli_build_push_pull_list(tmp_path: Path, registry: LocalRegistry,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    recipe = Path(__file__).resolve().parents[2] / "minikube_py/images/busybox"
    layout, store_dir = str(tmp_path / "layout"), str(tmp_path / "store")
    assert cli_main(["image", "build", str(recipe), "-t", "cli/bb:1", "-t", "cli/bb:2",
                     "--output", layout]) == 0
    assert cli_main(["image", "push", "cli/bb:2", "--registry", registry.address, "--output", layout]) == 0
    assert cli_main(["image", "pull", "cli/bb:2", "--store", store_dir,
                     "--default-registry", registry.address]) == 0
    assert cli_main(["image", "list", "--store", store_dir]) == 0
    assert cli_main(["image", "list", "--output", layout]) == 0
    out = capsys.readouterr().out
    assert f"{registry.address}/cli/bb:2@sha256:" in out
    assert f"{registry.address}/cli/bb:2 " in out and "cli/bb:1 " in out
    assert cli_main(["image", "push", "cli/nope:1", "--registry", registry.address, "--output", layout]) == 2
    assert cli_main(["image", "pull", "cli/bb:1", "--store", store_dir,
                     "--default-registry", registry.address]) == 2
    err = capsys.readouterr().err
    assert "no image cli/nope:1" in err and 'failed to pull image "cli/bb:1": manifest unknown' in err
