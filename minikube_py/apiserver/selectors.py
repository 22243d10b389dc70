"""Label and field selectors, parsed and matched as kube-apiserver does for ``?labelSelector=`` and
``?fieldSelector=`` (apimachinery pkg/labels and pkg/fields; the per-kind field lists come from the
field-label conversion functions of core/v1 and apps/v1).

Parse errors are 400 BadRequest with Kubernetes' messages, so kubectl prints what it would print
against a real cluster.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from minikube_py.api.errors import bad_request
from minikube_py.api.resources import ResourceInfo

# --------------------------------------------------------------------------- label syntax validation

_NAME_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS1123_SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAME_FORMAT = ("must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
                "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
_VALUE_FORMAT = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
                 "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
                 "'my_value',  or '12345', regex used for validation is "
                 "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
_SUBDOMAIN_FORMAT = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
                     "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
                     "regex used for validation is "
                     r"'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")


def label_key_errors(key: str) -> list[str]:
    """Why ``key`` is not a valid label key (a qualified name); empty when it is valid."""
    parts = key.split("/")
    if len(parts) == 1:
        prefix, name = "", parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            return ["prefix part must be non-empty"]
    else:
        return ["a qualified name " + _NAME_FORMAT + " with an optional DNS subdomain prefix and '/' "
                "(e.g. 'example.com/MyName')"]
    errors = []
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append("name part must be no more than 63 characters")
    if name and not _NAME_RE.fullmatch(name):
        errors.append("name part " + _NAME_FORMAT)
    if prefix:
        if len(prefix) > 253:
            errors.append("prefix part must be no more than 253 characters")
        if not _DNS1123_SUBDOMAIN_RE.fullmatch(prefix):
            errors.append("prefix part " + _SUBDOMAIN_FORMAT)
    return errors


def label_value_errors(value: str) -> list[str]:
    """Why ``value`` is not a valid label value; empty when it is valid."""
    errors = []
    if len(value) > 63:
        errors.append("must be no more than 63 characters")
    if value and not _NAME_RE.fullmatch(value):
        errors.append(_VALUE_FORMAT)
    return errors


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _go_strings(values: Iterable[str]) -> str:
    return "[]string{" + ", ".join(_quote(v) for v in values) + "}"


# --------------------------------------------------------------------------- label selectors

IN, NOT_IN, EQUALS, DOUBLE_EQUALS, NOT_EQUALS = "in", "notin", "=", "==", "!="
EXISTS, DOES_NOT_EXIST, GREATER_THAN, LESS_THAN = "exists", "!", "gt", "lt"


class _SelectorError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Requirement:
    """One term of a label selector; ``values`` are sorted, as Kubernetes keeps them."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op in (IN, EQUALS, DOUBLE_EQUALS):
            return self.key in labels and labels[self.key] in self.values
        if op in (NOT_IN, NOT_EQUALS):
            return self.key not in labels or labels[self.key] not in self.values
        if op == EXISTS:
            return self.key in labels
        if op == DOES_NOT_EXIST:
            return self.key not in labels
        value = labels.get(self.key)
        if value is None:
            return False
        try:
            have, want = int(value), int(self.values[0])
        except ValueError:
            return False
        return have > want if op == GREATER_THAN else have < want

    def __str__(self) -> str:
        if self.operator == EXISTS:
            return self.key
        if self.operator == DOES_NOT_EXIST:
            return f"!{self.key}"
        values = ",".join(self.values)
        if self.operator in (IN, NOT_IN):
            return f"{self.key} {self.operator} ({values})"
        symbol = {GREATER_THAN: ">", LESS_THAN: "<"}.get(self.operator, self.operator)
        return f"{self.key}{symbol}{values}"


def _requirement(key: str, operator: str, values: Iterable[str]) -> Requirement:
    """labels.NewRequirement: validates the key, the number of values and each value."""
    errors = label_key_errors(key)
    if errors:
        raise _SelectorError(f"key: Invalid value: {_quote(key)}: {'; '.join(errors)}")
    ordered = tuple(sorted(set(values)))
    if operator in (IN, NOT_IN) and not ordered:
        raise _SelectorError(f"values: Invalid value: {_go_strings(ordered)}: "
                             "for 'in', 'notin' operators, values set can't be empty")
    if operator in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS) and len(ordered) != 1:
        raise _SelectorError(f"values: Invalid value: {_go_strings(ordered)}: "
                             "exact-match compatibility requires one single value")
    if operator in (EXISTS, DOES_NOT_EXIST) and ordered:
        raise _SelectorError(f"values: Invalid value: {_go_strings(ordered)}: "
                             "values set must be empty for exists and does not exist")
    if operator in (GREATER_THAN, LESS_THAN):
        if len(ordered) != 1:
            raise _SelectorError(f"values: Invalid value: {_go_strings(ordered)}: for 'Gt', 'Lt' operators, "
                                 "exactly one value is required")
        if not re.fullmatch(r"[-+]?[0-9]+", ordered[0]):
            raise _SelectorError(f"values[0]: Invalid value: {_quote(ordered[0])}: for 'Gt', 'Lt' operators, "
                                 "the value must be an integer")
    for i, value in enumerate(ordered):
        errors = label_value_errors(value)
        if errors:
            raise _SelectorError(f"values[{i}][{key}]: Invalid value: {_quote(value)}: {'; '.join(errors)}")
    return Requirement(key, operator, ordered)


class LabelSelector:
    """An AND of requirements. ``LabelSelector.nothing()`` matches no object at all."""

    __slots__ = ("_nothing", "requirements")

    def __init__(self, requirements: Iterable[Requirement] = (), nothing: bool = False):
        # Sorted by key, as Kubernetes sorts them, so that str() is canonical.
        self.requirements: tuple[Requirement, ...] = tuple(sorted(requirements, key=lambda r: r.key))
        self._nothing = nothing

    @classmethod
    def everything(cls) -> LabelSelector:
        return cls()

    @classmethod
    def nothing(cls) -> LabelSelector:
        return cls(nothing=True)

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self._nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def empty(self) -> bool:
        """True when the selector does not restrict anything (``nothing()`` is not empty)."""
        return not self._nothing and not self.requirements

    def requires_exact_match(self, key: str) -> str | None:
        """The single value ``key`` must have, if the selector pins one (for index lookups)."""
        for r in self.requirements:
            if r.key == key and r.operator in (EQUALS, DOUBLE_EQUALS, IN) and len(r.values) == 1:
                return r.values[0]
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __repr__(self) -> str:
        return "LabelSelector(<nothing>)" if self._nothing else f"LabelSelector({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, LabelSelector) and self._nothing == other._nothing
                and self.requirements == other.requirements)

    def __hash__(self) -> int:
        return hash((self._nothing, self.requirements))


_SPECIAL = frozenset("=!(),><")
_WHITESPACE = frozenset(" \t\r\n")
_SYMBOLS = {")": ")", ",": ",", "!": "!", "==": "==", "=": "=", ">": ">", "<": "<", "!=": "!=", "(": "("}
_ID, _END, _ERROR = "id", "end", "error"


def _lex(text: str) -> list[tuple[str, str]]:
    """Tokens as (kind, literal); kind is a symbol, "in", "notin", id, end or error."""
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _WHITESPACE:
            i += 1
        if i >= n:
            tokens.append((_END, ""))
            return tokens
        if text[i] in _SPECIAL:
            # Longest run of special characters that is still a known symbol ("!=" before "!").
            j, best = i, None
            while j < n and text[j] in _SPECIAL:
                if text[i:j + 1] in _SYMBOLS:
                    best = j + 1
                elif best is not None:
                    break
                j += 1
            if best is None:
                tokens.append((_ERROR, f"error expected: keyword found '{text[i:j]}'"))
                i = j
            else:
                tokens.append((text[i:best], text[i:best]))
                i = best
            continue
        j = i
        while j < n and text[j] not in _SPECIAL and text[j] not in _WHITESPACE:
            j += 1
        word = text[i:j]
        tokens.append((word if word in ("in", "notin") else _ID, word))
        i = j


class _LabelParser:
    _BINARY = "in, notin, =, ==, !=, gt, lt"

    def __init__(self, text: str):
        self.tokens = _lex(text)
        self.pos = 0

    def _peek(self, values: bool = True) -> tuple[str, str]:
        kind, literal = self.tokens[self.pos]
        if values and kind in ("in", "notin"):
            kind = _ID  # "in" and "notin" are plain values where a value is expected
        return kind, literal

    def _next(self, values: bool = True) -> tuple[str, str]:
        token = self._peek(values)
        self.pos += 1
        return token

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            kind, literal = self._peek()
            if kind in (_ID, "!"):
                try:
                    requirements.append(self._requirement())
                except _SelectorError as exc:
                    raise _SelectorError(f"unable to parse requirement: {exc}") from None
                kind, literal = self._next()
                if kind == _END:
                    return requirements
                if kind != ",":
                    raise _SelectorError(f"found '{literal}', expected: ',' or 'end of string'")
                kind, literal = self._peek()
                if kind not in (_ID, "!"):
                    raise _SelectorError(f"found '{literal}', expected: identifier after ','")
            elif kind == _END:
                return requirements
            else:
                raise _SelectorError(f"found '{literal}', expected: !, identifier, or 'end of string'")

    def _requirement(self) -> Requirement:
        kind, literal = self._next()
        negated = kind == "!"
        if negated:
            kind, literal = self._next()
        if kind != _ID:
            raise _SelectorError(f"found '{literal}', expected: identifier")
        key = literal
        errors = label_key_errors(key)
        if errors:
            raise _SelectorError(f"<nil>: Invalid value: {_quote(key)}: {'; '.join(errors)}")
        # "!key" is complete by itself: in "!a=b" the "=" is then reported as an unexpected token.
        if negated:
            return _requirement(key, DOES_NOT_EXIST, ())
        if self._peek()[0] in (_END, ","):
            return _requirement(key, EXISTS, ())
        kind, literal = self._next(values=False)
        operator = {"in": IN, "notin": NOT_IN, "=": EQUALS, "==": DOUBLE_EQUALS, "!=": NOT_EQUALS,
                    ">": GREATER_THAN, "<": LESS_THAN}.get(kind)
        if operator is None:
            raise _SelectorError(f"found '{literal}', expected: {self._BINARY}")
        if operator in (IN, NOT_IN):
            values = self._set_values()
        else:
            values = self._exact_value()
        return _requirement(key, operator, values)

    def _exact_value(self) -> list[str]:
        kind, _ = self._peek()
        if kind in (_END, ","):
            return [""]
        kind, literal = self._next()
        if kind == _ID:
            return [literal]
        raise _SelectorError(f"found '{literal}', expected: identifier")

    def _set_values(self) -> list[str]:
        kind, literal = self._next()
        if kind != "(":
            raise _SelectorError(f"found '{literal}' expected: '('")
        kind, literal = self._peek()
        if kind == ")":
            self._next()
            return [""]
        if kind not in (_ID, ","):
            raise _SelectorError(f"found '{literal}', expected: ',', ')' or identifier")
        values: list[str] = []
        while True:
            kind, literal = self._next()
            if kind == _ID:
                values.append(literal)
                after, after_literal = self._peek()
                if after == ")":
                    self._next()
                    return values
                if after != ",":
                    raise _SelectorError(f"found '{after_literal}', expected: ',' or ')'")
            elif kind == ",":
                # Empty values are allowed: "(a,,b)", "(,a)", "(a,)".
                if not values:
                    values.append("")
                after, _ = self._peek()
                if after in (")", ","):
                    values.append("")
                if after == ")":
                    self._next()
                    return values
            else:
                raise _SelectorError(f"found '{literal}', expected: ',', or identifier")


# Selectors are immutable and clients (informers, kubectl) repeat the same few, so parses are cached.
@lru_cache(maxsize=512)
def parse_label_selector(text: str) -> LabelSelector:
    """Parse ``?labelSelector=``: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a)``,
    ``k`` (exists), ``!k`` (does not exist), ``k>1``, ``k<1``; terms separated by commas."""
    try:
        return LabelSelector(_LabelParser(text or "").parse())
    except _SelectorError as exc:
        raise bad_request(str(exc)) from None


_EXPRESSION_OPERATORS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}


def label_selector_from_dict(sel: dict | None) -> LabelSelector:
    """A ``metav1.LabelSelector`` (matchLabels + matchExpressions), as LabelSelectorAsSelector reads it:
    None selects nothing, ``{}`` selects everything."""
    if sel is None:
        return LabelSelector.nothing()
    if not isinstance(sel, dict):
        raise bad_request(f"invalid label selector: {sel!r}")
    requirements = []
    try:
        for key, value in (sel.get("matchLabels") or {}).items():
            if not isinstance(value, str):
                raise _SelectorError(f"values[0][{key}]: Invalid value: {value!r}: must be a string")
            requirements.append(_requirement(str(key), EQUALS, (value,)))
        for expression in sel.get("matchExpressions") or []:
            if not isinstance(expression, dict):
                raise _SelectorError(f"invalid match expression: {expression!r}")
            operator = _EXPRESSION_OPERATORS.get(expression.get("operator"))  # type: ignore[arg-type]
            if operator is None:
                raise _SelectorError(f"{_quote(str(expression.get('operator', '')))} is not a valid label "
                                     "selector operator")
            values = expression.get("values") or []
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise _SelectorError(f"values: Invalid value: {values!r}: must be a list of strings")
            requirements.append(_requirement(str(expression.get("key", "")), operator, values))
    except _SelectorError as exc:
        raise bad_request(str(exc)) from None
    return LabelSelector(requirements)


def label_selector_from_set(labels: Mapping[str, str] | None) -> LabelSelector:
    """A selector matching exactly ``labels`` (a Service's ``spec.selector``); empty selects everything."""
    return LabelSelector(Requirement(k, EQUALS, (v,)) for k, v in (labels or {}).items())


# --------------------------------------------------------------------------- field selectors

def _get(obj: dict, *path: str) -> Any:
    node: Any = obj
    for name in path:
        if not isinstance(node, dict):
            return None
        node = node.get(name)
    return node


def _text(*path: str, default: str = "") -> Callable[[dict], str]:
    def read(obj: dict) -> str:
        value = _get(obj, *path)
        return default if value is None else str(value)
    return read


def _boolean(*path: str) -> Callable[[dict], str]:
    return lambda obj: "true" if _get(obj, *path) is True else "false"


def _integer(*path: str) -> Callable[[dict], str]:
    def read(obj: dict) -> str:
        value = _get(obj, *path)
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else "0"
    return read


_METADATA_FIELDS: dict[str, Callable[[dict], str]] = {
    "metadata.name": _text("metadata", "name"),
    "metadata.namespace": _text("metadata", "namespace"),
}

# The selectable fields of each kind (its field-label conversion function). Defaults stand in for
# fields the API server always defaults, so that a selector matches an object stored without them.
_FIELDS: dict[tuple[str, str], dict[str, Callable[[dict], str]]] = {
    ("", "Pod"): {
        "spec.nodeName": _text("spec", "nodeName"),
        "spec.restartPolicy": _text("spec", "restartPolicy", default="Always"),
        "spec.schedulerName": _text("spec", "schedulerName", default="default-scheduler"),
        "spec.serviceAccountName": _text("spec", "serviceAccountName"),
        "spec.hostNetwork": _boolean("spec", "hostNetwork"),
        "status.phase": _text("status", "phase", default="Pending"),
        "status.podIP": _text("status", "podIP"),
        "status.nominatedNodeName": _text("status", "nominatedNodeName"),
    },
    ("", "Event"): {
        **{f"involvedObject.{name}": _text("involvedObject", name)
           for name in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")},
        "reason": _text("reason"),
        "reportingComponent": _text("reportingComponent"),
        "source": _text("source", "component"),
        "type": _text("type"),
    },
    ("", "Node"): {"spec.unschedulable": _boolean("spec", "unschedulable")},
    ("", "Secret"): {"type": _text("type", default="Opaque")},
    ("", "Namespace"): {"status.phase": _text("status", "phase", default="Active")},
    ("apps", "ReplicaSet"): {"status.replicas": _integer("status", "replicas")},
}

# Old clients send spec.host; the Pod conversion function maps it to spec.nodeName.
_ALIASES: dict[tuple[str, str], dict[str, str]] = {("", "Pod"): {"spec.host": "spec.nodeName"}}


@dataclass(frozen=True, slots=True)
class FieldTerm:
    field: str
    operator: str  # "=" or "!="; "==" is folded into "="
    value: str
    read: Callable[[dict], str]

    def matches(self, obj: dict) -> bool:
        return (self.read(obj) == self.value) == (self.operator == "=")

    def __str__(self) -> str:
        return f"{self.field}{self.operator}{escape_field_value(self.value)}"


class FieldSelector:
    """An AND of ``field=value`` / ``field!=value`` terms over a kind's selectable fields."""

    __slots__ = ("terms",)

    def __init__(self, terms: Iterable[FieldTerm] = ()):
        self.terms: tuple[FieldTerm, ...] = tuple(terms)

    def matches(self, obj: dict) -> bool:
        return all(term.matches(obj) for term in self.terms)

    def empty(self) -> bool:
        return not self.terms

    def requires_exact_match(self, field: str) -> str | None:
        """The value ``field`` must equal, if a term pins it (``metadata.name=web``: a single get)."""
        for term in self.terms:
            if term.field == field and term.operator == "=":
                return term.value
        return None

    def __str__(self) -> str:
        return ",".join(str(term) for term in self.terms)

    def __repr__(self) -> str:
        return f"FieldSelector({str(self)!r})"


def escape_field_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def _split_terms(text: str) -> list[str]:
    terms, start, escaped = [], 0, False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _unescape(value: str) -> str:
    if not any(ch in value for ch in "\\,="):
        return value
    out, escaped = [], False
    for ch in value:
        if escaped:
            if ch not in "\\,=":
                raise _SelectorError(f"invalid field selector: invalid escape sequence: \\{ch}")
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",=":
            # Go formats the rune with %v, i.e. as its code point.
            raise _SelectorError(f"invalid field selector: unescaped character in value: {ord(ch)}")
        else:
            out.append(ch)
    if escaped:
        raise _SelectorError("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def _split_term(term: str) -> tuple[str, str, str] | None:
    for i in range(len(term)):
        for operator in ("!=", "==", "="):
            if term.startswith(operator, i):
                return term[:i], operator, term[i + len(operator):]
    return None


def selectable_fields(info: ResourceInfo) -> tuple[str, ...]:
    """The field selector keys a kind accepts."""
    return (*_METADATA_FIELDS, *_FIELDS.get((info.group, info.kind), {}))


@lru_cache(maxsize=512)
def parse_field_selector(text: str, info: ResourceInfo) -> FieldSelector:
    """Parse ``?fieldSelector=`` for a kind: comma-separated ``f=v``, ``f==v``, ``f!=v`` in any order."""
    kind_fields = _FIELDS.get((info.group, info.kind))
    aliases = _ALIASES.get((info.group, info.kind), {})
    terms = []
    try:
        for part in sorted(_split_terms(text or "")):
            if not part:
                continue
            split = _split_term(part)
            if split is None:
                raise _SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
            field, operator, raw = split
            value = _unescape(raw)
            field = aliases.get(field, field)
            read = _METADATA_FIELDS.get(field) or (kind_fields or {}).get(field)
            if read is None:
                if kind_fields is None:
                    raise _SelectorError(f'"{field}" is not a known field selector: '
                                         'only "metadata.name", "metadata.namespace"')
                raise _SelectorError(f"field label not supported: {field}")
            terms.append(FieldTerm(field, "!=" if operator == "!=" else "=", value, read))
    except _SelectorError as exc:
        raise bad_request(str(exc)) from None
    return FieldSelector(terms)


__all__ = [
    "FieldSelector",
    "FieldTerm",
    "LabelSelector",
    "Requirement",
    "escape_field_value",
    "label_key_errors",
    "label_selector_from_dict",
    "label_selector_from_set",
    "label_value_errors",
    "parse_field_selector",
    "parse_label_selector",
    "selectable_fields",
]
