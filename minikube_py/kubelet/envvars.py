"""A container's environment as the kubelet builds it: ``envFrom`` first, then ``env`` in order (later
wins), values from the downward API (``fieldRef``, ``resourceFieldRef``), ConfigMaps and Secrets, and
``$(VAR)`` references expanded against the variables defined before.

A missing ConfigMap/Secret or key that is not ``optional`` is a ``ContainerConfigError``: the
container waits with reason ``CreateContainerConfigError`` and that message, as in Kubernetes.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

from minikube_py.api.validation import parse_quantity

# (kind, namespace, name) -> the object, or None when it does not exist.
ObjectGetter = Callable[[str, str, str], Awaitable[dict[str, Any] | None]]

_LABEL_REF = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class ContainerConfigError(Exception):
    """The container cannot be configured (its waiting reason is CreateContainerConfigError)."""


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known variables are replaced, ``$$`` escapes a ``$``, anything
    else is left as written."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _VAR_REF.sub(one, value)


def field_value(pod: dict[str, Any], path: str, pod_ip: str = "", host_ip: str = "") -> str:
    """The downward API's ``fieldRef.fieldPath`` of ``pod``."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    m = _LABEL_REF.match(path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    simple = {
        "metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"), "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": pod_ip or status.get("podIP"), "status.hostIP": host_ip or status.get("hostIP"),
        "status.podIPs": pod_ip or status.get("podIP"), "status.hostIPs": host_ip or status.get("hostIP"),
    }
    if path in simple:
        return str(simple[path] or "")
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise ContainerConfigError(f'unsupported fieldPath "{path}"')


def resource_value(container: dict[str, Any], ref: dict[str, Any], node_allocatable: dict[str, str]) -> str:
    """``resourceFieldRef``: a container's request or limit (limits default to the node's allocatable),
    divided by ``divisor`` and rounded up as the kubelet does."""
    resource = str(ref.get("resource") or "")
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or name not in ("cpu", "memory", "ephemeral-storage"):
        raise ContainerConfigError(f'unsupported resource "{resource}"')
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None and kind == "limits":
        raw = node_allocatable.get(name)
    if raw is None:
        raw = "0"
    divisor = parse_quantity(str(ref.get("divisor") or "1"))
    if divisor <= 0:
        raise ContainerConfigError(f"resourceFieldRef divisor of {resource} must be positive")
    return str(math.ceil(parse_quantity(str(raw)) / divisor))


async def _key_of(get: ObjectGetter, kind: str, namespace: str, ref: dict[str, Any]) -> str | None:
    name, key, optional = str(ref.get("name") or ""), str(ref.get("key") or ""), bool(ref.get("optional"))
    obj = await get(kind, namespace, name)
    what = "configmap" if kind == "configmaps" else "secret"
    if obj is None:
        if optional:
            return None
        raise ContainerConfigError(f'{what} "{name}" not found')
    value = _data_of(obj, kind).get(key)
    if value is None:
        if optional:
            return None
        raise ContainerConfigError(f"couldn't find key {key} in {'ConfigMap' if what == 'configmap' else 'Secret'} "
                                   f"{namespace}/{name}")
    return value


def _data_of(obj: dict[str, Any], kind: str) -> dict[str, str]:
    """A ConfigMap's or Secret's keys as text (Secret values arrive base64-encoded)."""
    out: dict[str, str] = {}
    if kind == "secrets":
        for k, v in (obj.get("data") or {}).items():
            out[k] = base64.b64decode(v or "").decode("utf-8", "replace")
        for k, v in (obj.get("stringData") or {}).items():
            out[k] = str(v)
    else:
        out.update({k: str(v) for k, v in (obj.get("data") or {}).items()})
        for k, v in (obj.get("binaryData") or {}).items():
            out.setdefault(k, base64.b64decode(v or "").decode("utf-8", "replace"))
    return out


async def container_env(pod: dict[str, Any], container: dict[str, Any], get: ObjectGetter, *,
                        pod_ip: str = "", host_ip: str = "",
                        node_allocatable: dict[str, str] | None = None) -> list[dict[str, str]]:
    """``[{"key", "value"}]`` for the runtime, in definition order."""
    namespace = str((pod.get("metadata") or {}).get("namespace") or "default")
    env: dict[str, str] = {}
    for source in container.get("envFrom") or ():
        prefix = str(source.get("prefix") or "")
        for kind, field in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
            ref = source.get(field)
            if not ref:
                continue
            obj = await get(kind, namespace, str(ref.get("name") or ""))
            if obj is None:
                if ref.get("optional"):
                    continue
                what = "configmap" if kind == "configmaps" else "secret"
                raise ContainerConfigError(f'{what} "{ref.get("name")}" not found')
            for k, v in _data_of(obj, kind).items():
                env[prefix + k] = v
    for var in container.get("env") or ():
        name = str(var.get("name") or "")
        if not name:
            continue
        if "value" in var and var.get("valueFrom") is None:
            env[name] = expand(str(var.get("value") or ""), env)
            continue
        source = var.get("valueFrom") or {}
        if source.get("fieldRef"):
            env[name] = field_value(pod, str(source["fieldRef"].get("fieldPath") or ""), pod_ip, host_ip)
        elif source.get("resourceFieldRef"):
            env[name] = resource_value(container, source["resourceFieldRef"], node_allocatable or {})
        elif source.get("configMapKeyRef"):
            value = await _key_of(get, "configmaps", namespace, source["configMapKeyRef"])
            if value is not None:
                env[name] = value
        elif source.get("secretKeyRef"):
            value = await _key_of(get, "secrets", namespace, source["secretKeyRef"])
            if value is not None:
                env[name] = value
        else:
            env[name] = ""
    return [{"key": k, "value": v} for k, v in env.items()]


def expand_args(values: list[str], env: list[dict[str, str]]) -> list[str]:
    """``command``/``args`` with ``$(VAR)`` expanded against the container's environment."""
    mapping = {e["key"]: e["value"] for e in env}
    return [expand(str(v), mapping) for v in values]
