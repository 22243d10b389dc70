"""Encryption at rest (``--encryption-provider-config``), as kube-apiserver does it.

An ``EncryptionConfiguration`` (apiserver.config.k8s.io/v1) names the resources to encrypt and an
ordered list of providers: the first one encrypts every write, all of them are tried on reads, so a
key rotation is "list the new key first, keep the old one", then rewrite the objects. Stored values
look like Kubernetes' own: ``k8s:enc:aescbc:v1:<key name>:`` followed by the IV and the ciphertext
(aesgcm: the nonce, the ciphertext and the tag).

:class:`EncryptingStore` wraps a :class:`~minikube_py.store.Store`; everything above it (registry,
watch, allocators) sees plaintext, the store below sees only ciphertext for the listed resources.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from minikube_py.pki import write_private_file
from minikube_py.store import Event, KeyValue, RangeResult, Store, StoreError, Watch

PREFIX = b"k8s:enc:"
API_VERSION = "apiserver.config.k8s.io/v1"
KIND = "EncryptionConfiguration"


class EncryptionConfigError(ValueError):
    """An EncryptionConfiguration that cannot be used; the message names the file and the field."""


class DecryptionError(StoreError):
    """A stored value no configured key can decrypt (the message never contains key material)."""


class StaleKeyValue(KeyValue):
    """A value read with a provider that is not the write provider: rewriting it re-encrypts it, so
    an update must not be skipped as a no-op (``stale`` is how the registry tells)."""

    __slots__ = ()
    stale = True


@dataclass(frozen=True)
class Key:
    name: str
    secret: bytes


@dataclass(frozen=True)
class Provider:
    kind: str  # aescbc, aesgcm, identity
    keys: tuple[Key, ...] = ()

    def encrypt(self, plain: bytes) -> bytes:
        if self.kind == "identity":
            return plain
        key = self.keys[0]
        head = PREFIX + f"{self.kind}:v1:{key.name}:".encode()
        if self.kind == "aesgcm":
            nonce = os.urandom(12)
            return head + nonce + AESGCM(key.secret).encrypt(nonce, plain, None)
        iv = os.urandom(16)
        padder = padding.PKCS7(128).padder()
        data = padder.update(plain) + padder.finalize()
        enc = Cipher(algorithms.AES(key.secret), modes.CBC(iv)).encryptor()
        return head + iv + enc.update(data) + enc.finalize()

    def decrypt(self, key: Key, body: bytes) -> bytes:
        if self.kind == "aesgcm":
            if len(body) < 12 + 16:
                raise ValueError("too short")
            return AESGCM(key.secret).decrypt(body[:12], body[12:], None)
        if len(body) < 32 or len(body) % 16:
            raise ValueError("not a whole number of blocks")
        dec = Cipher(algorithms.AES(key.secret), modes.CBC(body[:16])).decryptor()
        data = dec.update(body[16:]) + dec.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        return unpadder.update(data) + unpadder.finalize()


class Transformer:
    """The providers of one resource: encrypt with the first, decrypt with whichever matches."""

    def __init__(self, providers: Sequence[Provider]) -> None:
        if not providers:
            raise EncryptionConfigError("a resource needs at least one provider")
        self.providers = tuple(providers)
        self._keys: dict[tuple[str, str], tuple[Provider, Key]] = {}
        for p in self.providers:
            for k in p.keys:
                self._keys.setdefault((p.kind, k.name), (p, k))

    def to_store(self, plain: bytes) -> bytes:
        return self.providers[0].encrypt(plain)

    def from_store(self, key: str, raw: bytes) -> tuple[bytes, bool]:
        """(plaintext, stale): stale when another provider or key than the write one was used."""
        write = self.providers[0]
        if not raw.startswith(PREFIX):
            # Data written before encryption was turned on: readable while identity is listed.
            if not any(p.kind == "identity" for p in self.providers):
                raise DecryptionError(f"{key}: stored unencrypted, and no identity provider is configured")
            return raw, write.kind != "identity"
        try:
            kind, version, name, body = raw[len(PREFIX):].split(b":", 3)
        except ValueError:
            raise DecryptionError(f"{key}: malformed encrypted value") from None
        found = self._keys.get((kind.decode(errors="replace"), name.decode(errors="replace")))
        if found is None or version != b"v1":
            raise DecryptionError(f"{key}: encrypted with {kind.decode(errors='replace')} key "
                                  f"{name.decode(errors='replace')!r}, which is not configured")
        provider, k = found
        try:
            plain = provider.decrypt(k, body)
        except (ValueError, InvalidTag):
            raise DecryptionError(f"{key}: cannot decrypt with {provider.kind} key {k.name!r}") from None
        return plain, not (provider is write and k is write.keys[0])


def _key_bytes(path: str, where: str, value: Any) -> bytes:
    if not isinstance(value, str) or not value:
        raise EncryptionConfigError(f"{path}: {where}.secret is required (base64)")
    try:
        secret = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EncryptionConfigError(f"{path}: {where}.secret is not valid base64") from None
    if len(secret) not in (16, 24, 32):
        raise EncryptionConfigError(f"{path}: {where}.secret must be 16, 24 or 32 bytes, not {len(secret)}")
    return secret


def _provider(path: str, where: str, entry: Any) -> Provider:
    if not isinstance(entry, dict) or len(entry) != 1:
        raise EncryptionConfigError(f"{path}: {where} must name exactly one provider")
    (kind, body), = entry.items()
    if kind == "identity":
        return Provider("identity")
    if kind not in ("aescbc", "aesgcm"):
        raise EncryptionConfigError(f"{path}: {where}: unsupported provider {kind!r} "
                                    "(supported: aescbc, aesgcm, identity)")
    keys_raw = (body or {}).get("keys") if isinstance(body, dict) else None
    if not isinstance(keys_raw, list) or not keys_raw:
        raise EncryptionConfigError(f"{path}: {where}.{kind}.keys must list at least one key")
    keys = []
    for j, k in enumerate(keys_raw):
        kw = f"{where}.{kind}.keys[{j}]"
        if not isinstance(k, dict) or not isinstance(k.get("name"), str) or not k["name"] or ":" in k["name"]:
            raise EncryptionConfigError(f"{path}: {kw}.name is required (and may not contain ':')")
        keys.append(Key(k["name"], _key_bytes(path, kw, k.get("secret"))))
    return Provider(kind, tuple(keys))


def load_config(path: Path) -> dict[str, Transformer]:
    """Store prefix (``/registry/secrets/``) -> its transformer, from an EncryptionConfiguration file."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise EncryptionConfigError(f"cannot read {path}: {e}") from None
    except yaml.YAMLError as e:
        raise EncryptionConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND or doc.get("apiVersion") != API_VERSION:
        raise EncryptionConfigError(f"{path}: expected kind {KIND}, apiVersion {API_VERSION}")
    out: dict[str, Transformer] = {}
    for i, res in enumerate(doc.get("resources") or []):
        where = f"resources[{i}]"
        if not isinstance(res, dict) or not isinstance(res.get("resources"), list):
            raise EncryptionConfigError(f"{path}: {where}.resources must be a list")
        providers = res.get("providers")
        if not isinstance(providers, list) or not providers:
            raise EncryptionConfigError(f"{path}: {where}.providers must list at least one provider")
        transformer = Transformer([_provider(str(path), f"{where}.providers[{j}]", p)
                                   for j, p in enumerate(providers)])
        for name in res["resources"]:
            if not isinstance(name, str) or not name or "*" in name:
                raise EncryptionConfigError(f"{path}: {where}.resources: {name!r} is not a resource name")
            plural = name.split(".", 1)[0]  # "secrets" or "<plural>.<group>": keys hold only the plural
            out.setdefault(f"/registry/{plural}/", transformer)
    if not out:
        raise EncryptionConfigError(f"{path}: no resources to encrypt")
    return out


def config_yaml(keys: Sequence[tuple[str, bytes]], provider: str = "aescbc", resources: Sequence[str] = ("secrets",)
                ) -> str:
    """An EncryptionConfiguration with ``keys`` (write key first), then identity for old plaintext."""
    body = {"keys": [{"name": n, "secret": base64.b64encode(s).decode()} for n, s in keys]}
    doc = {"apiVersion": API_VERSION, "kind": KIND,
           "resources": [{"resources": list(resources), "providers": [{provider: body}, {"identity": {}}]}]}
    return yaml.safe_dump(doc, sort_keys=False)


def ensure_config(path: Path) -> Path:
    """Create ``path`` (mode 0600) with one random aescbc key unless it exists."""
    path = Path(path)
    if not path.exists():
        try:
            write_private_file(path, config_yaml([("key1", os.urandom(32))]).encode(), mode=0o600, overwrite=False)
        except FileExistsError:
            pass
    return path


class _EncryptingWatch(Watch):
    def __init__(self, inner: Watch, store: EncryptingStore) -> None:
        self._inner = inner
        self._store = store

    async def _events(self) -> AsyncIterator[Event]:
        async for ev in self._inner:
            kv = self._store._read(ev.kv) if ev.kv.value else ev.kv
            prev = self._store._read(ev.prev_kv) if ev.prev_kv is not None and ev.prev_kv.value else ev.prev_kv
            yield ev if (kv is ev.kv and prev is ev.prev_kv) else Event(ev.type, kv, prev)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def close(self) -> None:
        await self._inner.close()


class EncryptingStore(Store):
    """A store whose values under the configured prefixes are encrypted before they reach ``inner``."""

    def __init__(self, inner: Store, transformers: dict[str, Transformer]) -> None:
        self.inner = inner
        self.transformers = transformers

    def _transformer(self, key: str) -> Transformer | None:
        for prefix, t in self.transformers.items():
            if key.startswith(prefix):
                return t
        return None

    def _read(self, kv: KeyValue) -> KeyValue:
        t = self._transformer(kv.key)
        if t is None:
            return kv
        plain, stale = t.from_store(kv.key, kv.value)
        if stale:
            return StaleKeyValue(kv.key, plain, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
        return replace(kv, value=plain)

    def _write(self, key: str, value: bytes) -> bytes:
        t = self._transformer(key)
        return value if t is None else t.to_store(value)

    def _written(self, kv: KeyValue, plain: bytes) -> KeyValue:
        return replace(kv, value=plain) if self._transformer(kv.key) else kv

    async def get(self, key: str, revision: int | None = None) -> KeyValue | None:
        kv = await self.inner.get(key, revision)
        return None if kv is None else self._read(kv)

    async def range(self, prefix: str, limit: int = 0, start_after: str | None = None,
                    revision: int | None = None) -> RangeResult:
        res = await self.inner.range(prefix, limit, start_after, revision)
        if not any(p.startswith(prefix) or prefix.startswith(p) for p in self.transformers):
            return res
        return RangeResult([self._read(kv) for kv in res.items], res.revision, res.more, res.count)

    async def create(self, key: str, value: bytes, lease: int = 0) -> KeyValue:
        return self._written(await self.inner.create(key, self._write(key, value), lease), value)

    async def update(self, key: str, value: bytes, expected_mod_revision: int, lease: int = 0) -> KeyValue:
        return self._written(await self.inner.update(key, self._write(key, value), expected_mod_revision, lease),
                             value)

    async def delete(self, key: str, expected_mod_revision: int | None = None) -> KeyValue:
        kv = await self.inner.delete(key, expected_mod_revision)
        return self._read(kv) if kv.value else kv

    async def guaranteed_update(self, key: str,
                                update_fn: Callable[[KeyValue | None], Awaitable[bytes | None] | bytes | None],
                                *, create_if_missing: bool = False, max_attempts: int = 100) -> KeyValue | None:
        return await Store.guaranteed_update(self, key, update_fn, create_if_missing=create_if_missing,
                                             max_attempts=max_attempts)

    def watch(self, prefix: str, from_revision: int) -> Watch:
        return _EncryptingWatch(self.inner.watch(prefix, from_revision), self)

    async def current_revision(self) -> int:
        return await self.inner.current_revision()

    async def compact(self, revision: int) -> None:
        await self.inner.compact(revision)

    async def compacted_revision(self) -> int:
        return await self.inner.compacted_revision()

    async def grant_lease(self, ttl_seconds: int) -> int:
        return await self.inner.grant_lease(ttl_seconds)

    async def keepalive_lease(self, lease_id: int) -> int:
        return await self.inner.keepalive_lease(lease_id)

    async def revoke_lease(self, lease_id: int) -> None:
        await self.inner.revoke_lease(lease_id)

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # Backend extras (e.g. the SQLite store's maintenance calls) stay reachable.
        return getattr(self.inner, name)
