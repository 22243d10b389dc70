"""PATCH bodies: JSON patch, JSON merge patch, strategic merge patch and server-side apply.

Every function is pure: it never mutates its inputs and returns a new object. To stay cheap on
large objects the result is built by copying only the containers along the patched paths, so
unpatched subtrees are *shared* with the input document. The top level and ``metadata`` of a
result are always fresh copies, because the API server stamps them (resourceVersion, generation,
managedFields); anything deeper must be copied before it is changed in place.

Errors mirror kube-apiserver (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go): a body
that does not decode is 400 BadRequest; a JSON patch that fails to apply (failed ``test``, missing
path) is 422 Invalid with the generic message and the detail as a cause; a strategic merge patch
with a malformed directive is 400; a list element without its merge key is the plain error
Kubernetes returns for it (500, no reason).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
import yaml

from minikube_py.api.errors import ApiError, Cause, bad_request, internal_error, invalid
from minikube_py.api.resources import ResourceInfo
from minikube_py.apiserver.merge_keys import FieldMeta, Struct, patch_schema

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# kube-apiserver refuses longer JSON patches with 413 (maxJSONPatchOperations).
MAX_JSON_PATCH_OPERATIONS = 10000

_MISSING: Any = object()
_DELETE: Any = object()  # a map carrying "$patch: delete"


# --------------------------------------------------------------------------- shared helpers

def _clone(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clone(v) for v in value]
    return value


def _hkey(value: Any) -> Any:
    """A hashable identity for a JSON value; JSON keeps true and 1 apart, Python does not."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    if value is None:
        return ("z",)
    return ("j", orjson.dumps(value, option=orjson.OPT_SORT_KEYS))


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict):
        return (isinstance(b, dict) and a.keys() == b.keys()
                and all(_json_equal(v, b[k]) for k, v in a.items()))
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_json_equal, a, b))
    if isinstance(a, int | float):
        return isinstance(b, int | float) and a == b
    return type(a) is type(b) and a == b


def _go_fmt(value: Any) -> str:
    """Go's ``%v`` of a decoded JSON value, which Kubernetes puts in some error messages."""
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_fmt(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go_fmt(v) for v in value) + "]"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _go_json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "null"


def _rejected(detail: str) -> ApiError:
    # errors.NewGenericServerResponse(422, ...): a fixed message, the real reason as a cause.
    # kubectl prints "The request is invalid: <detail>".
    return ApiError(422, "Invalid", "the server rejected our request due to an error in our request",
                    {"causes": [{"reason": "UnexpectedServerResponse", "message": detail}]})


def _plain_error(message: str) -> ApiError:
    # An error kube-apiserver does not wrap in a Status: 500 with no reason, printed by kubectl as
    # "Error from server: <message>".
    return ApiError(500, "", message)


def _own_metadata(result: dict, source: Any) -> dict:
    meta = result.get("metadata")
    if isinstance(meta, dict) and isinstance(source, dict) and meta is source.get("metadata"):
        result["metadata"] = dict(meta)
    return result


def _guard_depth(fn: Callable[[], dict]) -> dict:
    try:
        return fn()
    except RecursionError:
        raise bad_request("the patch or the object is nested too deeply") from None


# --------------------------------------------------------------------------- RFC 6902 JSON patch

def apply_json_patch(doc: dict, ops: list) -> dict:
    """Apply an RFC 6902 patch (add, remove, replace, move, copy, test) to ``doc``.

    Like kube-apiserver (evanphx/json-patch v4), array indices may be negative (counted from the
    end) and ``test`` of a missing path against ``null`` passes.
    """
    if not isinstance(ops, list):
        raise bad_request(
            f"json: cannot unmarshal {_go_json_kind(ops)} into Go value of type jsonpatch.Patch")
    if len(ops) > MAX_JSON_PATCH_OPERATIONS:
        raise ApiError(413, "RequestEntityTooLarge",
                       f"The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, "
                       f"got {len(ops)}")
    for op in ops:
        if not isinstance(op, dict):
            raise bad_request(
                f"json: cannot unmarshal {_go_json_kind(op)} into Go value of type jsonpatch.Operation")

    def run() -> dict:
        patcher = _JsonPatcher(doc)
        for op in ops:
            patcher.apply(op)
        if not isinstance(patcher.root, dict):
            raise _rejected("the patched document is not a JSON object")
        return _own_metadata(patcher.root, doc)

    return _guard_depth(run)


class _PathMissing(Exception):
    pass


class _BadIndex(Exception):
    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


_INDEX_RE = re.compile(r"-?[0-9]+")


def _tokens(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise _PathMissing
    if not path:
        return []
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _list_index(token: str, length: int, insert: bool) -> int:
    if insert and token == "-":
        return length
    if not _INDEX_RE.fullmatch(token):
        raise _BadIndex(f"value was not a proper array index: '{token}'")
    index = int(token)
    if index < 0:
        if index < -length:
            raise _BadIndex(f"Unable to access invalid index: {index}: invalid index referenced")
        index += length
    if index > (length if insert else length - 1):
        raise _BadIndex(f"Unable to access invalid index: {index}: invalid index referenced")
    return index


def _child(container: Any, token: str) -> Any:
    if isinstance(container, dict):
        if token not in container:
            raise _PathMissing
        return container[token]
    if isinstance(container, list):
        try:
            return container[_list_index(token, len(container), insert=False)]
        except _BadIndex:
            raise _PathMissing from None
    raise _PathMissing


class _JsonPatcher:
    """Applies operations with copy-on-write: a container is copied the first time it is written."""

    def __init__(self, doc: dict):
        self.root: Any = dict(doc)
        self._owned: set[int] = {id(self.root)}
        # Keep every copy alive so that no id() in _owned can be reused by a foreign object.
        self._alive: list[Any] = [self.root]

    def _own(self, value: Any) -> Any:
        copy = dict(value) if isinstance(value, dict) else list(value)
        self._owned.add(id(copy))
        self._alive.append(copy)
        return copy

    def _get(self, tokens: list[str]) -> Any:
        node = self.root
        for token in tokens:
            node = _child(node, token)
        return node

    def _parent(self, tokens: list[str]) -> Any:
        """The container holding the last token, owned by this patch (copied if needed)."""
        if id(self.root) not in self._owned:
            if not isinstance(self.root, dict | list):
                raise _PathMissing
            self.root = self._own(self.root)
        node = self.root
        for token in tokens[:-1]:
            child = _child(node, token)
            if not isinstance(child, dict | list):
                raise _PathMissing
            if id(child) not in self._owned:
                child = self._own(child)
                if isinstance(node, dict):
                    node[token] = child
                else:
                    node[_list_index(token, len(node), insert=False)] = child
            node = child
        if not isinstance(node, dict | list):
            raise _PathMissing
        return node

    def apply(self, op: dict) -> None:
        kind = op.get("op", "unknown")
        handler = {"add": self._add, "remove": self._remove, "replace": self._replace,
                   "move": self._move, "copy": self._copy, "test": self._test}.get(kind)
        if handler is None:
            raise _rejected(f"Unexpected kind: {kind}")
        if "path" not in op:
            raise _rejected(f"{kind} operation failed to decode path: missing value")
        if kind in ("add", "replace", "test") and "value" not in op:
            raise _rejected(f"{kind} operation, missing value field: missing value")
        if kind in ("move", "copy") and "from" not in op:
            raise _rejected(f"{kind} operation failed to decode from: missing value")
        handler(op)

    def _insert(self, path: str, value: Any, kind: str) -> None:
        try:
            tokens = _tokens(path)
            if not tokens:
                self.root = value
                return
            parent = self._parent(tokens)
        except _PathMissing:
            raise _rejected(
                f'{kind} operation does not apply: doc is missing path: "{path}": missing value') from None
        last = tokens[-1]
        if isinstance(parent, dict):
            parent[last] = value
            return
        try:
            parent.insert(_list_index(last, len(parent), insert=True), value)
        except _BadIndex as exc:
            raise _rejected(f"error in {kind} for path: '{path}': {exc.text}") from None

    def _add(self, op: dict) -> None:
        self._insert(op["path"], _clone(op["value"]), "add")

    def _delete(self, path: str, kind: str) -> Any:
        try:
            tokens = _tokens(path)
            if not tokens:
                raise _PathMissing
            parent = self._parent(tokens)
        except _PathMissing:
            raise _rejected(
                f'{kind} operation does not apply: doc is missing path: "{path}": missing value') from None
        last = tokens[-1]
        if isinstance(parent, dict):
            if last not in parent:
                raise _rejected(f"error in {kind} for path: '{path}': "
                                f"Unable to remove nonexistent key: {last}: missing value")
            return parent.pop(last)
        try:
            return parent.pop(_list_index(last, len(parent), insert=False))
        except _BadIndex as exc:
            raise _rejected(f"error in {kind} for path: '{path}': {exc.text}") from None

    def _remove(self, op: dict) -> None:
        self._delete(op["path"], "remove")

    def _replace(self, op: dict) -> None:
        path = op["path"]
        value = _clone(op["value"])
        try:
            tokens = _tokens(path)
            if not tokens:
                self.root = value
                return
            parent = self._parent(tokens)
        except _PathMissing:
            raise _rejected(f"replace operation does not apply: doc is missing path: {path}: missing value") \
                from None
        last = tokens[-1]
        if isinstance(parent, dict):
            if last not in parent:
                raise _rejected(
                    f"replace operation does not apply: doc is missing key: {path}: missing value")
            parent[last] = value
            return
        try:
            parent[_list_index(last, len(parent), insert=False)] = value
        except _BadIndex as exc:
            raise _rejected(f"error in replace for path: '{path}': {exc.text}") from None

    def _source(self, op: dict, kind: str) -> Any:
        try:
            return self._get(_tokens(op["from"]))
        except _PathMissing:
            raise _rejected(f"{kind} operation does not apply: doc is missing from path: {op['from']}: "
                            "missing value") from None

    def _move(self, op: dict) -> None:
        source, path = op["from"], op["path"]
        self._source(op, "move")
        if source == path:
            return
        if isinstance(path, str) and isinstance(source, str) and path.startswith(source + "/"):
            raise _rejected(f"move operation does not apply: cannot move {source} into its own child {path}")
        # The moved value leaves its old place, so it need not be copied; copy-on-write still
        # protects it if it came from the input document.
        self._insert(path, self._delete(source, "move"), "move")

    def _copy(self, op: dict) -> None:
        self._insert(op["path"], _clone(self._source(op, "copy")), "copy")

    def _test(self, op: dict) -> None:
        path, expected = op["path"], op["value"]
        try:
            actual = self._get(_tokens(path))
        except _PathMissing:
            if expected is None:
                return
            raise _rejected(f"testing value {path} failed: test failed") from None
        if not _json_equal(actual, expected):
            raise _rejected(f"testing value {path} failed: test failed")


# --------------------------------------------------------------------------- RFC 7386 merge patch

def apply_merge_patch(doc: dict, patch: dict) -> dict:
    """Apply an RFC 7386 JSON merge patch: maps merge, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        # evanphx/json-patch MergePatch: ErrBadJSONPatch, which kube-apiserver answers with 400.
        raise bad_request("Invalid JSON Patch")
    return _guard_depth(lambda: _own_metadata(_merge(doc if isinstance(doc, dict) else None, patch), doc))


def _merge(target: dict | None, patch: dict) -> dict:
    out = dict(target) if target else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            current = out.get(key)
            out[key] = _merge(current if isinstance(current, dict) else None, value)
        else:
            out[key] = _pruned(value)
    return out


def _pruned(value: Any) -> Any:
    """A copy of a patch value with null map entries dropped, as merge patch stores new values."""
    if isinstance(value, dict):
        return {k: _pruned(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


# --------------------------------------------------------------------------- strategic merge patch

_PATCH = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ORDER = "$setElementOrder/"
_DELETE_FROM = "$deleteFromPrimitiveList/"

# apimachinery/pkg/util/mergepatch errors that kube-apiserver answers with 400.
_ERR_PRIMITIVE = "invalid patch format of primitive list"
_ERR_RETAIN = "invalid patch format of retainKeys"
_ERR_SET_ORDER = "invalid patch format of setElementOrder list"


def apply_strategic_merge_patch(doc: dict, patch: dict, info: ResourceInfo) -> dict:
    """Apply a strategic merge patch as kube-apiserver does for the built-in kinds.

    Lists with a merge key (see merge_keys.py) merge element by element; tagged scalar lists
    (finalizers) merge as sets; other lists are replaced. Directives: ``$patch: replace|delete``
    in maps and list elements, ``$retainKeys``, ``$setElementOrder/<list>``,
    ``$deleteFromPrimitiveList/<list>``; ``null`` deletes a key. ``$patch: merge`` (the default)
    is accepted and ignored where Kubernetes would refuse it. A map patched with
    ``$patch: delete`` is removed where Kubernetes leaves an empty map, which its typed decoding
    then drops anyway.
    """
    if not isinstance(patch, dict):
        raise bad_request(
            f"json: cannot unmarshal {_go_json_kind(patch)} into Go value of type map[string]interface {{}}")

    def run() -> dict:
        out = _smp_map(doc if isinstance(doc, dict) else None, patch, patch_schema(info))
        if out is _DELETE:
            raise bad_request("a strategic merge patch cannot delete the whole object")
        return _own_metadata(out, doc)

    return _guard_depth(run)


def _smp_map(orig: dict | None, patch: dict, struct: Struct | None) -> Any:
    directive = patch.get(_PATCH, _MISSING)
    if directive is not _MISSING:
        if directive == "delete":
            return _DELETE
        if directive == "replace":
            orig = None
        elif directive != "merge":
            raise _plain_error(f"unknown patch type: {_go_fmt(directive)} in map: {_go_fmt(patch)}")
    out = dict(orig) if orig else {}

    retain = patch.get(_RETAIN_KEYS, _MISSING)
    if retain is not _MISSING:
        if not isinstance(retain, list) or not all(isinstance(k, str) for k in retain):
            raise bad_request(_ERR_RETAIN)
        keep = set(retain)
        for key, value in patch.items():
            if value is not None and not key.startswith("$") and key not in keep:
                raise bad_request(_ERR_RETAIN)
        out = {k: v for k, v in out.items() if k in keep}

    ordered: set[str] = set()
    deletions: list[tuple[str, Any]] = []
    for key, value in patch.items():
        if not key.startswith("$"):
            continue
        if key.startswith(_SET_ORDER):
            name = key[len(_SET_ORDER):]
            if not name or not isinstance(value, list):
                raise bad_request(_ERR_SET_ORDER)
            if _apply_element_order(out, name, value, patch, struct):
                ordered.add(name)
        elif key.startswith(_DELETE_FROM):
            name = key[len(_DELETE_FROM):]
            if not name or not isinstance(value, list):
                raise bad_request(_ERR_PRIMITIVE)
            deletions.append((name, value))

    for key, value in patch.items():
        if key.startswith("$") or key in ordered:
            continue
        if value is None:
            out.pop(key, None)
            continue
        meta = struct.get(key) if struct else None
        current = out.get(key)
        if isinstance(value, dict):
            merged = _smp_map(current if isinstance(current, dict) else None, value,
                              meta.struct if meta else None)
            if merged is _DELETE:
                out.pop(key, None)
            else:
                out[key] = merged
        elif isinstance(value, list):
            out[key] = _smp_list(current, value, meta)
        else:
            out[key] = value

    for name, values in deletions:
        current = out.get(name)
        if isinstance(current, list):
            drop = {_hkey(v) for v in values}
            out[name] = [v for v in current if _hkey(v) not in drop]
    return out


def _element_key(merge_key: str | None) -> Callable[[Any], Any]:
    if merge_key is None:
        return _hkey
    return lambda e: _hkey(e.get(merge_key)) if isinstance(e, dict) else _hkey(e)


def _apply_element_order(out: dict, name: str, order: list, patch: dict, struct: Struct | None) -> bool:
    """Merge list ``name`` and order it by ``$setElementOrder/<name>``; False leaves it to the main loop."""
    meta = struct.get(name) if struct else None
    current = out.get(name)
    original = current if isinstance(current, list) else None
    patched = patch.get(name, _MISSING)
    if patched is None:
        return False  # null deletes the list; there is nothing to order
    if patched is not _MISSING and not isinstance(patched, list):
        raise bad_request(_ERR_SET_ORDER)
    if patched is _MISSING:
        if original is None:
            return True
        merged = original
    else:
        merged = _smp_list(original, patched, meta)
    merge_key = meta.merge_key if meta else None
    if merge_key is not None:
        for item in order:
            if not isinstance(item, dict) or merge_key not in item:
                raise _no_merge_key(item, merge_key)
    keyf = _element_key(merge_key)
    out[name] = _order(merged, [keyf(e) for e in order], [keyf(e) for e in original or ()], keyf)
    return True


def _fresh_list(values: list, meta: FieldMeta | None) -> list:
    """A patch list stored as is: elements carrying ``$patch`` are dropped, maps are cleaned."""
    struct = meta.struct if meta else None
    out = []
    for value in values:
        if isinstance(value, dict):
            if _PATCH in value:
                continue
            out.append(_smp_map(None, value, struct))
        elif isinstance(value, list):
            out.append(_fresh_list(value, None))
        else:
            out.append(value)
    return out


def _smp_list(current: Any, values: list, meta: FieldMeta | None) -> list:
    if not isinstance(current, list) or meta is None or not meta.merge:
        return _fresh_list(values, meta)
    if not current and not values:
        return []
    has_maps = False
    has_scalars = False
    for value in (*current, *values):
        if isinstance(value, list):
            raise _rejected("lists of lists are not supported")
        if isinstance(value, dict):
            has_maps = True
        else:
            has_scalars = True
    if has_maps and has_scalars:
        raise _plain_error(f"list element types are not identical: {_go_fmt([current, values])}")
    if not has_maps:
        return _merge_scalar_set(current, values)
    if meta.merge_key is None:
        raise _plain_error("cannot merge lists without merge key")
    return _merge_keyed(current, values, meta.merge_key, meta.struct)


def _merge_scalar_set(current: list, values: list) -> list:
    seen: set[Any] = set()
    merged = []
    for value in (*current, *values):
        key = _hkey(value)
        if key not in seen:
            seen.add(key)
            merged.append(value)
    return _order(merged, [_hkey(v) for v in values], [_hkey(v) for v in current], _hkey)


def _no_merge_key(item: Any, merge_key: str) -> ApiError:
    return _plain_error(f"map: {_go_fmt(item)} does not contain declared merge key: {merge_key}")


def _merge_keyed(current: list, values: list, merge_key: str, struct: Struct | None) -> list:
    base = current
    plain: list[dict] = []
    replace = False
    for value in values:
        directive = value.get(_PATCH, _MISSING)
        if directive is _MISSING:
            plain.append(value)
        elif directive == "delete":
            if merge_key not in value:
                raise _no_merge_key(value, merge_key)
            gone = _hkey(value[merge_key])
            base = [e for e in base
                    if not (isinstance(e, dict) and merge_key in e and _hkey(e[merge_key]) == gone)]
        elif directive == "replace":
            replace = True
        elif directive != "merge":
            raise _plain_error(f"unknown patch type: {_go_fmt(directive)} in map: {_go_fmt(value)}")
    if replace:
        return [_smp_map(None, value, struct) for value in plain]

    keyf = _element_key(merge_key)
    merged = list(base)
    position: dict[Any, int] = {}
    for i, element in enumerate(merged):
        if isinstance(element, dict) and merge_key in element:
            position.setdefault(_hkey(element[merge_key]), i)
    patch_keys = []
    for value in plain:
        if merge_key not in value:
            raise _no_merge_key(value, merge_key)
        key = _hkey(value[merge_key])
        patch_keys.append(key)
        at = position.get(key)
        if at is None:
            position[key] = len(merged)
            merged.append(_smp_map(None, value, struct))
        else:
            merged[at] = _smp_map(merged[at], value, struct)
    return _order(merged, patch_keys, [keyf(e) for e in base], keyf)


def _order(merged: list, patch_keys: list, server_keys: list, keyf: Callable[[Any], Any]) -> list:
    """Order a merged list as apimachinery's normalizeElementOrder does.

    Elements named in the patch come in patch order; the others keep their live order and are
    slotted in before a patch element only when the live list had them before it. So an element
    new to the list lands ahead of the live-only ones unless ``$setElementOrder`` says otherwise.
    """
    patch_pos: dict[Any, int] = {}
    for i, key in enumerate(patch_keys):
        patch_pos.setdefault(key, i)
    server_pos: dict[Any, int] = {}
    for i, key in enumerate(server_keys):
        server_pos.setdefault(key, i)
    from_patch: list[tuple[Any, Any]] = []
    server_only: list[tuple[Any, Any]] = []
    for element in merged:
        key = keyf(element)
        (from_patch if key in patch_pos else server_only).append((key, element))
    if not from_patch or not server_only:
        if from_patch:
            from_patch.sort(key=lambda pair: patch_pos[pair[0]])
            return [e for _, e in from_patch]
        return merged
    from_patch.sort(key=lambda pair: patch_pos[pair[0]])
    last = len(server_pos)
    server_only.sort(key=lambda pair: server_pos.get(pair[0], last))
    out = []
    i = j = 0
    while i < len(server_only) and j < len(from_patch):
        left = server_pos.get(server_only[i][0])
        right = server_pos.get(from_patch[j][0])
        if left is not None and right is not None and left < right:
            out.append(server_only[i][1])
            i += 1
        else:
            out.append(from_patch[j][1])
            j += 1
    out.extend(e for _, e in server_only[i:])
    out.extend(e for _, e in from_patch[j:])
    return out


# --------------------------------------------------------------------------- server-side apply

# Fields that identify or are stamped by the server: never owned by a field manager.
_SERVER_META = frozenset({"name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
                          "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"})

# A field path as FieldsV1 spells its segments: ("f:spec", "f:containers", 'k:{"name":"web"}', "f:image").
Path = tuple[str, ...]


def apply_server_side(live: dict | None, applied: dict, info: ResourceInfo, manager: str,
                      force: bool) -> dict:
    """Merge an applied configuration into ``live`` (None: create) as server-side apply does.

    What is implemented: maps merge, lists with a merge key merge by key, tagged scalar lists merge
    as sets, other lists and scalars are replaced; the manager's ``Apply`` entry in
    ``metadata.managedFields`` records the fields it applied (FieldsV1), so a field it applied
    before and has now dropped is removed unless another manager's entry lists it; a field another
    ``Apply`` manager owns with a different value is a 409 conflict unless ``force``, which takes
    ownership. Not implemented: ``Update`` entries are never written here (the caller may record
    them) and never conflict; defaulted fields are not tracked; no per-version schema conversion.
    """
    if not isinstance(applied, dict):
        raise bad_request(f"error decoding YAML: cannot unmarshal {_go_json_kind(applied)} into an object")
    if not manager:
        cause = Cause("fieldManager", "Required value: is required for apply patch", "FieldValueRequired")
        raise invalid("PatchOptions", "", [cause], group="meta.k8s.io")
    if applied.get("apiVersion") != info.api_version:
        raise bad_request("Incorrect version specified in apply patch. Specified patch version: "
                          f"{applied.get('apiVersion', '')}, expected: {info.api_version}")
    if applied.get("kind") != info.kind:
        raise bad_request(f"Incorrect kind specified in apply patch. Specified patch kind: "
                          f"{applied.get('kind', '')}, expected: {info.kind}")
    meta = applied.get("metadata")
    if isinstance(meta, dict) and meta.get("managedFields") is not None:
        raise bad_request("metadata.managedFields must be nil")
    return _guard_depth(lambda: _apply(live, applied, info, manager, force))


def _apply(live: dict | None, applied: dict, info: ResourceInfo, manager: str, force: bool) -> dict:
    schema = patch_schema(info)
    config = _pruned(applied)
    applied_fields = _members(config, schema)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    own_entry = {"manager": manager, "operation": "Apply", "apiVersion": info.api_version, "time": now,
                 "fieldsType": "FieldsV1", "fieldsV1": fields_v1(applied_fields)}
    if live is None:
        config["metadata"] = {**(config.get("metadata") or {}), "managedFields": [own_entry]}
        return config

    entries = (live.get("metadata") or {}).get("managedFields") or []
    previous: set[Path] = set()
    others: list[tuple[dict, set[Path]]] = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        fields = parse_fields_v1(entry.get("fieldsV1"))
        if entry.get("manager") == manager and entry.get("operation") == "Apply" \
                and not entry.get("subresource"):
            previous = fields
        else:
            others.append((entry, fields))

    conflicts: list[tuple[dict, Path]] = []
    for entry, fields in others:
        if entry.get("operation") != "Apply":
            continue
        for path in applied_fields & fields:
            if not path[-1].startswith("f:"):
                continue  # both want the element or set value to exist: no conflict
            ours = _value_at(config, path)
            theirs = _value_at(live, path)
            if not isinstance(ours, dict) and not _json_equal(ours, theirs):
                conflicts.append((entry, path))
    if conflicts and not force:
        raise _conflict_error(conflicts)
    lost: dict[int, set[Path]] = {}
    for entry, path in conflicts:
        lost.setdefault(id(entry), set()).add(path)

    result = _ssa_merge(live, config, schema)
    protected: set[Path] = set()
    for entry, fields in others:
        for path in fields - lost.get(id(entry), set()):
            protected.update(path[:n] for n in range(1, len(path) + 1))
    for path in sorted(previous - applied_fields - protected, key=len):
        if not _is_element_key(path):
            result = _without(result, path, schema)

    managed: list[Any] = []
    replaced = False
    for entry in entries:
        if isinstance(entry, dict) and entry.get("manager") == manager \
                and entry.get("operation") == "Apply" and not entry.get("subresource"):
            managed.append(own_entry)
            replaced = True
        elif isinstance(entry, dict) and id(entry) in lost:
            kept = parse_fields_v1(entry.get("fieldsV1")) - lost[id(entry)]
            if kept:
                managed.append({**entry, "fieldsV1": fields_v1(kept)})
        else:
            managed.append(entry)
    if not replaced:
        managed.append(own_entry)
    result["metadata"] = {**(result.get("metadata") or {}), "managedFields": managed}
    return result


def _ssa_merge(live: dict, config: dict, struct: Struct | None) -> dict:
    out = dict(live)
    for key, value in config.items():
        meta = struct.get(key) if struct else None
        current = out.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            out[key] = _ssa_merge(current, value, meta.struct if meta else None)
        elif isinstance(value, list) and isinstance(current, list) and meta is not None and meta.merge:
            out[key] = _ssa_merge_list(current, value, meta, key)
        else:
            out[key] = value
    return out


def _ssa_merge_list(current: list, values: list, meta: FieldMeta, name: str) -> list:
    if meta.merge_key is None:
        seen = {_hkey(v) for v in current}
        return [*current, *(v for v in values if _hkey(v) not in seen)]
    merge_key = meta.merge_key
    out = list(current)
    position = {_hkey(e[merge_key]): i for i, e in enumerate(out) if isinstance(e, dict) and merge_key in e}
    for value in values:
        if not isinstance(value, dict) or merge_key not in value:
            raise _rejected(f".{name}: associative list with keys has an element that omits key field "
                            f'"{merge_key}"')
        at = position.get(_hkey(value[merge_key]))
        if at is None:
            position[_hkey(value[merge_key])] = len(out)
            out.append(value)
        else:
            out[at] = _ssa_merge(out[at], value, meta.struct)
    return out


def _canonical(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _members(config: dict, schema: Struct) -> set[Path]:
    """The fields an applied configuration sets: leaves, keyed list elements and set values."""
    out: set[Path] = set()

    def walk(node: dict, struct: Struct | None, path: Path, skip: Iterable[str]) -> None:
        for key, value in node.items():
            if key in skip:
                continue
            meta = struct.get(key) if struct else None
            here = (*path, f"f:{key}")
            if isinstance(value, dict) and value:
                walk(value, meta.struct if meta else None, here,
                     _SERVER_META if not path and key == "metadata" else ())
            elif isinstance(value, list) and value and meta is not None and meta.merge:
                for element in value:
                    if meta.merge_key is None:
                        out.add((*here, f"v:{_canonical(element)}"))
                    elif isinstance(element, dict) and meta.merge_key in element:
                        at = (*here, f"k:{_canonical({meta.merge_key: element[meta.merge_key]})}")
                        out.add(at)
                        walk(element, meta.struct, at, ())
            else:
                out.add(here)

    walk(config, schema, (), ("apiVersion", "kind"))
    return out


def fields_v1(fields: Iterable[Path]) -> dict:
    """A field set as ``managedFields[].fieldsV1`` spells it (``f:``, ``k:``, ``v:`` and ``.``)."""
    root: dict = {}
    members = []
    for path in sorted(fields):
        node = root
        for segment in path:
            child = node.get(segment)
            if child is None:
                child = node[segment] = {}
            node = child
        members.append(node)
    for node in members:
        if node and "." not in node:
            node["."] = {}
    return root


def parse_fields_v1(value: Any) -> set[Path]:
    """The member paths of a FieldsV1 document: its leaves and the nodes marked with ``.``."""
    out: set[Path] = set()

    def walk(node: dict, path: Path) -> None:
        for key, child in node.items():
            if key == "." or key[1:2] != ":":
                continue
            here = (*path, key)
            if not isinstance(child, dict) or not child or "." in child:
                out.add(here)
            if isinstance(child, dict):
                walk(child, here)

    if isinstance(value, dict):
        walk(value, ())
    return out


def _is_element_key(path: Path) -> bool:
    # The key field of an element that stays must not be removed with the manager's other fields.
    if len(path) < 2 or not path[-2].startswith("k:") or not path[-1].startswith("f:"):
        return False
    return path[-1][2:] in orjson.loads(path[-2][2:])


def _find_element(items: list, segment: str) -> int | None:
    kind, name = segment[0], segment[2:]
    if kind == "k":
        wanted = orjson.loads(name)
        for i, item in enumerate(items):
            if isinstance(item, dict) and all(k in item and _json_equal(item[k], v)
                                              for k, v in wanted.items()):
                return i
    elif kind == "v":
        wanted = orjson.loads(name)
        for i, item in enumerate(items):
            if _json_equal(item, wanted):
                return i
    return None


def _value_at(node: Any, path: Path) -> Any:
    for segment in path:
        if segment.startswith("f:"):
            name = segment[2:]
            if not isinstance(node, dict) or name not in node:
                return _MISSING
            node = node[name]
        else:
            if not isinstance(node, list):
                return _MISSING
            at = _find_element(node, segment)
            if at is None:
                return _MISSING
            node = node[at]
    return node


def _without(node: Any, path: Path, struct: Struct | None) -> Any:
    """``node`` without the field at ``path``, copying only the containers on the way."""
    segment, rest = path[0], path[1:]
    if segment.startswith("f:"):
        name = segment[2:]
        if not isinstance(node, dict) or name not in node:
            return node
        out = dict(node)
        if not rest:
            del out[name]
            return out
        meta = struct.get(name) if struct else None
        child = node[name]
        new_child = _without(child, rest, meta.struct if meta else None)
        if new_child is child:
            return node
        if isinstance(new_child, dict | list) and not new_child:
            del out[name]  # emptied by this removal: drop it rather than leave {} or []
        else:
            out[name] = new_child
        return out
    if not isinstance(node, list):
        return node
    at = _find_element(node, segment)
    if at is None:
        return node
    out_list = list(node)
    if not rest:
        del out_list[at]
        return out_list
    element = node[at]
    new_element = _without(element, rest, struct)
    if new_element is element:
        return node
    out_list[at] = new_element
    return out_list


def _path_text(path: Path) -> str:
    text = []
    for segment in path:
        kind, name = segment[0], segment[2:]
        if kind == "f":
            text.append(f".{name}")
        elif kind == "k":
            keys = orjson.loads(name)
            text.append("[" + ",".join(f"{k}={_canonical(v)}" for k, v in keys.items()) + "]")
        else:
            text.append(f"[={name}]")
    return "".join(text)


def _conflict_error(conflicts: list[tuple[dict, Path]]) -> ApiError:
    def who(entry: dict) -> str:
        return f'"{entry.get("manager", "")}" using {entry.get("apiVersion", "")}'

    causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {who(e)}", "field": _path_text(p)}
              for e, p in conflicts]
    if len(conflicts) == 1:
        entry, path = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {who(entry)}: {_path_text(path)}"
    else:
        by_manager: dict[str, list[str]] = {}
        for entry, path in conflicts:
            by_manager.setdefault(who(entry), []).append(_path_text(path))
        lines = [f"Apply failed with {len(conflicts)} conflicts: conflicts with"]
        if len(by_manager) == 1:
            (manager, paths), = by_manager.items()
            lines[0] += f" {manager}:"
            lines.extend(f"- {p}" for p in sorted(paths))
        else:
            for manager, paths in by_manager.items():
                lines.append(f"{manager}:")
                lines.extend(f"- {p}" for p in sorted(paths))
        message = "\n".join(lines)
    return ApiError(409, "Conflict", message, {"causes": causes})


# --------------------------------------------------------------------------- dispatch by media type

PatchFunc = Callable[[dict | None, Any, ResourceInfo, str, bool], dict]


def _needs_live(live: dict | None) -> dict:
    if live is None:
        # The handler answers 404 before patching anything but an apply.
        raise internal_error("only an apply patch can create an object")
    return live


PATCH_CONTENT_TYPES: dict[str, PatchFunc] = {
    JSON_PATCH: lambda live, body, info, manager, force: apply_json_patch(_needs_live(live), body),
    MERGE_PATCH: lambda live, body, info, manager, force: apply_merge_patch(_needs_live(live), body),
    STRATEGIC_MERGE_PATCH: lambda live, body, info, manager, force:
        apply_strategic_merge_patch(_needs_live(live), body, info),
    APPLY_PATCH: apply_server_side,
}
"""Media type (without parameters) -> ``fn(live, decoded_body, info, manager, force)``."""


def patch_media_type(content_type: str | None) -> str:
    """The bare media type of a PATCH, or 415 UnsupportedMediaType as kube-apiserver answers."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in PATCH_CONTENT_TYPES:
        raise ApiError(415, "UnsupportedMediaType",
                       "the body of the request was in an unknown format - accepted media types include: "
                       f"{JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}, {STRATEGIC_MERGE_PATCH}")
    return media


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def decode_patch_body(content_type: str | None, body: bytes) -> Any:
    """Decode a PATCH body: JSON for the three JSON types, YAML (or JSON) for apply."""
    media = patch_media_type(content_type)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if media != APPLY_PATCH:
            raise bad_request(f"error decoding patch: {exc}") from None
    try:
        return yaml.load(body, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        raise bad_request(f"error decoding YAML: {exc}") from None
