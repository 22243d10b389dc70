"""Kubernetes' validation of the served kinds: every problem at once, worded as the apiserver words it.

Each problem is a :class:`Cause` whose ``field`` is the Kubernetes field path and whose ``message``
is what kubectl prints after ``<field>: `` (``Invalid value: "Bad_Name": a lowercase RFC 1123 ...``).
Objects reach us already defaulted, but may hold anything JSON can: a wrong type is reported as a
cause, never raised.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import ipaddress
import json
import re
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from .defaults import VOLUME_SOURCES
from .errors import Cause
from .resources import ResourceInfo

# -- quantities -------------------------------------------------------------------------------

QUANTITY_REGEX_TEXT = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
_QUANTITY = re.compile(
    r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?")
_BINARY_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_SUFFIX = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
}


def parse_quantity(text: str | int | float) -> Decimal:
    """A Kubernetes resource quantity (``100m``, ``64Mi``, ``1.5``, ``2e3``) as an exact Decimal.

    Raises ValueError with the apiserver's own message for anything else. CPU in cores and memory
    in bytes: ``parse_quantity("250m") == Decimal("0.25")``, ``parse_quantity("1Ki") == 1024``.
    """
    if isinstance(text, bool):
        raise ValueError(f"quantities must match the regular expression '{QUANTITY_REGEX_TEXT}'")
    if isinstance(text, int):
        return Decimal(text)
    if isinstance(text, float):
        return Decimal(repr(text))
    if not isinstance(text, str):
        raise ValueError(f"quantities must match the regular expression '{QUANTITY_REGEX_TEXT}'")
    match = _QUANTITY.fullmatch(text.strip())
    if not match:
        raise ValueError(f"quantities must match the regular expression '{QUANTITY_REGEX_TEXT}'")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        value = Decimal(number)
    except InvalidOperation:  # pragma: no cover - the regex admits only decimal numbers
        raise ValueError(f"quantities must match the regular expression '{QUANTITY_REGEX_TEXT}'") from None
    if suffix in _BINARY_SUFFIX:
        return value * _BINARY_SUFFIX[suffix]
    if suffix in _DECIMAL_SUFFIX:
        return value * _DECIMAL_SUFFIX[suffix]
    return value.scaleb(int(suffix[1:]))


# -- name and label rules (k8s.io/apimachinery/pkg/util/validation) ---------------------------

DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN_FMT = DNS1123_LABEL_FMT + "(\\." + DNS1123_LABEL_FMT + ")*"
DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
LABEL_VALUE_FMT = "(" + QUALIFIED_NAME_FMT + ")?"
CONFIG_MAP_KEY_FMT = "[-._a-zA-Z0-9]+"

_DNS1123_LABEL = re.compile(DNS1123_LABEL_FMT)
_DNS1123_SUBDOMAIN = re.compile(DNS1123_SUBDOMAIN_FMT)
_DNS1035_LABEL = re.compile(DNS1035_LABEL_FMT)
_QUALIFIED_NAME = re.compile(QUALIFIED_NAME_FMT)
_LABEL_VALUE = re.compile(LABEL_VALUE_FMT)
_CONFIG_MAP_KEY = re.compile(CONFIG_MAP_KEY_FMT)
_PERCENT = re.compile("[0-9]+%")

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
QUALIFIED_NAME_MAX = 63
LABEL_VALUE_MAX = 63
TOTAL_ANNOTATION_SIZE = 256 * 1024
MAX_SECRET_SIZE = 1024 * 1024  # also the ConfigMap limit (core.MaxSecretSize)
NODE_PORT_RANGE = (30000, 32767)


def _regex_error(message: str, fmt: str, *examples: str) -> str:
    # Kubernetes joins examples with " or " after a trailing ", ", hence its double space.
    text = message
    if examples:
        text += " (e.g. " + " or ".join(f"'{e}', " for e in examples)
    else:
        text += " ("
    return text + f"regex used for validation is '{fmt}')"


def _max_len(length: int) -> str:
    return f"must be no more than {length} characters"


def is_dns1123_label(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_LABEL_MAX:
        errs.append(_max_len(DNS1123_LABEL_MAX))
    if not _DNS1123_LABEL.fullmatch(value):
        if _DNS1123_SUBDOMAIN.fullmatch(value):
            errs.append("must not contain dots")
        else:
            errs.append(_regex_error(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
                "and must start and end with an alphanumeric character",
                DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(_max_len(DNS1123_SUBDOMAIN_MAX))
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        errs.append(_regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
            "and must start and end with an alphanumeric character",
            DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def is_dns1035_label(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_LABEL_MAX:
        errs.append(_max_len(DNS1123_LABEL_MAX))
    if not _DNS1035_LABEL.fullmatch(value):
        errs.append(_regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
            "alphabetic character, and end with an alphanumeric character",
            DNS1035_LABEL_FMT, "my-name", "abc-123"))
    return errs


_QUALIFIED_NAME_MSG = ("must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                       "with an alphanumeric character")


# Label and annotation keys that passed: a cluster uses a few hundred, and every object repeats them.
_QUALIFIED_OK: set[str] = set()
_QUALIFIED_OK_MAX = 4096


def is_qualified_name(value: str) -> list[str]:
    """A label key or annotation key: an optional DNS-subdomain prefix and '/', then a name <= 63."""
    if value in _QUALIFIED_OK:
        return []
    errs = _qualified_name_errors(value)
    if not errs and len(_QUALIFIED_OK) < _QUALIFIED_OK_MAX:
        _QUALIFIED_OK.add(value)
    return errs


def _qualified_name_errors(value: str) -> list[str]:
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + msg for msg in is_dns1123_subdomain(prefix))
    else:
        return [
            "a qualified name "
            + _regex_error(_QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > QUALIFIED_NAME_MAX:
        errs.append("name part " + _max_len(QUALIFIED_NAME_MAX))
    if not _QUALIFIED_NAME.fullmatch(name):
        errs.append("name part "
                    + _regex_error(_QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc"))
    return errs


def is_label_value(value: str) -> list[str]:
    errs = []
    if len(value) > LABEL_VALUE_MAX:
        errs.append(_max_len(LABEL_VALUE_MAX))
    if not _LABEL_VALUE.fullmatch(value):
        errs.append(_regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character",
            LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errs


def is_config_map_key(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(_max_len(DNS1123_SUBDOMAIN_MAX))
    if not _CONFIG_MAP_KEY.fullmatch(value):
        errs.append(_regex_error(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            CONFIG_MAP_KEY_FMT, "key.name", "KEY_NAME", "key-name"))
    if value == ".":
        errs.append("must not be '.'")
    elif value == "..":
        errs.append("must not be '..'")
    elif value.startswith(".."):
        errs.append("must not start with '..'")
    return errs


def is_valid_port_num(port: Any) -> list[str]:
    if isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535:
        return []
    return ["must be between 1 and 65535, inclusive"]


def is_valid_port_name(name: str) -> list[str]:
    errs = []
    if len(name) > 15:
        errs.append("must be no more than 15 characters")
    if not re.fullmatch("[-a-z0-9]+", name):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search("[a-z]", name):
        errs.append("must contain at least one letter (a-z)")
    if "--" in name:
        errs.append("must not contain consecutive hyphens")
    if name and (name[0] == "-" or name[-1] == "-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def _path_segment_errors(name: str) -> list[str]:
    # rest.IsValidPathSegmentName: what a name may never be, whatever the kind's own rule.
    if name in (".", ".."):
        return [f"may not be '{name}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in name]


def _name_rule(info: ResourceInfo) -> Callable[[str], list[str]]:
    if info.group == "" and info.kind == "Namespace":
        return is_dns1123_label
    if info.group == "" and info.kind == "Service":
        return is_dns1035_label
    if info.group == "rbac.authorization.k8s.io":
        return lambda _name: []  # ValidateRBACName: any path segment, so "system:node" is fine
    return is_dns1123_subdomain


def validate_name(info: ResourceInfo, name: str) -> list[str]:
    """The messages for a bad ``name`` of this kind (empty list = valid); also for names in paths."""
    if not isinstance(name, str):
        return ["must be a string"]
    if not name:
        return ["name or generateName is required"]
    return _path_segment_errors(name) + _name_rule(info)(name)


# -- Go-style rendering of bad values ---------------------------------------------------------


class GoValue(str):
    """A value already rendered the way Go's ``%#v`` would: inserted into the message verbatim."""


def go_quote(text: str) -> str:
    """Go's strconv.Quote: what the apiserver prints around a bad string value."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                        "\t": "\\t", "\v": "\\v"}[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif not ch.isprintable():
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def go_map(value: Any) -> GoValue:
    """``map[string]string{"a":"b"}`` as Go prints a label map (keys sorted; nil for missing)."""
    if value is None:
        return GoValue("map[string]string(nil)")
    if not isinstance(value, dict):
        return GoValue(_render(value))
    body = ", ".join(f"{go_quote(str(k))}:{go_quote(str(v))}" for k, v in sorted(value.items()))
    return GoValue(f"map[string]string{{{body}}}")


def go_strings(values: Any) -> GoValue:
    if values is None:
        return GoValue("[]string(nil)")
    return GoValue("[]string{" + ", ".join(go_quote(str(v)) for v in values) + "}")


def go_label_selector(selector: Any) -> GoValue:
    if not isinstance(selector, dict):
        return GoValue(_render(selector))
    expressions = selector.get("matchExpressions")
    if expressions is None:
        rendered = "[]v1.LabelSelectorRequirement(nil)"
    else:
        items = []
        for e in expressions if isinstance(expressions, list) else []:
            e = e if isinstance(e, dict) else {}
            key, operator = go_quote(str(e.get("key", ""))), go_quote(str(e.get("operator", "")))
            items.append(f"v1.LabelSelectorRequirement{{Key:{key}, Operator:{operator}, "
                         f"Values:{go_strings(e.get('values'))}}}")
        rendered = "[]v1.LabelSelectorRequirement{" + ", ".join(items) + "}"
    return GoValue(f"v1.LabelSelector{{MatchLabels:{go_map(selector.get('matchLabels'))}, "
                   f"MatchExpressions:{rendered}}}")


def _render(value: Any) -> str:
    if isinstance(value, GoValue):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, str):
        return go_quote(value)
    return json.dumps(value, sort_keys=True, default=str)


# -- collecting errors ------------------------------------------------------------------------


class Errors(list[Cause]):
    """field.ErrorList: one method per Kubernetes error type, each writing the apiserver's wording."""

    def required(self, path: str, detail: str = "") -> None:
        self.append(Cause(path, _with_detail("Required value", detail), "FieldValueRequired"))

    def invalid(self, path: str, value: Any, detail: str) -> None:
        message = _with_detail(f"Invalid value: {_render(value)}", detail)
        self.append(Cause(path, message, "FieldValueInvalid"))

    def not_supported(self, path: str, value: Any, supported: Iterable[str]) -> None:
        quoted = ", ".join(go_quote(s) for s in supported)
        self.append(Cause(path, f"Unsupported value: {_render(value)}: supported values: {quoted}",
                          "FieldValueNotSupported"))

    def duplicate(self, path: str, value: Any) -> None:
        self.append(Cause(path, f"Duplicate value: {_render(value)}", "FieldValueDuplicate"))

    def not_found(self, path: str, value: Any) -> None:
        self.append(Cause(path, f"Not found: {_render(value)}", "FieldValueNotFound"))

    def forbidden(self, path: str, detail: str) -> None:
        self.append(Cause(path, _with_detail("Forbidden", detail), "FieldValueForbidden"))

    def too_long(self, path: str, max_bytes: int) -> None:
        self.append(Cause(path, f"Too long: may not be more than {max_bytes} bytes", "FieldValueTooLong"))

    def too_many(self, path: str, actual: int, most: int) -> None:
        self.append(Cause(path, f"Too many: {actual}: must have at most {most} items", "FieldValueTooMany"))

    def immutable(self, path: str, value: Any) -> None:
        self.invalid(path, value, "field is immutable")

    # Typed access: a field of the wrong JSON type is reported once and then treated as absent.

    def dict_at(self, parent: dict, key: str, path: str) -> dict:
        value = parent.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.invalid(path, value, "must be an object")
            return {}
        return value

    def list_at(self, parent: dict, key: str, path: str) -> list:
        value = parent.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.invalid(path, value, "must be an array")
            return []
        return value

    def str_at(self, parent: dict, key: str, path: str) -> str:
        value = parent.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            self.invalid(path, value, "must be a string")
            return ""
        return value

    def int_at(self, parent: dict, key: str, path: str) -> int | None:
        value = parent.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.invalid(path, value, "must be an integer")
            return None
        return value

    def string_map_at(self, parent: dict, key: str, path: str) -> dict[str, str]:
        value = self.dict_at(parent, key, path)
        out = {}
        for k, v in value.items():
            if not isinstance(v, str):
                self.invalid(f"{path}[{k}]", v, "must be a string")
            else:
                out[k] = v
        return out


def _with_detail(head: str, detail: str) -> str:
    return f"{head}: {detail}" if detail else head


def _items(errs: Errors, parent: dict, key: str, path: str) -> Iterable[tuple[int, str, dict]]:
    """(index, path, element) for each object in a list field; non-objects are reported."""
    for i, item in enumerate(errs.list_at(parent, key, path)):
        item_path = f"{path}[{i}]"
        if isinstance(item, dict):
            yield i, item_path, item
        else:
            errs.invalid(item_path, item, "must be an object")


def _nonnegative(errs: Errors, parent: dict, key: str, path: str) -> int | None:
    value = errs.int_at(parent, key, path)
    if value is not None and value < 0:
        errs.invalid(path, value, "must be greater than or equal to 0")
    return value


# -- the entry point --------------------------------------------------------------------------


def validate(info: ResourceInfo, obj: dict, old: dict | None = None) -> list[Cause]:
    """Every problem at once, as Kubernetes reports them (field path + message + reason);
    `old` given = an update: also check immutable fields. Empty list = valid."""
    errs = Errors()
    if not isinstance(obj, dict):
        errs.invalid("", GoValue(type(obj).__name__), f"a {info.kind} must be a JSON object")
        return list(errs)
    meta = errs.dict_at(obj, "metadata", "metadata")
    _validate_object_meta(errs, info, meta, "metadata")
    create, update = _VALIDATORS.get((info.group, info.kind), (None, None))
    if create is not None:
        create(errs, obj)
    if old is not None and isinstance(old, dict):
        old_meta = old.get("metadata") if isinstance(old.get("metadata"), dict) else {}
        _validate_object_meta_update(errs, meta, old_meta)
        if update is not None:
            update(errs, obj, old)
    return list(errs)


# -- metadata ---------------------------------------------------------------------------------


def _validate_object_meta(errs: Errors, info: ResourceInfo, meta: dict, path: str) -> None:
    rule = _name_rule(info)
    generate_name = errs.str_at(meta, "generateName", f"{path}.generateName")
    if generate_name:
        # A prefix may end in '-': Kubernetes masks that dash before checking.
        masked = generate_name
        if len(masked) > 1 and masked.endswith("-"):
            masked = masked[:-1] + "a"
        for msg in rule(masked):
            errs.invalid(f"{path}.generateName", generate_name, msg)
    name = errs.str_at(meta, "name", f"{path}.name")
    if not name:
        errs.required(f"{path}.name", "name or generateName is required")
    else:
        for msg in rule(name):
            errs.invalid(f"{path}.name", name, msg)
    namespace = errs.str_at(meta, "namespace", f"{path}.namespace")
    if info.namespaced:
        if not namespace:
            errs.required(f"{path}.namespace")
        else:
            for msg in is_dns1123_label(namespace):
                errs.invalid(f"{path}.namespace", namespace, msg)
    elif namespace:
        errs.forbidden(f"{path}.namespace", "not allowed on this type")
    _nonnegative(errs, meta, "generation", f"{path}.generation")
    validate_labels(errs, errs.string_map_at(meta, "labels", f"{path}.labels"), f"{path}.labels")
    _validate_annotations(errs, errs.string_map_at(meta, "annotations", f"{path}.annotations"),
                          f"{path}.annotations")
    _validate_owner_references(errs, meta, f"{path}.ownerReferences")
    for i, finalizer in enumerate(errs.list_at(meta, "finalizers", f"{path}.finalizers")):
        if not isinstance(finalizer, str):
            errs.invalid(f"{path}.finalizers[{i}]", finalizer, "must be a string")
            continue
        for msg in is_qualified_name(finalizer):
            errs.invalid(f"{path}.finalizers", finalizer, msg)


def validate_labels(errs: Errors, labels: dict[str, str], path: str) -> None:
    for key, value in labels.items():
        for msg in is_qualified_name(key):
            errs.invalid(path, key, msg)
        for msg in is_label_value(value):
            errs.invalid(path, value, msg)


def _validate_annotations(errs: Errors, annotations: dict[str, str], path: str) -> None:
    size = 0
    for key, value in annotations.items():
        # Annotation keys are qualified names whose case does not matter.
        for msg in is_qualified_name(key.lower()):
            errs.invalid(path, key, msg)
        size += len(key.encode()) + len(value.encode())
    if size > TOTAL_ANNOTATION_SIZE:
        errs.too_long(path, TOTAL_ANNOTATION_SIZE)


def _validate_owner_references(errs: Errors, meta: dict, path: str) -> None:
    controllers: list[str] = []
    for _, _ref_path, ref in _items(errs, meta, "ownerReferences", path):
        # Kubernetes reports these on the list's path, not the element's.
        for key, what in (("apiVersion", "version"), ("kind", "kind"), ("name", "name"), ("uid", "uid")):
            if not ref.get(key):
                errs.invalid(f"{path}.{key}", ref.get(key) or "", f"{what} must not be empty")
        if ref.get("controller") is True:
            controllers.append(f"{ref.get('kind')}/{ref.get('name')}")
    if len(controllers) > 1:
        errs.invalid(path, GoValue("[]v1.OwnerReference{...}"),
                     'Only one reference can have Controller set to true. Found "true" in references for '
                     + " and ".join(controllers))


def _validate_object_meta_update(errs: Errors, new: dict, old: dict) -> None:
    for key in ("name", "namespace", "uid", "creationTimestamp"):
        old_value, new_value = old.get(key), new.get(key)
        if old_value and new_value and old_value != new_value:
            errs.immutable(f"metadata.{key}", new_value)


# -- pods -------------------------------------------------------------------------------------

_RESTART_POLICIES = ("Always", "OnFailure", "Never")
_DNS_POLICIES = ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None")
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_MESSAGE_POLICIES = ("File", "FallbackToLogsOnError")
_PROTOCOLS = ("SCTP", "TCP", "UDP")
_TAINT_EFFECTS = ("NoExecute", "NoSchedule", "PreferNoSchedule")
_TOLERATION_OPERATORS = ("Equal", "Exists")
_PROBE_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")
_INT32_MAX = 2**31 - 1


def _validate_pod(errs: Errors, pod: dict) -> None:
    validate_pod_spec(errs, errs.dict_at(pod, "spec", "spec"), "spec")


# Pod specs that validated clean, by (path, JSON bytes): a ReplicaSet's or DaemonSet's pods share
# one spec, and its check (~130 us) dwarfs encoding it once more (~4 us). Validation is a pure
# function of the spec and the path, so a hit can only ever skip a check that found nothing.
_CLEAN_SPECS: dict[tuple[str, bytes], None] = {}
_CLEAN_SPECS_MAX = 256


def validate_pod_spec(errs: Errors, spec: dict, path: str) -> None:
    """ValidatePodSpec: the shared checks for pods and every pod template."""
    try:
        key: tuple[str, bytes] | None = (path, orjson.dumps(spec))
    except TypeError:  # not JSON (e.g. an integer beyond 64 bits): checked every time
        key = None
    if key is not None and key in _CLEAN_SPECS:
        return
    before = len(errs)
    _validate_pod_spec(errs, spec, path)
    if key is not None and len(errs) == before:
        if len(_CLEAN_SPECS) >= _CLEAN_SPECS_MAX:
            # the oldest first; another thread may have got there first
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                del _CLEAN_SPECS[next(iter(_CLEAN_SPECS))]
        _CLEAN_SPECS[key] = None


def _validate_pod_spec(errs: Errors, spec: dict, path: str) -> None:
    volumes = _validate_volumes(errs, spec, f"{path}.volumes")
    names: set[str] = set()
    if not spec.get("containers"):
        errs.required(f"{path}.containers")
    # Init containers are checked after the app containers, so a clash is reported on the init one.
    for group in ("containers", "initContainers", "ephemeralContainers"):
        for _, cpath, container in _items(errs, spec, group, f"{path}.{group}"):
            _validate_container(errs, container, cpath, names, volumes)

    restart = errs.str_at(spec, "restartPolicy", f"{path}.restartPolicy")
    if not restart:
        errs.required(f"{path}.restartPolicy")
    elif restart not in _RESTART_POLICIES:
        errs.not_supported(f"{path}.restartPolicy", restart, _RESTART_POLICIES)
    dns = errs.str_at(spec, "dnsPolicy", f"{path}.dnsPolicy")
    if not dns:
        errs.required(f"{path}.dnsPolicy")
    elif dns not in _DNS_POLICIES:
        errs.not_supported(f"{path}.dnsPolicy", dns, _DNS_POLICIES)

    node_selector = errs.string_map_at(spec, "nodeSelector", f"{path}.nodeSelector")
    validate_labels(errs, node_selector, f"{path}.nodeSelector")
    for key, rule in (("hostname", is_dns1123_label), ("subdomain", is_dns1123_label),
                      ("nodeName", is_dns1123_subdomain), ("serviceAccountName", is_dns1123_subdomain)):
        value = errs.str_at(spec, key, f"{path}.{key}")
        if value:
            for msg in rule(value):
                errs.invalid(f"{path}.{key}", value, msg)
    deadline = errs.int_at(spec, "activeDeadlineSeconds", f"{path}.activeDeadlineSeconds")
    if deadline is not None and not 1 <= deadline <= _INT32_MAX:
        errs.invalid(f"{path}.activeDeadlineSeconds", deadline,
                     f"must be between 1 and {_INT32_MAX}, inclusive")
    errs.int_at(spec, "terminationGracePeriodSeconds", f"{path}.terminationGracePeriodSeconds")
    _validate_tolerations(errs, spec, f"{path}.tolerations")


def _validate_container(errs: Errors, c: dict, path: str, names: set[str], volumes: set[str]) -> None:
    name = errs.str_at(c, "name", f"{path}.name")
    if not name:
        errs.required(f"{path}.name")
    else:
        for msg in is_dns1123_label(name):
            errs.invalid(f"{path}.name", name, msg)
        if name in names:
            errs.duplicate(f"{path}.name", name)
        names.add(name)
    image = errs.str_at(c, "image", f"{path}.image")
    if not image:
        errs.required(f"{path}.image")
    elif image != image.strip():
        errs.invalid(f"{path}.image", image, "must not have leading or trailing whitespace")
    pull = errs.str_at(c, "imagePullPolicy", f"{path}.imagePullPolicy")
    if not pull:
        errs.required(f"{path}.imagePullPolicy")
    elif pull not in _PULL_POLICIES:
        errs.not_supported(f"{path}.imagePullPolicy", pull, _PULL_POLICIES)
    policy = errs.str_at(c, "terminationMessagePolicy", f"{path}.terminationMessagePolicy")
    if not policy:
        errs.required(f"{path}.terminationMessagePolicy")
    elif policy not in _MESSAGE_POLICIES:
        errs.not_supported(f"{path}.terminationMessagePolicy", policy, _MESSAGE_POLICIES)
    _validate_container_ports(errs, c, f"{path}.ports")
    _validate_env(errs, c, f"{path}.env")
    _validate_volume_mounts(errs, c, f"{path}.volumeMounts", volumes)
    validate_resources(errs, errs.dict_at(c, "resources", f"{path}.resources"), f"{path}.resources")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if c.get(probe) is not None:
            _validate_probe(errs, errs.dict_at(c, probe, f"{path}.{probe}"), f"{path}.{probe}",
                            single_success=probe != "readinessProbe")


def _validate_container_ports(errs: Errors, c: dict, path: str) -> None:
    port_names: set[str] = set()
    for _, ppath, port in _items(errs, c, "ports", path):
        name = errs.str_at(port, "name", f"{ppath}.name")
        if name:
            msgs = is_valid_port_name(name)
            for msg in msgs:
                errs.invalid(f"{ppath}.name", name, msg)
            if not msgs and name in port_names:
                errs.duplicate(f"{ppath}.name", name)
            port_names.add(name)
        container_port = port.get("containerPort")
        if container_port in (None, 0):
            errs.required(f"{ppath}.containerPort")
        else:
            for msg in is_valid_port_num(container_port):
                errs.invalid(f"{ppath}.containerPort", container_port, msg)
        host_port = port.get("hostPort")
        if host_port not in (None, 0):
            for msg in is_valid_port_num(host_port):
                errs.invalid(f"{ppath}.hostPort", host_port, msg)
        _validate_protocol(errs, port, f"{ppath}.protocol")


def _validate_protocol(errs: Errors, parent: dict, path: str) -> None:
    protocol = errs.str_at(parent, "protocol", path)
    if not protocol:
        errs.required(path)
    elif protocol not in _PROTOCOLS:
        errs.not_supported(path, protocol, _PROTOCOLS)


def _validate_env(errs: Errors, c: dict, path: str) -> None:
    for _, epath, env in _items(errs, c, "env", path):
        name = errs.str_at(env, "name", f"{epath}.name")
        if not name:
            errs.required(f"{epath}.name")
        elif "=" in name or not all(" " <= ch <= "~" for ch in name):
            errs.invalid(f"{epath}.name", name, "a valid environment variable name must consist only of "
                         "printable ASCII characters other than '='")
        if env.get("value") not in (None, "") and env.get("valueFrom") is not None:
            errs.invalid(f"{epath}.valueFrom", "", "may not be specified when `value` is not empty")


def _validate_volume_mounts(errs: Errors, c: dict, path: str, volumes: set[str]) -> None:
    mount_paths: set[str] = set()
    for _, mpath, mount in _items(errs, c, "volumeMounts", path):
        name = errs.str_at(mount, "name", f"{mpath}.name")
        if not name:
            errs.required(f"{mpath}.name")
        elif name not in volumes:
            errs.not_found(f"{mpath}.name", name)
        mount_path = errs.str_at(mount, "mountPath", f"{mpath}.mountPath")
        if not mount_path:
            errs.required(f"{mpath}.mountPath")
        elif mount_path in mount_paths:
            errs.invalid(f"{mpath}.mountPath", mount_path, "must be unique")
        mount_paths.add(mount_path)


def _validate_volumes(errs: Errors, spec: dict, path: str) -> set[str]:
    names: set[str] = set()
    for _, vpath, volume in _items(errs, spec, "volumes", path):
        name = errs.str_at(volume, "name", f"{vpath}.name")
        if not name:
            errs.required(f"{vpath}.name")
        else:
            for msg in is_dns1123_label(name):
                errs.invalid(f"{vpath}.name", name, msg)
            if name in names:
                errs.duplicate(f"{vpath}.name", name)
            names.add(name)
        sources = [s for s in VOLUME_SOURCES if volume.get(s) is not None]
        if not sources:
            errs.required(vpath, "must specify a volume type")
        for source in sources:
            errs.dict_at(volume, source, f"{vpath}.{source}")  # every volume source is an object
        for extra in sources[1:]:
            errs.forbidden(f"{vpath}.{extra}", "may not specify more than 1 volume type")
    return names


def validate_resources(errs: Errors, resources: dict, path: str) -> None:
    """Requests and limits parse, are not negative, and no request exceeds its limit."""
    parsed: dict[str, dict[str, Decimal]] = {}
    for kind in ("limits", "requests"):
        parsed[kind] = {}
        for name, raw in errs.dict_at(resources, kind, f"{path}.{kind}").items():
            qpath = f"{path}.{kind}[{name}]"
            try:
                quantity = parse_quantity(raw)
            except ValueError as exc:
                errs.invalid(qpath, raw, str(exc))
                continue
            if quantity < 0:
                errs.invalid(qpath, raw, "must be greater than or equal to 0")
                continue
            parsed[kind][name] = quantity
    for name, request in parsed["requests"].items():
        limit = parsed["limits"].get(name)
        if limit is not None and request > limit:
            errs.invalid(f"{path}.requests[{name}]", str(resources["requests"][name]),
                         f"must be less than or equal to {name} limit of {resources['limits'][name]}")


def _validate_probe(errs: Errors, probe: dict, path: str, single_success: bool) -> None:
    handlers = [h for h in _PROBE_HANDLERS if probe.get(h) is not None]
    if not handlers:
        errs.required(path, "must specify a handler type")
    for extra in handlers[1:]:
        errs.forbidden(f"{path}.{extra}", "may not specify more than 1 handler type")
    for key in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold",
                "failureThreshold"):
        _nonnegative(errs, probe, key, f"{path}.{key}")
    success = probe.get("successThreshold")
    if single_success and isinstance(success, int) and success != 1:
        errs.invalid(f"{path}.successThreshold", success, "must be 1")
    for key in ("httpGet", "tcpSocket"):
        action = probe.get(key)
        if isinstance(action, dict):
            _validate_port_num_or_name(errs, action.get("port"), f"{path}.{key}.port")


def _validate_port_num_or_name(errs: Errors, port: Any, path: str) -> None:
    # An IntOrString: a string is a port name (even "80"), anything else a number; missing means 0.
    if isinstance(port, str):
        for msg in is_valid_port_name(port):
            errs.invalid(path, port, msg)
    else:
        value = 0 if port is None else port
        for msg in is_valid_port_num(value):
            errs.invalid(path, value, msg)


def _validate_tolerations(errs: Errors, spec: dict, path: str) -> None:
    for _, tpath, toleration in _items(errs, spec, "tolerations", path):
        key = errs.str_at(toleration, "key", f"{tpath}.key")
        if key:
            for msg in is_qualified_name(key):
                errs.invalid(f"{tpath}.key", key, msg)
        operator = errs.str_at(toleration, "operator", f"{tpath}.operator") or "Equal"
        value = errs.str_at(toleration, "value", f"{tpath}.value")
        if not key and operator != "Exists":
            errs.invalid(f"{tpath}.operator", operator, "operator must be Exists when `key` is empty, which "
                         "means \"match all values and all keys\"")
        if operator == "Exists" and value:
            errs.invalid(f"{tpath}.operator", toleration, "value must be empty when `operator` is 'Exists'")
        elif operator not in _TOLERATION_OPERATORS:
            errs.not_supported(f"{tpath}.operator", operator, _TOLERATION_OPERATORS)
        effect = errs.str_at(toleration, "effect", f"{tpath}.effect")
        if effect and effect not in _TAINT_EFFECTS:
            errs.not_supported(f"{tpath}.effect", effect, _TAINT_EFFECTS)
        seconds = toleration.get("tolerationSeconds")
        if seconds is not None and effect != "NoExecute":
            errs.invalid(f"{tpath}.effect", effect,
                         "effect must be 'NoExecute' when `tolerationSeconds` is set")


_POD_UPDATE_MESSAGE = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,"
    "`spec.activeDeadlineSeconds`,"
    "`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
)


def _validate_pod_update(errs: Errors, new: dict, old: dict) -> None:
    new_spec = new.get("spec") if isinstance(new.get("spec"), dict) else {}
    old_spec = old.get("spec") if isinstance(old.get("spec"), dict) else {}
    # Start from the old spec and let through only what may change; anything else left different
    # in the new spec is a forbidden change.
    munged = copy.deepcopy(old_spec)
    for group in ("containers", "initContainers"):
        old_list, new_list = munged.get(group), new_spec.get(group)
        if isinstance(old_list, list) and isinstance(new_list, list) and len(old_list) == len(new_list):
            for old_c, new_c in zip(old_list, new_list, strict=True):
                if isinstance(old_c, dict) and isinstance(new_c, dict) and "image" in new_c:
                    old_c["image"] = new_c["image"]
    _pod_update_deadline(errs, new_spec, old_spec, munged)
    grace_old = old_spec.get("terminationGracePeriodSeconds")
    grace_new = new_spec.get("terminationGracePeriodSeconds")
    if isinstance(grace_old, int) and grace_old < 0 and grace_new == 1:
        munged["terminationGracePeriodSeconds"] = 1
    if _tolerations_only_added(old_spec.get("tolerations"), new_spec.get("tolerations")):
        if "tolerations" in new_spec:
            munged["tolerations"] = new_spec["tolerations"]
        else:
            munged.pop("tolerations", None)
    old_node, new_node = old_spec.get("nodeName"), new_spec.get("nodeName")
    if not old_node and new_node:
        # Binding: the one time nodeName may be written. Once set it never changes.
        munged["nodeName"] = new_node
    if munged != new_spec:
        errs.forbidden("spec", _POD_UPDATE_MESSAGE + "\n" + _spec_diff(munged, new_spec))


def _pod_update_deadline(errs: Errors, new_spec: dict, old_spec: dict, munged: dict) -> None:
    old_deadline, new_deadline = old_spec.get("activeDeadlineSeconds"), new_spec.get("activeDeadlineSeconds")
    if new_deadline == old_deadline:
        return
    path = "spec.activeDeadlineSeconds"
    if old_deadline is None:
        munged["activeDeadlineSeconds"] = new_deadline
    elif new_deadline is None:
        errs.invalid(path, None, "must not update from a positive integer to nil value")
        munged.pop("activeDeadlineSeconds", None)
    elif isinstance(new_deadline, int) and isinstance(old_deadline, int) and new_deadline > old_deadline:
        errs.invalid(path, new_deadline, "must be less than or equal to previous value")
        munged["activeDeadlineSeconds"] = new_deadline
    else:
        munged["activeDeadlineSeconds"] = new_deadline


def _tolerations_only_added(old: Any, new: Any) -> bool:
    old = old if isinstance(old, list) else []
    new = new if isinstance(new, list) else []
    remaining = list(new)
    for toleration in old:
        for i, candidate in enumerate(remaining):
            if candidate == toleration or _toleration_shortened(toleration, candidate):
                del remaining[i]
                break
        else:
            return False
    return True


def _toleration_shortened(old: Any, new: Any) -> bool:
    # A NoExecute toleration's seconds may only go down.
    if not isinstance(old, dict) or not isinstance(new, dict):
        return False
    rest_old = {k: v for k, v in old.items() if k != "tolerationSeconds"}
    rest_new = {k: v for k, v in new.items() if k != "tolerationSeconds"}
    old_s, new_s = old.get("tolerationSeconds"), new.get("tolerationSeconds")
    return rest_old == rest_new and isinstance(old_s, int) and isinstance(new_s, int) and new_s <= old_s


def _spec_diff(old: dict, new: dict) -> str:
    """A short account of which spec fields differ, in place of the Go struct diff Kubernetes prints."""
    lines = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            lines.append(f"-  {key}: {json.dumps(old.get(key), sort_keys=True)}")
            lines.append(f"+  {key}: {json.dumps(new.get(key), sort_keys=True)}")
    return "\n".join(lines)


# -- workloads --------------------------------------------------------------------------------

_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def validate_label_selector(errs: Errors, selector: dict, path: str) -> None:
    match_labels = errs.string_map_at(selector, "matchLabels", f"{path}.matchLabels")
    validate_labels(errs, match_labels, f"{path}.matchLabels")
    for _, epath, expr in _items(errs, selector, "matchExpressions", f"{path}.matchExpressions"):
        operator = errs.str_at(expr, "operator", f"{epath}.operator")
        values = errs.list_at(expr, "values", f"{epath}.values")
        if operator in ("In", "NotIn"):
            if not values:
                errs.required(f"{epath}.values", "must be specified when `operator` is 'In' or 'NotIn'")
        elif operator in ("Exists", "DoesNotExist"):
            if values:
                errs.forbidden(f"{epath}.values",
                               "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
        else:
            errs.invalid(f"{epath}.operator", operator, "not a valid selector operator")
        key = errs.str_at(expr, "key", f"{epath}.key")
        for msg in is_qualified_name(key):
            errs.invalid(f"{epath}.key", key, msg)
        for j, value in enumerate(values):
            if not isinstance(value, str):
                errs.invalid(f"{epath}.values[{j}]", value, "must be a string")
                continue
            for msg in is_label_value(value):
                errs.invalid(f"{epath}.values[{j}]", value, msg)


def selector_matches(selector: dict, labels: dict) -> bool:
    """Whether a metav1.LabelSelector (matchLabels + matchExpressions) selects these labels."""
    labels = labels if isinstance(labels, dict) else {}
    match_labels = selector.get("matchLabels")
    if isinstance(match_labels, dict):
        for key, value in match_labels.items():
            if labels.get(key) != value:
                return False
    expressions = selector.get("matchExpressions")
    for expr in expressions if isinstance(expressions, list) else []:
        if not isinstance(expr, dict):
            return False
        key, operator = expr.get("key"), expr.get("operator")
        values = expr.get("values") if isinstance(expr.get("values"), list) else []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _validate_workload(errs: Errors, obj: dict, what: str) -> dict:
    """Selector, template and its pod spec: the checks Deployment, ReplicaSet and DaemonSet share."""
    spec = errs.dict_at(obj, "spec", "spec")
    selector_value = spec.get("selector")
    selector_ok = False
    if selector_value is None:
        errs.required("spec.selector")
    elif not isinstance(selector_value, dict):
        errs.invalid("spec.selector", selector_value, "must be an object")
    else:
        before = len(errs)
        validate_label_selector(errs, selector_value, "spec.selector")
        if not selector_value.get("matchLabels") and not selector_value.get("matchExpressions"):
            errs.invalid("spec.selector", go_label_selector(selector_value),
                         f"empty selector is invalid for {what}")
        selector_ok = len(errs) == before
    template = spec.get("template")
    if not isinstance(template, dict):
        if template is None:
            errs.required("spec.template")
        else:
            errs.invalid("spec.template", template, "must be an object")
        return spec
    template_meta = errs.dict_at(template, "metadata", "spec.template.metadata")
    labels = errs.string_map_at(template_meta, "labels", "spec.template.metadata.labels")
    if selector_ok and not selector_matches(selector_value, labels):
        errs.invalid("spec.template.metadata.labels", go_map(template_meta.get("labels")),
                     "`selector` does not match template `labels`")
    validate_labels(errs, labels, "spec.template.metadata.labels")
    annotations_path = "spec.template.metadata.annotations"
    _validate_annotations(errs, errs.string_map_at(template_meta, "annotations", annotations_path),
                          annotations_path)
    pod_spec = errs.dict_at(template, "spec", "spec.template.spec")
    validate_pod_spec(errs, pod_spec, "spec.template.spec")
    restart = pod_spec.get("restartPolicy")
    if isinstance(restart, str) and restart in _RESTART_POLICIES and restart != "Always":
        errs.not_supported("spec.template.spec.restartPolicy", restart, ["Always"])
    if pod_spec.get("activeDeadlineSeconds") is not None:
        kind_name = {"deployment": "ReplicaSet", "replicaset": "ReplicaSet", "daemonset": "DaemonSet"}[what]
        errs.forbidden("spec.template.spec.activeDeadlineSeconds",
                       f"activeDeadlineSeconds in {kind_name} is not Supported")
    return spec


def _validate_int_or_percent(errs: Errors, value: Any, path: str) -> int | None:
    """ValidatePositiveIntOrPercent and IsNotMoreThan100Percent; returns the number for zero checks."""
    if isinstance(value, str):
        if not _PERCENT.fullmatch(value):
            errs.invalid(path, value, "a valid percent string must be a numeric string followed by an ending "
                         "'%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")
            return None
        percent = int(value[:-1])
        if percent > 100:
            errs.invalid(path, value, "must not be greater than 100%")
        return percent
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            errs.invalid(path, value, "must be greater than or equal to 0")
        return value
    if value is not None:
        errs.invalid(path, value, "must be an integer or percentage (e.g '5%')")
    return None


def _validate_deployment(errs: Errors, obj: dict) -> None:
    spec = _validate_workload(errs, obj, "deployment")
    _nonnegative(errs, spec, "replicas", "spec.replicas")
    min_ready = _nonnegative(errs, spec, "minReadySeconds", "spec.minReadySeconds") or 0
    _nonnegative(errs, spec, "revisionHistoryLimit", "spec.revisionHistoryLimit")
    deadline = _nonnegative(errs, spec, "progressDeadlineSeconds", "spec.progressDeadlineSeconds")
    if deadline is not None and deadline >= 0 and deadline <= min_ready:
        errs.invalid("spec.progressDeadlineSeconds", deadline, "must be greater than minReadySeconds")
    strategy = errs.dict_at(spec, "strategy", "spec.strategy")
    strategy_type = errs.str_at(strategy, "type", "spec.strategy.type")
    if strategy_type == "Recreate":
        if strategy.get("rollingUpdate") is not None:
            errs.forbidden("spec.strategy.rollingUpdate",
                           "may not be specified when strategy `type` is 'Recreate'")
    elif strategy_type == "RollingUpdate":
        rolling = strategy.get("rollingUpdate")
        if not isinstance(rolling, dict):
            errs.required("spec.strategy.rollingUpdate", "this should be defaulted and never be nil")
        else:
            path = "spec.strategy.rollingUpdate"
            unavailable = _validate_int_or_percent(errs, rolling.get("maxUnavailable"),
                                                   f"{path}.maxUnavailable")
            surge = _validate_int_or_percent(errs, rolling.get("maxSurge"), f"{path}.maxSurge")
            if unavailable == 0 and surge == 0:
                errs.invalid(f"{path}.maxUnavailable", rolling.get("maxUnavailable"),
                             "may not be 0 when `maxSurge` is 0")
    else:
        errs.not_supported("spec.strategy.type", strategy_type, ("Recreate", "RollingUpdate"))


def _validate_replica_set(errs: Errors, obj: dict) -> None:
    # Kubernetes' ReplicaSet validation really says "deployment" here.
    spec = _validate_workload(errs, obj, "deployment")
    _nonnegative(errs, spec, "replicas", "spec.replicas")
    _nonnegative(errs, spec, "minReadySeconds", "spec.minReadySeconds")


def _validate_daemon_set(errs: Errors, obj: dict) -> None:
    spec = _validate_workload(errs, obj, "daemonset")
    _nonnegative(errs, spec, "minReadySeconds", "spec.minReadySeconds")
    _nonnegative(errs, spec, "revisionHistoryLimit", "spec.revisionHistoryLimit")
    strategy = errs.dict_at(spec, "updateStrategy", "spec.updateStrategy")
    strategy_type = errs.str_at(strategy, "type", "spec.updateStrategy.type")
    if strategy_type == "RollingUpdate":
        rolling = strategy.get("rollingUpdate")
        if isinstance(rolling, dict):
            path = "spec.updateStrategy.rollingUpdate"
            unavailable = _validate_int_or_percent(errs, rolling.get("maxUnavailable"),
                                                   f"{path}.maxUnavailable")
            surge = _validate_int_or_percent(errs, rolling.get("maxSurge"), f"{path}.maxSurge")
            if unavailable and surge:
                errs.invalid(f"{path}.maxSurge", rolling.get("maxSurge"),
                             "may not be set when maxUnavailable is non-zero")
            elif unavailable == 0 and surge == 0:
                errs.required(f"{path}.maxUnavailable", "cannot be 0 when maxSurge is 0")
    elif strategy_type != "OnDelete":
        errs.not_supported("spec.updateStrategy.type", strategy_type, ("OnDelete", "RollingUpdate"))


def _validate_selector_update(errs: Errors, new: dict, old: dict) -> None:
    new_sel = (new.get("spec") or {}).get("selector") if isinstance(new.get("spec"), dict) else None
    old_sel = (old.get("spec") or {}).get("selector") if isinstance(old.get("spec"), dict) else None
    if new_sel != old_sel:
        errs.immutable("spec.selector", go_label_selector(new_sel))


# -- services and endpoints -------------------------------------------------------------------

_SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
_IP_MESSAGE = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"


def _service_port_repr(protocol: Any, port: Any, node_port: Any = 0) -> GoValue:
    return GoValue(
        f'core.ServicePort{{Name:"", Protocol:{go_quote(str(protocol))}, AppProtocol:(*string)(nil), '
        f'Port:{port}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:""}}, NodePort:{node_port}}}'
    )


def _validate_service(errs: Errors, obj: dict) -> None:
    spec = errs.dict_at(obj, "spec", "spec")
    service_type = errs.str_at(spec, "type", "spec.type")
    if not service_type:
        errs.required("spec.type")
    elif service_type not in _SERVICE_TYPES:
        errs.not_supported("spec.type", service_type, _SERVICE_TYPES)
    cluster_ip = errs.str_at(spec, "clusterIP", "spec.clusterIP")
    headless = cluster_ip == "None"
    if cluster_ip and not headless:
        try:
            ipaddress.ip_address(cluster_ip)
        except ValueError:
            errs.invalid("spec.clusterIPs[0]", cluster_ip, _IP_MESSAGE)
    if service_type == "ExternalName":
        external = errs.str_at(spec, "externalName", "spec.externalName")
        if not external:
            errs.required("spec.externalName")
        else:
            for msg in is_dns1123_subdomain(external.removesuffix(".")):
                errs.invalid("spec.externalName", external, msg)
    ports = list(_items(errs, spec, "ports", "spec.ports"))
    if not ports and not headless and service_type != "ExternalName":
        errs.required("spec.ports")
    names: set[str] = set()
    seen: set[tuple[Any, Any]] = set()
    seen_node: set[tuple[Any, Any]] = set()
    for _, ppath, port in ports:
        name = errs.str_at(port, "name", f"{ppath}.name")
        if len(ports) > 1 and not name:
            errs.required(f"{ppath}.name")
        elif name:
            for msg in is_dns1123_label(name):
                errs.invalid(f"{ppath}.name", name, msg)
            if name in names:
                errs.duplicate(f"{ppath}.name", name)
            names.add(name)
        number = port.get("port")
        for msg in is_valid_port_num(number):
            errs.invalid(f"{ppath}.port", number, msg)
        _validate_protocol(errs, port, f"{ppath}.protocol")
        _validate_port_num_or_name(errs, port.get("targetPort"), f"{ppath}.targetPort")
        node_port = port.get("nodePort")
        if node_port not in (None, 0):
            if service_type == "ClusterIP":
                errs.forbidden(f"{ppath}.nodePort", "may not be used when `type` is 'ClusterIP'")
            elif service_type in ("NodePort", "LoadBalancer") and (
                    isinstance(node_port, bool) or not isinstance(node_port, int)
                    or not NODE_PORT_RANGE[0] <= node_port <= NODE_PORT_RANGE[1]):
                low, high = NODE_PORT_RANGE
                errs.invalid(f"{ppath}.nodePort", node_port, "provided port is not in the valid range. "
                             f"The range of valid ports is {low}-{high}")
        key = (port.get("protocol"), number)
        if key in seen:
            errs.duplicate(ppath, _service_port_repr(port.get("protocol"), number))
        seen.add(key)
        if node_port not in (None, 0):
            node_key = (port.get("protocol"), node_port)
            if node_key in seen_node:
                errs.duplicate(f"{ppath}.nodePort", node_port)
            seen_node.add(node_key)
    validate_labels(errs, errs.string_map_at(spec, "selector", "spec.selector"), "spec.selector")
    _one_of(errs, spec, "sessionAffinity", ("ClientIP", "None"))
    _one_of(errs, spec, "internalTrafficPolicy", ("Cluster", "Local"))
    _one_of(errs, spec, "ipFamilyPolicy", ("SingleStack", "PreferDualStack", "RequireDualStack"))
    external_policy = spec.get("externalTrafficPolicy")
    if external_policy not in (None, ""):
        if service_type not in ("NodePort", "LoadBalancer"):
            errs.invalid("spec.externalTrafficPolicy", external_policy,
                         "may only be set when `type` is 'NodePort' or 'LoadBalancer'")
        else:
            _one_of(errs, spec, "externalTrafficPolicy", ("Cluster", "Local"))
    for i, family in enumerate(errs.list_at(spec, "ipFamilies", "spec.ipFamilies")):
        if family not in ("IPv4", "IPv6"):
            errs.not_supported(f"spec.ipFamilies[{i}]", family, ("IPv4", "IPv6"))


def _one_of(errs: Errors, parent: dict, key: str, supported: tuple[str, ...], prefix: str = "spec") -> None:
    value = parent.get(key)
    if value not in (None, "") and value not in supported:
        errs.not_supported(f"{prefix}.{key}", value, supported)


def _validate_service_update(errs: Errors, new: dict, old: dict) -> None:
    new_spec = new.get("spec") if isinstance(new.get("spec"), dict) else {}
    old_spec = old.get("spec") if isinstance(old.get("spec"), dict) else {}
    if "ExternalName" in (new_spec.get("type"), old_spec.get("type")):
        return  # a change to or from ExternalName releases or allocates the address
    old_ip, new_ip = old_spec.get("clusterIP"), new_spec.get("clusterIP")
    # An update that leaves clusterIP out keeps the allocated one (the server copies it over).
    if old_ip and new_ip and new_ip != old_ip:
        errs.invalid("spec.clusterIPs[0]", go_strings(new_spec.get("clusterIPs") or [new_ip]),
                     "may not change once set")


def _validate_endpoints(errs: Errors, obj: dict) -> None:
    for _, spath, subset in _items(errs, obj, "subsets", "subsets"):
        for key in ("addresses", "notReadyAddresses"):
            for _, apath, address in _items(errs, subset, key, f"{spath}.{key}"):
                ip = errs.str_at(address, "ip", f"{apath}.ip")
                if not ip:
                    errs.required(f"{apath}.ip")
                elif not _is_ip(ip):
                    errs.invalid(f"{apath}.ip", ip, _IP_MESSAGE)
        ports = list(_items(errs, subset, "ports", f"{spath}.ports"))
        for _, ppath, port in ports:
            name = errs.str_at(port, "name", f"{ppath}.name")
            if len(ports) > 1 and not name:
                errs.required(f"{ppath}.name")
            elif name:
                for msg in is_dns1123_label(name):
                    errs.invalid(f"{ppath}.name", name, msg)
            for msg in is_valid_port_num(port.get("port")):
                errs.invalid(f"{ppath}.port", port.get("port"), msg)
            _validate_protocol(errs, port, f"{ppath}.protocol")


def _is_ip(text: str, version: int | None = None) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return version is None or address.version == version


_ADDRESS_TYPES = ("FQDN", "IPv4", "IPv6")


def _validate_endpoint_slice(errs: Errors, obj: dict) -> None:
    address_type = errs.str_at(obj, "addressType", "addressType")
    if not address_type:
        errs.required("addressType")
    elif address_type not in _ADDRESS_TYPES:
        errs.not_supported("addressType", address_type, _ADDRESS_TYPES)
    endpoints = errs.list_at(obj, "endpoints", "endpoints")
    if len(endpoints) > 1000:
        errs.too_many("endpoints", len(endpoints), 1000)
    for _, epath, endpoint in _items(errs, obj, "endpoints", "endpoints"):
        addresses = errs.list_at(endpoint, "addresses", f"{epath}.addresses")
        if not addresses:
            errs.required(f"{epath}.addresses", "must contain at least 1 address")
        elif len(addresses) > 100:
            errs.too_many(f"{epath}.addresses", len(addresses), 100)
        for j, address in enumerate(addresses):
            apath = f"{epath}.addresses[{j}]"
            if not isinstance(address, str):
                errs.invalid(apath, address, "must be a string")
            elif address_type == "IPv4" and not _is_ip(address, 4):
                errs.invalid(apath, address, "must be a valid IPv4 address")
            elif address_type == "IPv6" and not _is_ip(address, 6):
                errs.invalid(apath, address, "must be a valid IPv6 address")
            elif address_type == "FQDN":
                for msg in is_dns1123_subdomain(address):
                    errs.invalid(apath, address, msg)
        hostname = endpoint.get("hostname")
        if isinstance(hostname, str) and hostname:
            for msg in is_dns1123_label(hostname):
                errs.invalid(f"{epath}.hostname", hostname, msg)
    names: set[str] = set()
    for _, ppath, port in _items(errs, obj, "ports", "ports"):
        name = port.get("name") or ""
        if name:
            for msg in is_dns1123_label(name):
                errs.invalid(f"{ppath}.name", name, msg)
        if name in names:
            errs.duplicate(f"{ppath}.name", name)
        names.add(name)
        if port.get("port") is not None:
            for msg in is_valid_port_num(port.get("port")):
                errs.invalid(f"{ppath}.port", port.get("port"), msg)
        if port.get("protocol") is not None:
            _validate_protocol(errs, port, f"{ppath}.protocol")


def _validate_endpoint_slice_update(errs: Errors, new: dict, old: dict) -> None:
    if old.get("addressType") and new.get("addressType") != old.get("addressType"):
        errs.immutable("addressType", new.get("addressType"))


# -- configuration ----------------------------------------------------------------------------


def _validate_config_map(errs: Errors, obj: dict) -> None:
    data = errs.string_map_at(obj, "data", "data")
    binary = errs.string_map_at(obj, "binaryData", "binaryData")
    size = 0
    for key, value in data.items():
        for msg in is_config_map_key(key):
            errs.invalid(f"data[{key}]", key, msg)
        size += len(key) + len(value.encode())
    for key, value in binary.items():
        for msg in is_config_map_key(key):
            errs.invalid(f"binaryData[{key}]", key, msg)
        if key in data:
            errs.invalid(f"binaryData[{key}]", key, "duplicate of key present in data")
        decoded = _base64_error(value)
        if decoded is not None:
            errs.invalid(f"binaryData[{key}]", "<binary data redacted>", decoded)
        size += len(key) + len(value) * 3 // 4
    if size > MAX_SECRET_SIZE:
        errs.too_long("", MAX_SECRET_SIZE)


def _base64_error(value: str) -> str | None:
    """None for valid standard base64, else Go's complaint (encoding/json decodes []byte with it)."""
    cleaned = value.replace("\r", "").replace("\n", "")
    for i, ch in enumerate(cleaned):
        if not (ch.isascii() and (ch.isalnum() or ch in "+/=")):
            return f"illegal base64 data at input byte {i}"
    try:
        base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        return f"illegal base64 data at input byte {max(len(cleaned) - 1, 0)}"
    return None


_SECRET_REQUIRED_KEYS = {
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
}


def _validate_secret(errs: Errors, obj: dict) -> None:
    data = errs.string_map_at(obj, "data", "data")
    string_data = errs.string_map_at(obj, "stringData", "stringData")
    size = 0
    for key, value in data.items():
        for msg in is_config_map_key(key):
            errs.invalid(f"data[{key}]", key, msg)
        problem = _base64_error(value)
        if problem is not None:
            errs.invalid(f"data[{key}]", "<secret contents redacted>", problem)
        size += len(value) * 3 // 4
    for key, value in string_data.items():
        for msg in is_config_map_key(key):
            errs.invalid(f"stringData[{key}]", key, msg)
        size += len(value.encode())
    if size > MAX_SECRET_SIZE:
        errs.too_long("data", MAX_SECRET_SIZE)
    keys = set(data) | set(string_data)
    secret_type = obj.get("type")
    for key in _SECRET_REQUIRED_KEYS.get(secret_type, ()) if isinstance(secret_type, str) else ():
        if key not in keys:
            errs.required(f"data[{key}]")
    if secret_type == "kubernetes.io/basic-auth" and not keys & {"username", "password"}:
        errs.required("data[username]")
        errs.required("data[password]")
    if secret_type == "kubernetes.io/service-account-token":
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        if not isinstance(annotations, dict) or not annotations.get("kubernetes.io/service-account.name"):
            errs.required("metadata.annotations[kubernetes.io/service-account.name]")


def _validate_immutable_data(errs: Errors, new: dict, old: dict, fields: tuple[str, ...]) -> None:
    if old.get("immutable") is not True:
        return
    if new.get("immutable") is not True:
        errs.forbidden("immutable", "field is immutable when `immutable` is set")
    for key in fields:
        if (new.get(key) or {}) != (old.get(key) or {}):
            errs.forbidden(key, "field is immutable when `immutable` is set")


def _validate_config_map_update(errs: Errors, new: dict, old: dict) -> None:
    _validate_immutable_data(errs, new, old, ("data", "binaryData"))


def _validate_secret_update(errs: Errors, new: dict, old: dict) -> None:
    if old.get("type") and new.get("type") != old.get("type"):
        errs.immutable("type", new.get("type"))
    _validate_immutable_data(errs, new, old, ("data",))


# -- cluster objects --------------------------------------------------------------------------


def _validate_node(errs: Errors, obj: dict) -> None:
    spec = errs.dict_at(obj, "spec", "spec")
    cidrs = errs.list_at(spec, "podCIDRs", "spec.podCIDRs")
    single = errs.str_at(spec, "podCIDR", "spec.podCIDR")
    for i, cidr in enumerate(cidrs or ([single] if single else [])):
        try:
            ipaddress.ip_network(cidr, strict=False)
            if "/" not in str(cidr):
                raise ValueError
        except (ValueError, TypeError):
            errs.invalid(f"spec.podCIDRs[{i}]", cidr,
                         "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")
    seen: set[tuple[str, str]] = set()
    for _, tpath, taint in _items(errs, spec, "taints", "spec.taints"):
        key = errs.str_at(taint, "key", f"{tpath}.key")
        if not key:
            errs.required(f"{tpath}.key")
        for msg in is_qualified_name(key) if key else ():
            errs.invalid(f"{tpath}.key", key, msg)
        value = errs.str_at(taint, "value", f"{tpath}.value")
        for msg in is_label_value(value) if value else ():
            errs.invalid(f"{tpath}.value", value, msg)
        effect = errs.str_at(taint, "effect", f"{tpath}.effect")
        if not effect:
            errs.required(f"{tpath}.effect")
        elif effect not in _TAINT_EFFECTS:
            errs.not_supported(f"{tpath}.effect", effect, _TAINT_EFFECTS)
        if (key, effect) in seen:
            errs.append(Cause(tpath, "Duplicate value: " + _render(GoValue(
                f"core.Taint{{Key:{go_quote(key)}, Value:{go_quote(value)}, Effect:{go_quote(effect)}, "
                "TimeAdded:(*v1.Time)(nil)}")) + ": taints must be unique by key and effect pair",
                "FieldValueDuplicate"))
        seen.add((key, effect))


def _validate_node_update(errs: Errors, new: dict, old: dict) -> None:
    new_spec = new.get("spec") if isinstance(new.get("spec"), dict) else {}
    old_spec = old.get("spec") if isinstance(old.get("spec"), dict) else {}
    old_cidrs = old_spec.get("podCIDRs") or ([old_spec["podCIDR"]] if old_spec.get("podCIDR") else [])
    new_cidrs = new_spec.get("podCIDRs") or ([new_spec["podCIDR"]] if new_spec.get("podCIDR") else [])
    if old_cidrs and new_cidrs != old_cidrs:
        errs.forbidden("spec.podCIDRs", 'node updates may not change podCIDR except from "" to valid')
    old_provider = old_spec.get("providerID")
    if old_provider and new_spec.get("providerID") != old_provider:
        errs.forbidden("spec.providerID", 'node updates may not change providerID except from "" to valid')


def _validate_namespace(errs: Errors, obj: dict) -> None:
    spec = errs.dict_at(obj, "spec", "spec")
    for i, finalizer in enumerate(errs.list_at(spec, "finalizers", "spec.finalizers")):
        if not isinstance(finalizer, str):
            errs.invalid(f"spec.finalizers[{i}]", finalizer, "must be a string")
            continue
        for msg in is_qualified_name(finalizer):
            errs.invalid("spec.finalizers", finalizer, msg)
    status = errs.dict_at(obj, "status", "status")
    _one_of(errs, status, "phase", ("Active", "Terminating"), prefix="status")


def _validate_lease(errs: Errors, obj: dict) -> None:
    spec = errs.dict_at(obj, "spec", "spec")
    duration = errs.int_at(spec, "leaseDurationSeconds", "spec.leaseDurationSeconds")
    if duration is not None and duration <= 0:
        errs.invalid("spec.leaseDurationSeconds", duration, "must be greater than 0")
    _nonnegative(errs, spec, "leaseTransitions", "spec.leaseTransitions")
    errs.str_at(spec, "holderIdentity", "spec.holderIdentity")


def _validate_event(errs: Errors, obj: dict) -> None:
    involved = errs.dict_at(obj, "involvedObject", "involvedObject")
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    namespace = meta.get("namespace") or ""
    involved_ns = errs.str_at(involved, "namespace", "involvedObject.namespace")
    # An event about a cluster-scoped object lives in "default" (or nowhere); otherwise namespaces agree.
    if (not involved_ns and namespace not in ("", "default")) or (involved_ns and involved_ns != namespace):
        errs.invalid("involvedObject.namespace", involved_ns, "does not match event.namespace")
    # core/v1 does not check type or reason (only events.k8s.io does), for old clients' sake.
    _nonnegative(errs, obj, "count", "count")


def _validate_service_account(errs: Errors, obj: dict) -> None:
    for _, spath, secret in _items(errs, obj, "secrets", "secrets"):
        errs.str_at(secret, "name", f"{spath}.name")
    for _, spath, secret in _items(errs, obj, "imagePullSecrets", "imagePullSecrets"):
        errs.str_at(secret, "name", f"{spath}.name")


def _validate_rules(errs: Errors, obj: dict, cluster: bool) -> None:
    for i, _, rule in _items(errs, obj, "rules", "rules"):
        path = f"rules[{i}]"
        if not errs.list_at(rule, "verbs", f"{path}.verbs"):
            errs.required(f"{path}.verbs", "verbs must contain at least one value")
        urls = errs.list_at(rule, "nonResourceURLs", f"{path}.nonResourceURLs")
        if urls and not cluster:
            errs.invalid(f"{path}.nonResourceURLs", urls, "namespaced rules cannot apply to non-resource URLs")
        if urls and (rule.get("apiGroups") or rule.get("resources")):
            errs.invalid(f"{path}.nonResourceURLs", urls, "rules cannot apply to both regular resources and "
                         "non-resource URLs")
        if not urls:
            if not errs.list_at(rule, "apiGroups", f"{path}.apiGroups"):
                errs.required(f"{path}.apiGroups", "resource rules must supply at least one api group")
            if not errs.list_at(rule, "resources", f"{path}.resources"):
                errs.required(f"{path}.resources", "resource rules must supply at least one resource")


def _validate_binding(errs: Errors, obj: dict, cluster: bool) -> None:
    ref = errs.dict_at(obj, "roleRef", "roleRef")
    kinds = ("ClusterRole",) if cluster else ("Role", "ClusterRole")
    if ref.get("apiGroup") != "rbac.authorization.k8s.io":
        errs.not_supported("roleRef.apiGroup", ref.get("apiGroup", ""), ["rbac.authorization.k8s.io"])
    if ref.get("kind") not in kinds:
        errs.not_supported("roleRef.kind", ref.get("kind", ""), kinds)
    if not errs.str_at(ref, "name", "roleRef.name"):
        errs.required("roleRef.name")
    for i, _, subject in _items(errs, obj, "subjects", "subjects"):
        path = f"subjects[{i}]"
        kind = subject.get("kind")
        if kind not in ("User", "Group", "ServiceAccount"):
            errs.not_supported(f"{path}.kind", kind or "", ["ServiceAccount", "User", "Group"])
        if not errs.str_at(subject, "name", f"{path}.name"):
            errs.required(f"{path}.name")
        if kind == "ServiceAccount" and cluster and not subject.get("namespace"):
            errs.required(f"{path}.namespace")


def _validate_role_ref_update(errs: Errors, new: dict, old: dict) -> None:
    if new.get("roleRef") != old.get("roleRef"):
        errs.invalid("roleRef", new.get("roleRef"), "cannot change roleRef")


Validator = Callable[[Errors, dict], None]
UpdateValidator = Callable[[Errors, dict, dict], None]

_VALIDATORS: dict[tuple[str, str], tuple[Validator | None, UpdateValidator | None]] = {
    ("", "Pod"): (_validate_pod, _validate_pod_update),
    ("", "Service"): (_validate_service, _validate_service_update),
    ("", "Endpoints"): (_validate_endpoints, None),
    ("", "ConfigMap"): (_validate_config_map, _validate_config_map_update),
    ("", "Secret"): (_validate_secret, _validate_secret_update),
    ("", "Node"): (_validate_node, _validate_node_update),
    ("", "Namespace"): (_validate_namespace, None),
    ("", "Event"): (_validate_event, None),
    ("", "ServiceAccount"): (_validate_service_account, None),
    ("apps", "Deployment"): (_validate_deployment, _validate_selector_update),
    ("apps", "ReplicaSet"): (_validate_replica_set, _validate_selector_update),
    ("apps", "DaemonSet"): (_validate_daemon_set, _validate_selector_update),
    ("coordination.k8s.io", "Lease"): (_validate_lease, None),
    ("discovery.k8s.io", "EndpointSlice"): (_validate_endpoint_slice, _validate_endpoint_slice_update),
    ("rbac.authorization.k8s.io", "Role"): (lambda e, o: _validate_rules(e, o, False), None),
    ("rbac.authorization.k8s.io", "ClusterRole"): (lambda e, o: _validate_rules(e, o, True), None),
    ("rbac.authorization.k8s.io", "RoleBinding"): (lambda e, o: _validate_binding(e, o, False),
                                                   _validate_role_ref_update),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): (lambda e, o: _validate_binding(e, o, True),
                                                          _validate_role_ref_update),
}
