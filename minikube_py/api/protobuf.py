"""Kubernetes protobuf request bodies, turned into the JSON object the same request would carry as JSON.

kubectl >= 1.32 sends the bodies of its typed clients (``create namespace|configmap|deployment|...``,
``auth can-i``, ``auth whoami``, ``create token``) only as protobuf: the magic ``k8s\\0``, then a
``runtime.Unknown`` message {1: typeMeta{1: apiVersion, 2: kind}, 2: raw, 3: contentEncoding,
4: contentType} whose ``raw`` is the object. The server stores and answers JSON, so it decodes here.

Field numbers and JSON semantics come from the table in :mod:`minikube_py.api.protobuf_fields`. Go's
JSON encoder is the reference for the output: ``omitempty`` zero values are left out, nil slices and
maps without ``omitempty`` are ``null``, non-pointer structs are always emitted (``"status": {}``), and
pointer fields appear exactly when the sender set them, even to zero (``replicas: 0``). Go's protobuf
encoder writes every non-pointer scalar, so presence on the wire only means something for pointers.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from minikube_py.api.protobuf_fields import MESSAGES, ROOTS

CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

# The API group of an apiVersion -> the package prefix of the table's message names.
_GROUP_PACKAGES = {
    "": "core",
    "apps": "apps",
    "coordination.k8s.io": "coordination",
    "discovery.k8s.io": "discovery",
    "authorization.k8s.io": "authorization",
    "authentication.k8s.io": "authentication",
    "rbac.authorization.k8s.io": "rbac",
}

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_SCALAR_WIRE = {"string": _LEN, "bytes": _LEN, "bool": _VARINT, "int32": _VARINT, "int64": _VARINT,
                "uint32": _VARINT, "uint64": _VARINT, "double": _FIXED64, "float": _FIXED32}
_ZERO: dict[str, Any] = {"string": "", "bytes": "", "bool": False, "int32": 0, "int64": 0, "uint32": 0,
                         "uint64": 0, "double": 0.0, "float": 0.0}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Go's zero time.Time (0001-01-01T00:00:00Z) as Unix seconds: JSON shows it as null.
_GO_ZERO_SECONDS = -62135596800
_MAX_VARINT = (1 << 64) - 1


class UnsupportedProtobuf(ValueError):
    """A well-formed body we do not read: an unknown kind or a content encoding (HTTP 415, not 400)."""


def is_protobuf(content_type: str) -> bool:
    """Whether a Content-Type header names the Kubernetes protobuf encoding (parameters ignored)."""
    return content_type.split(";", 1)[0].strip().lower() == CONTENT_TYPE


def decode(body: bytes) -> dict[str, Any]:
    """The object of a Kubernetes protobuf body as Kubernetes JSON (``kind``, ``apiVersion``, ``metadata``,
    ``spec``, ...), with JSON field names and Go's omission rules.

    Raises ValueError on malformed input, and its subclass :class:`UnsupportedProtobuf` for a kind we have
    no table for or an encoding we do not read.
    """
    if not isinstance(body, bytes | bytearray | memoryview):
        raise ValueError("protobuf body must be bytes")
    body = bytes(body)
    if not body.startswith(MAGIC):
        raise ValueError("not a Kubernetes protobuf body: it does not start with the magic bytes 'k8s\\x00'")
    envelope = _collect(body[len(MAGIC):], "runtime.Unknown")
    type_meta = _collect(_one_bytes(envelope, 1, "runtime.Unknown.typeMeta"), "runtime.TypeMeta")
    api_version = _text(_one_bytes(type_meta, 1, "TypeMeta.apiVersion"), "TypeMeta.apiVersion")
    kind = _text(_one_bytes(type_meta, 2, "TypeMeta.kind"), "TypeMeta.kind")
    encoding = _text(_one_bytes(envelope, 3, "runtime.Unknown.contentEncoding"), "contentEncoding")
    content_type = _text(_one_bytes(envelope, 4, "runtime.Unknown.contentType"), "contentType")
    if encoding:
        raise UnsupportedProtobuf(f"unsupported protobuf contentEncoding {encoding!r}")
    if content_type and not is_protobuf(content_type):
        raise UnsupportedProtobuf(f"unsupported contentType {content_type!r} inside a protobuf envelope")
    if not kind or not api_version:
        raise ValueError("protobuf body has no apiVersion/kind in its typeMeta")
    message = _message_name(api_version, kind)
    obj: dict[str, Any] = {"kind": kind, "apiVersion": api_version}
    obj.update(_decode_message(message, _one_bytes(envelope, 2, "runtime.Unknown.raw")))
    return obj


def _message_name(api_version: str, kind: str) -> str:
    group, _, version = api_version.rpartition("/")
    package = _GROUP_PACKAGES.get(group)
    name = f"{package}.{version}.{kind}"
    if package is None or name not in _ROOT_SET:
        raise UnsupportedProtobuf(f"unsupported kind for a protobuf body: {api_version} {kind}")
    return name


# ---------------------------------------------------------------------------------------------- table

@dataclass(frozen=True, slots=True)
class _Field:
    number: int
    json: str
    type: str
    repeated: bool
    map: bool
    omitempty: bool
    omitzero: bool
    pointer: bool
    inline: bool


def _parse_table(raw: dict[str, str]) -> dict[str, tuple[_Field, ...]]:
    table = {}
    for name, spec in raw.items():
        fields = []
        for item in spec.split():
            number, json_name, type_name, *rest = item.split(":")
            flags = rest[0] if rest else ""
            fields.append(_Field(int(number), json_name, type_name, "r" in flags, "m" in flags, "o" in flags,
                                 "z" in flags, "p" in flags, "i" in flags))
        table[name] = tuple(fields)
    return table


_TABLE = _parse_table(MESSAGES)
_ROOT_SET = frozenset(ROOTS)
_BY_NUMBER = {name: {f.number: f for f in fields} for name, fields in _TABLE.items()}


# ----------------------------------------------------------------------------------------------- wire

def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("malformed protobuf: truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift >= 70:
            raise ValueError("malformed protobuf: varint longer than 10 bytes")
    if result > _MAX_VARINT:
        raise ValueError("malformed protobuf: varint overflows 64 bits")
    return result, pos


def _fields(data: bytes, where: str) -> list[tuple[int, int, int | bytes]]:
    """Every (field number, wire type, value) of a message; values are ints or the bytes of LEN fields."""
    out: list[tuple[int, int, int | bytes]] = []
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError(f"malformed protobuf in {where}: field number 0")
        value: int | bytes
        if wire == _VARINT:
            value, pos = _varint(data, pos)
        elif wire == _LEN:
            length, pos = _varint(data, pos)
            if length > end - pos:
                raise ValueError(f"malformed protobuf in {where}: field {number} runs past the end")
            value, pos = data[pos:pos + length], pos + length
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            if size > end - pos:
                raise ValueError(f"malformed protobuf in {where}: field {number} runs past the end")
            value, pos = int.from_bytes(data[pos:pos + size], "little"), pos + size
        else:
            raise ValueError(f"malformed protobuf in {where}: unsupported wire type {wire} (field {number})")
        out.append((number, wire, value))
    return out


def _collect(data: bytes, where: str) -> dict[int, list[tuple[int, int | bytes]]]:
    grouped: dict[int, list[tuple[int, int | bytes]]] = {}
    for number, wire, value in _fields(data, where):
        grouped.setdefault(number, []).append((wire, value))
    return grouped


def _one_bytes(grouped: dict[int, list[tuple[int, int | bytes]]], number: int, where: str) -> bytes:
    """A singular LEN field: the last occurrence wins (protobuf's rule), absent is empty."""
    values = grouped.get(number)
    if not values:
        return b""
    wire, value = values[-1]
    if wire != _LEN or not isinstance(value, bytes):
        raise ValueError(f"malformed protobuf: {where} has wire type {wire}, expected length-delimited")
    return value


def _text(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"malformed protobuf: {where} is not valid UTF-8") from e


# --------------------------------------------------------------------------------------------- values

def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _scalar(type_name: str, wire: int, value: int | bytes, where: str) -> Any:
    expected = _SCALAR_WIRE[type_name]
    if wire != expected:
        raise ValueError(f"malformed protobuf: {where} ({type_name}) has wire type {wire}, "
                         f"expected {expected}")
    if isinstance(value, bytes):
        return _text(value, where) if type_name == "string" else base64.b64encode(value).decode("ascii")
    match type_name:
        case "bool":
            return value != 0
        case "int32":
            return _signed(value, 32)
        case "int64":
            return _signed(value, 64)
        case "uint32":
            return value & 0xFFFFFFFF
        case "double":
            return struct.unpack("<d", value.to_bytes(8, "little"))[0]
        case "float":
            return struct.unpack("<f", value.to_bytes(4, "little"))[0]
    return value


def _packed(type_name: str, data: bytes, where: str) -> list[Any]:
    """A packed repeated scalar: one LEN field holding the values back to back."""
    wire = _SCALAR_WIRE[type_name]
    out, pos = [], 0
    while pos < len(data):
        if wire == _VARINT:
            value, pos = _varint(data, pos)
        else:
            size = 8 if wire == _FIXED64 else 4
            if size > len(data) - pos:
                raise ValueError(f"malformed protobuf: packed {where} is truncated")
            value, pos = int.from_bytes(data[pos:pos + size], "little"), pos + size
        out.append(_scalar(type_name, wire, value, where))
    return out


def _need_bytes(wire: int, value: int | bytes, where: str) -> bytes:
    if wire != _LEN or not isinstance(value, bytes):
        raise ValueError(f"malformed protobuf: {where} has wire type {wire}, expected a message")
    return value


def _value(type_name: str, wire: int, value: int | bytes, where: str) -> Any:
    """One element of a field, as JSON."""
    if type_name in _SCALAR_WIRE:
        return _scalar(type_name, wire, value, where)
    data = _need_bytes(wire, value, where)
    if type_name.startswith("@"):
        return _special(type_name, data, where)
    return _decode_message(type_name, data)


def _zero(type_name: str) -> Any:
    """The JSON of a field the wire did not carry (Go's zero value)."""
    if type_name in _ZERO:
        return _ZERO[type_name]
    if type_name.startswith("@"):
        return _special(type_name, b"", type_name)
    return _decode_message(type_name, b"")


def _is_empty(value: Any) -> bool:
    """Go's omitempty test on a JSON value: false, 0, "", and empty slices and maps."""
    return value is None or value is False or value == 0 or value == "" or value == [] or value == {}


def _decode_message(name: str, data: bytes) -> dict[str, Any]:
    fields = _TABLE[name]
    by_number = _BY_NUMBER[name]
    grouped: dict[int, list[tuple[int, int | bytes]]] = {}
    for number, wire, value in _fields(data, name):
        if number in by_number:  # unknown numbers are skipped: we could not name them
            grouped.setdefault(number, []).append((wire, value))
    out: dict[str, Any] = {}
    for f in fields:
        where = f"{name}.{f.json or f.type}"
        occurrences = grouped.get(f.number, [])
        if f.map:
            entries = {}
            for wire, value in occurrences:
                key, item = _map_entry(f.type, _need_bytes(wire, value, where), where)
                entries[key] = item
            if entries or not f.omitempty:
                # Go writes map keys sorted, and a nil map as null.
                out[f.json] = {k: entries[k] for k in sorted(entries)} if entries else None
        elif f.repeated:
            items: list[Any] = []
            for wire, value in occurrences:
                if f.type in _SCALAR_WIRE and wire == _LEN and _SCALAR_WIRE[f.type] != _LEN:
                    items.extend(_packed(f.type, _need_bytes(wire, value, where), where))
                else:
                    items.append(_value(f.type, wire, value, where))
            if items or not f.omitempty:
                out[f.json] = items or None
        else:
            present = bool(occurrences)
            if present:
                value = _singular(f.type, occurrences, where)
            elif f.pointer:
                if not f.omitempty:
                    out[f.json] = None
                continue
            else:
                value = _zero(f.type)
            if f.inline:
                out.update(value)
            elif f.omitzero and (value is None or value == _zero(f.type)):
                continue
            elif f.omitempty and not f.pointer and _omittable(f.type) and _is_empty(value):
                continue
            else:
                out[f.json] = value
    return out


def _omittable(type_name: str) -> bool:
    """omitempty has no effect on Go structs: only scalars (and []byte) are ever left out by it."""
    return type_name in _SCALAR_WIRE


def _singular(type_name: str, occurrences: list[tuple[int, int | bytes]], where: str) -> Any:
    if type_name in _SCALAR_WIRE:
        wire, value = occurrences[-1]
        return _scalar(type_name, wire, value, where)
    # A message sent in several pieces is their merge, which for protobuf is the concatenation.
    return _value(type_name, _LEN, b"".join(_need_bytes(w, v, where) for w, v in occurrences), where)


def _map_entry(value_type: str, data: bytes, where: str) -> tuple[str, Any]:
    key, item, has_item = "", None, False
    for number, wire, value in _fields(data, where):
        if number == 1:
            key = _scalar("string", wire, value, f"{where} key")
        elif number == 2:
            item, has_item = _value(value_type, wire, value, f"{where}[{key}]"), True
    return key, item if has_item else _zero(value_type)


# ------------------------------------------------------------------------------------ special types

def _special(kind: str, data: bytes, where: str) -> Any:
    grouped = _collect(data, where)

    def scalar(number: int, type_name: str) -> Any:
        values = grouped.get(number)
        return _scalar(type_name, *values[-1], where) if values else _ZERO[type_name]

    match kind:
        case "@time" | "@microtime":
            if not data:
                return None
            seconds = scalar(1, "int64")
            # metav1.Time keeps whole seconds only; MicroTime keeps microseconds.
            nanos = scalar(2, "int32") if kind == "@microtime" else 0
            return _format_time(seconds, nanos, micro=kind == "@microtime", where=where)
        case "@quantity":
            return scalar(1, "string") or "0"
        case "@intorstring":
            kind_of = scalar(1, "int64")
            if kind_of == 0:
                return scalar(2, "int32")
            if kind_of == 1:
                return scalar(3, "string")
            raise ValueError(f"malformed protobuf: {where} IntOrString has type {kind_of}")
        case "@strings":
            values = [_scalar("string", w, v, where) for w, v in grouped.get(1, [])]
            return values or None
        case "@fieldsv1" | "@rawext":
            raw = _one_bytes(grouped, 1, where)
            if not raw:
                return None
            try:
                return json.loads(raw)
            except ValueError as e:
                raise ValueError(f"malformed protobuf: {where} does not hold JSON") from e
        case "@duration":
            return _format_duration(scalar(1, "int64"))
    raise ValueError(f"internal: unknown special type {kind}")


def _format_time(seconds: int, nanos: int, *, micro: bool, where: str) -> str | None:
    seconds += nanos // 1_000_000_000  # normalised as Go's time.Unix does
    nanos %= 1_000_000_000
    if seconds == _GO_ZERO_SECONDS and nanos == 0:
        return None
    try:
        moment = _EPOCH + timedelta(seconds=seconds)
    except OverflowError as e:
        raise ValueError(f"malformed protobuf: {where} time {seconds}s is out of range") from e
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.year < 1000:  # strftime does not pad years, Go's layout does
        text = f"{moment.year:04d}" + text[text.index("-"):]
    return f"{text}.{nanos // 1000:06d}Z" if micro else f"{text}Z"


def _format_duration(ns: int) -> str:
    """Go's time.Duration.String (metav1.Duration's JSON form)."""
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _trim(ns, size) + unit
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "")
    return sign + text + _trim(rest, 1_000_000_000) + "s"


def _trim(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{frac:0{digits}d}".rstrip("0")
