"""Objects as the store holds them: JSON bytes, with resourceVersion taken from the store revision.

As in Kubernetes' etcd3 storage, ``metadata.resourceVersion`` is never written into the stored bytes;
it is the key's ``mod_revision``, set when the object is read back.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from typing import Any

import orjson

from minikube_py.api import errors
from minikube_py.store import KeyValue

_last_stamp: tuple[int, str] = (-1, "")


def now_rfc3339() -> str:
    # Second resolution: one strftime per second serves every write within it (~7 us saved each).
    global _last_stamp
    second = int(time.time())
    if _last_stamp[0] != second:
        _last_stamp = (second, dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return _last_stamp[1]


def encode(obj: dict[str, Any]) -> bytes:
    """The stored form: without resourceVersion (a shallow copy of metadata, never the caller's)."""
    meta = obj.get("metadata")
    if meta and "resourceVersion" in meta:
        meta = dict(meta)
        del meta["resourceVersion"]
        obj = {**obj, "metadata": meta}
    return orjson.dumps(obj)


def decode(kv: KeyValue) -> dict[str, Any]:
    obj = orjson.loads(kv.value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(kv.mod_revision)
    return obj


def loads(data: bytes) -> Any:
    return orjson.loads(data)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def parse_resource_version(value: str | None, *, what: str = "resourceVersion") -> int | None:
    """A client-supplied resourceVersion: None when absent or empty; 400 when not a number."""
    if value is None or value == "":
        return None
    try:
        rv = int(value)
    except ValueError:
        raise errors.bad_request(f'invalid {what} "{value}": must be a decimal integer') from None
    if rv < 0:
        raise errors.bad_request(f'invalid {what} "{value}": must not be negative')
    return rv


def encode_continue(revision: int, last_key: str) -> str:
    token = orjson.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": last_key})
    return base64.urlsafe_b64encode(token).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(padded))
        return int(data["rv"]), str(data["start"])
    except Exception:
        raise errors.bad_request(f'invalid continue token "{token}"') from None


def meta(obj: dict[str, Any]) -> dict[str, Any]:
    m = obj.get("metadata")
    if m is None:
        m = obj["metadata"] = {}
    elif not isinstance(m, dict):
        raise errors.bad_request("metadata must be an object")
    return m
