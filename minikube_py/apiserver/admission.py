"""Mutating admission run on create, before defaulting and validation (kube-apiserver's order).

One plugin so far, ``ServiceAccount`` (on by default, as in Kubernetes; ``--disable-admission-plugins
ServiceAccount`` turns it off): a new pod gets ``spec.serviceAccountName`` (``default`` unless it names
one), the account must exist, its ``imagePullSecrets`` are copied to a pod that has none, and — unless
``automountServiceAccountToken`` is false on the pod, or on the account when the pod does not say — a
projected ``kube-api-access-xxxxx`` volume (token, ``kube-root-ca.crt``'s ``ca.crt``, namespace)
mounted read-only at /var/run/secrets/kubernetes.io/serviceaccount in every container and init
container that does not mount something there already.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from minikube_py.api import errors
from minikube_py.api.resources import ResourceInfo, lookup

if TYPE_CHECKING:
    from .registry import Registry

SERVICE_ACCOUNT = "ServiceAccount"
PLUGINS = (SERVICE_ACCOUNT,)

DEFAULT_SERVICE_ACCOUNT = "default"
TOKEN_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
VOLUME_PREFIX = "kube-api-access-"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
# Kubernetes' WarnOnlyBoundTokenExpirationSeconds: an hour and 7 s, a value no client asks for by
# chance, so the API server can tell the kubelet's automounted tokens apart.
TOKEN_EXPIRATION = 3607
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
# As Kubernetes' utilrand.String: no vowels (no words), no 0/1/3 (no look-alikes).
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
# The ServiceAccount controller makes `default` moments after its namespace: Kubernetes looks again up
# to 10 times, 100-200 ms apart, before refusing a pod for it; any other account is looked up once.
DEFAULT_LOOKUPS = 10
LOOKUP_INTERVAL = (0.1, 0.2)


def parse_disabled(value: str) -> frozenset[str]:
    """``--disable-admission-plugins``: a comma-separated list of known plugin names."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in PLUGINS]
    if unknown:
        raise ValueError(f"--disable-admission-plugins: unknown plugin {unknown[0]!r} (known: {', '.join(PLUGINS)})")
    return frozenset(names)


def token_volume(name: str) -> dict[str, Any]:
    """The projected volume Kubernetes' ServiceAccount admission adds (its TokenVolumeSource)."""
    return {"name": name, "projected": {"defaultMode": 0o644, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION, "path": "token"}},
        {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}}


async def admit_create(registry: Registry, info: ResourceInfo, namespace: str | None, obj: dict[str, Any],
                       disabled: Collection[str] = ()) -> None:
    """Run the enabled mutating plugins on an object about to be created (changed in place)."""
    if info.kind == "Pod" and SERVICE_ACCOUNT not in disabled:
        await admit_pod(registry, namespace, obj)


async def admit_pod(registry: Registry, namespace: str | None, pod: dict[str, Any]) -> None:
    meta = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    spec = pod.get("spec")
    if not isinstance(spec, dict) or MIRROR_POD_ANNOTATION in (meta.get("annotations") or {}):
        return  # a malformed pod is validation's to refuse; mirror pods get no service account
    ns = str(meta.get("namespace") or namespace or "")
    name = spec.get("serviceAccountName") or spec.get("serviceAccount") or DEFAULT_SERVICE_ACCOUNT
    if not isinstance(name, str):
        return  # validation answers a wrongly typed name
    spec["serviceAccountName"] = name
    spec["serviceAccount"] = name  # the deprecated mirror, as Kubernetes serves it
    account = await _service_account(registry, ns, name)
    if account is None:
        pod_name = meta.get("name") or meta.get("generateName") or ""
        raise errors.forbidden(f'pods "{pod_name}" is forbidden: error looking up service account {ns}/{name}: '
                               f'serviceaccount "{name}" not found')
    pull = account.get("imagePullSecrets")
    if not spec.get("imagePullSecrets") and isinstance(pull, list) and pull:
        spec["imagePullSecrets"] = [{"name": s.get("name")} for s in pull if isinstance(s, dict)]
    if _automount(spec, account):
        _mount_token(spec)


def _automount(spec: dict[str, Any], account: dict[str, Any]) -> bool:
    # The pod's own choice wins, then the account's; mounting is the default.
    for value in (spec.get("automountServiceAccountToken"), account.get("automountServiceAccountToken")):
        if isinstance(value, bool):
            return value
    return True


def _mount_token(spec: dict[str, Any]) -> None:
    volumes = spec.get("volumes")
    if volumes is None:
        volumes = []
    if not isinstance(volumes, list):
        return
    existing = next((v.get("name") for v in volumes if isinstance(v, dict)
                     and str(v.get("name") or "").startswith(VOLUME_PREFIX)), None)
    taken = {v.get("name") for v in volumes if isinstance(v, dict)}
    volume_name = existing
    while volume_name is None or (existing is None and volume_name in taken):
        volume_name = VOLUME_PREFIX + "".join(random.choice(_NAME_CHARS) for _ in range(5))
    needed = False
    for group in ("initContainers", "containers"):
        for c in spec.get(group) or ():
            if not isinstance(c, dict):
                continue
            mounts = c.get("volumeMounts")
            if mounts is None:
                mounts = c["volumeMounts"] = []
            if not isinstance(mounts, list):
                continue
            if any(isinstance(m, dict) and m.get("mountPath") == TOKEN_MOUNT_PATH for m in mounts):
                continue  # the pod's own volume there wins
            mounts.append({"name": volume_name, "readOnly": True, "mountPath": TOKEN_MOUNT_PATH})
            needed = True
    if needed and existing is None:
        volumes.append(token_volume(volume_name))
        spec["volumes"] = volumes


async def _service_account(registry: Registry, namespace: str, name: str) -> dict[str, Any] | None:
    info = lookup("", "v1", "serviceaccounts")
    assert info is not None
    attempts = DEFAULT_LOOKUPS if name == DEFAULT_SERVICE_ACCOUNT else 1
    for attempt in range(attempts):
        try:
            return await registry.get(info, namespace, name)
        except errors.ApiError as e:
            if e.code != 404:
                raise
        if attempt == 0:
            # No namespace, no account ever: answer the 404 NamespaceLifecycle gives, without waiting.
            namespaces = lookup("", "v1", "namespaces")
            assert namespaces is not None
            await registry.get(namespaces, None, namespace)
        if attempt + 1 < attempts:
            await asyncio.sleep(random.uniform(*LOOKUP_INTERVAL))
    return None
