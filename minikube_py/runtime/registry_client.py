"""Image references and a client for the distribution (registry v2) HTTP API.

Only what pulling and pushing need: manifests by tag or digest, blobs by digest (streamed to disk
and checked against their sha256), monolithic blob uploads, and Bearer-token challenges. Plain HTTP
is used for registries the caller calls insecure, HTTPS otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yarl

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
IMAGE_MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
MANIFEST_TYPES = (*INDEX_TYPES, *IMAGE_MANIFEST_TYPES)

# A manifest is a few KiB; a registry answering with more is broken or hostile.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
CHUNK = 1024 * 1024

DOCKER_HUB = "docker.io"
_DOCKER_HUB_API = "registry-1.docker.io"

# The grammar of github.com/distribution/reference, reduced to what we accept.
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.?)+(?::[0-9]+)?|\[[0-9a-fA-F:]+\](?::[0-9]+)?")


class InvalidReference(ValueError):
    """An image name that is not a valid reference."""


class RegistryError(Exception):
    """A registry answered with an error; ``message`` is the registry's own words."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class DigestMismatch(RegistryError):
    """Content whose sha256 is not the digest it was asked for by."""

    def __init__(self, what: str, expected: str, actual: str) -> None:
        super().__init__(0, "DIGEST_INVALID", f"{what} digest mismatch: expected {expected}, got {actual}")


@dataclass(frozen=True)
class Reference:
    """A parsed image reference: ``registry/repository[:tag][@digest]``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    @property
    def tagged(self) -> str | None:
        return f"{self.name}:{self.tag}" if self.tag else None

    def with_digest(self, digest: str) -> str:
        return f"{self.name}@{digest}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def is_digest(text: str) -> bool:
    return _DIGEST.fullmatch(text) is not None


def parse_reference(text: str, default_registry: str = "") -> Reference:
    """Parse ``text``; names without a registry get ``default_registry`` and no tag means ``latest``.

    With an empty ``default_registry`` a name without a host stays without one (local build names).
    """
    original = text
    text = text.strip()
    if not text:
        raise InvalidReference("empty image name")
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            raise InvalidReference(
                f"invalid image name {original!r}: bad digest {digest!r} (want sha256:<64 hex>)")
    tag = None
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        text, tag = text[:colon], text[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise InvalidReference(f"invalid image name {original!r}: bad tag {tag!r}")
    parts = text.split("/")
    registry = ""
    first = parts[0]
    if len(parts) > 1 and ("." in first or ":" in first or first == "localhost"):
        registry = parts.pop(0)
        if not _DOMAIN.fullmatch(registry):
            raise InvalidReference(f"invalid image name {original!r}: bad registry {registry!r}")
    for part in parts:
        if not _COMPONENT.fullmatch(part):
            why = "repository name must be lowercase" if _COMPONENT.fullmatch(part.lower()) else \
                f"bad path component {part!r}"
            raise InvalidReference(f"invalid image name {original!r}: {why}")
    repository = "/".join(parts)
    if len(repository) > 255:
        raise InvalidReference(f"invalid image name {original!r}: repository name longer than 255 characters")
    if not registry:
        registry = default_registry
    if registry in (DOCKER_HUB, "index.docker.io"):
        registry = DOCKER_HUB
        if "/" not in repository:
            repository = f"library/{repository}"
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry=registry, repository=repository, tag=tag, digest=digest)


def api_host(registry: str) -> str:
    """The host:port that serves the API of ``registry`` (Docker Hub's name is not its API host)."""
    return _DOCKER_HUB_API if registry == DOCKER_HUB else registry


def _error_from_body(status: int, body: bytes, fallback: str) -> RegistryError:
    try:
        errors = json.loads(body).get("errors") or []
        first = errors[0]
        message = first.get("message") or first.get("code")
        return RegistryError(status, str(first.get("code", "")), str(message))
    except (ValueError, AttributeError, IndexError, TypeError):
        text = body.decode("utf-8", "replace").strip()
        return RegistryError(status, "", f"{fallback}: HTTP {status}{': ' + text[:200] if text else ''}")


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


@dataclass
class Manifest:
    body: bytes
    media_type: str
    digest: str

    def json(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.body)
        except ValueError as e:
            raise RegistryError(0, "MANIFEST_INVALID", f"manifest is not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise RegistryError(0, "MANIFEST_INVALID", "manifest is not a JSON object")
        return doc


class RegistryClient:
    """One registry; use as ``async with RegistryClient(...) as rc``."""

    def __init__(self, registry: str, *, insecure: bool = False, connect_timeout: float = 10.0,
                 read_timeout: float = 60.0) -> None:
        self.registry = registry
        scheme = "http" if insecure else "https"
        self.base = yarl.URL(f"{scheme}://{api_host(registry)}")
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._tokens: dict[str, str] = {}

    async def __aenter__(self) -> RegistryClient:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- requests with token auth ---------------------------------------------------------------

    async def _request(self, method: str, url: yarl.URL, scope: str, **kwargs: Any) -> aiohttp.ClientResponse:
        if self._session is None:
            raise RuntimeError("RegistryClient used outside 'async with'")
        headers = dict(kwargs.pop("headers", {}))
        for attempt in range(2):
            token = self._tokens.get(scope)
            if token:
                headers["Authorization"] = f"Bearer {token}"
            resp = await self._session.request(method, url, headers=headers, **kwargs)
            if resp.status != 401 or attempt == 1:
                return resp
            challenge = resp.headers.get("WWW-Authenticate", "")
            body = await resp.read()
            resp.release()
            scheme, params = _parse_challenge(challenge)
            if scheme != "bearer" or "realm" not in params:
                raise _error_from_body(401, body, "unauthorized")
            await self._fetch_token(params, scope)
            if "data" in kwargs and hasattr(kwargs["data"], "seek"):
                kwargs["data"].seek(0)
        raise AssertionError("unreachable")

    async def _fetch_token(self, params: dict[str, str], scope: str) -> None:
        assert self._session is not None
        query = {"service": params["service"]} if "service" in params else {}
        query["scope"] = params.get("scope") or scope
        async with self._session.get(yarl.URL(params["realm"]).update_query(query)) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise _error_from_body(resp.status, body, "token request failed")
        try:
            doc = json.loads(body)
            self._tokens[scope] = str(doc.get("token") or doc["access_token"])
        except (ValueError, KeyError, AttributeError):
            raise RegistryError(401, "UNAUTHORIZED", "token server answered without a token") from None

    # -- pulling --------------------------------------------------------------------------------

    async def get_manifest(self, repository: str, reference: str,
                           accept: Sequence[str] = MANIFEST_TYPES) -> Manifest:
        """Fetch a manifest by tag or digest; a digest reference is checked against the content."""
        url = self.base.with_path(f"/v2/{repository}/manifests/{reference}", encoded=False)
        resp = await self._request("GET", url, f"repository:{repository}:pull",
                                   headers={"Accept": ", ".join(accept)})
        async with resp:
            if resp.status != 200:
                raise _error_from_body(resp.status, await resp.read(), "manifest request failed")
            body = await _read_capped(resp, MAX_MANIFEST_BYTES, "manifest")
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            if is_digest(reference) and digest != reference:
                raise DigestMismatch("manifest", reference, digest)
            media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        manifest = Manifest(body=body, media_type=media_type, digest=digest)
        declared = manifest.json().get("mediaType")
        if isinstance(declared, str) and declared:
            manifest.media_type = declared
        elif media_type not in MANIFEST_TYPES:
            # OCI manifests may omit mediaType; registries then serve what they stored.
            doc = manifest.json()
            manifest.media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
        return manifest

    async def download_blob(self, repository: str, digest: str, dest: Path, size: int | None = None) -> None:
        """Stream blob ``digest`` to ``dest``; it appears there only once its sha256 checked out."""
        url = self.base.with_path(f"/v2/{repository}/blobs/{digest}", encoded=False)
        resp = await self._request("GET", url, f"repository:{repository}:pull")
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".download-")
        try:
            async with resp:
                if resp.status != 200:
                    raise _error_from_body(resp.status, await resp.read(), f"blob {digest}")
                h = hashlib.sha256()
                written = 0
                with os.fdopen(fd, "wb") as f:
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        written += len(chunk)
                        if size is not None and written > size:
                            raise RegistryError(0, "SIZE_INVALID",
                                                f"blob {digest} is larger than its descriptor's {size} bytes")
                        h.update(chunk)
                        f.write(chunk)
            actual = "sha256:" + h.hexdigest()
            if actual != digest:
                raise DigestMismatch(f"blob {digest[:19]}", digest, actual)
            if size is not None and written != size:
                raise RegistryError(0, "SIZE_INVALID",
                                    f"blob {digest} has {written} bytes, descriptor says {size}")
            os.replace(tmp_name, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise

    # -- pushing --------------------------------------------------------------------------------

    async def blob_exists(self, repository: str, digest: str) -> bool:
        url = self.base.with_path(f"/v2/{repository}/blobs/{digest}", encoded=False)
        resp = await self._request("HEAD", url, f"repository:{repository}:pull,push")
        async with resp:
            if resp.status == 200:
                return True
            if resp.status == 404:
                return False
            raise _error_from_body(resp.status, await resp.read(), f"blob {digest}")

    async def upload_blob(self, repository: str, digest: str, path: Path) -> None:
        """POST a new upload, then PUT the whole blob with its digest (the monolithic flow)."""
        scope = f"repository:{repository}:pull,push"
        start = self.base.with_path(f"/v2/{repository}/blobs/uploads/", encoded=False)
        resp = await self._request("POST", start, scope)
        async with resp:
            if resp.status not in (201, 202):
                raise _error_from_body(resp.status, await resp.read(), "starting blob upload")
            location = resp.headers.get("Location")
        if not location:
            raise RegistryError(resp.status, "", "registry started an upload without a Location")
        target = self.base.join(yarl.URL(location)).update_query({"digest": digest})
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            resp = await self._request("PUT", target, scope, data=f, headers={
                "Content-Type": "application/octet-stream", "Content-Length": str(size)})
            async with resp:
                if resp.status != 201:
                    raise _error_from_body(resp.status, await resp.read(), f"uploading blob {digest}")

    async def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """Store a manifest under a tag (or digest); returns the digest the registry reports."""
        url = self.base.with_path(f"/v2/{repository}/manifests/{reference}", encoded=False)
        resp = await self._request("PUT", url, f"repository:{repository}:pull,push", data=body,
                                   headers={"Content-Type": media_type})
        async with resp:
            if resp.status not in (200, 201):
                raise _error_from_body(resp.status, await resp.read(), "uploading manifest")
            reported = resp.headers.get("Docker-Content-Digest", "")
        ours = "sha256:" + hashlib.sha256(body).hexdigest()
        if reported and reported != ours:
            raise DigestMismatch("stored manifest", ours, reported)
        return ours


async def _read_capped(resp: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        total += len(chunk)
        if total > limit:
            raise RegistryError(0, "SIZE_INVALID", f"{what} larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
