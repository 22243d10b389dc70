"""Discovery documents (/api, /apis, /api/v1, /apis/<g>/<v>), legacy and aggregated.

They never change while the server runs, so each is encoded once.
"""

from __future__ import annotations

import functools
from typing import Any

from minikube_py.api.resources import RESOURCES, ResourceInfo, group_versions, in_group_version

from .objects import dumps

AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"

# Subresources that answer with another type than their parent (discovery must say which).
_SUB_KINDS: dict[str, tuple[str, str, str]] = {
    "scale": ("autoscaling", "v1", "Scale"),
    "binding": ("", "v1", "Binding"),
    "eviction": ("policy", "v1", "Eviction"),
    "token": ("authentication.k8s.io", "v1", "TokenRequest"),
}
_SUB_VERBS: dict[str, tuple[str, ...]] = {
    "status": ("get", "patch", "update"),
    "scale": ("get", "patch", "update"),
    "binding": ("create",),
    "eviction": ("create",),
    "token": ("create",),
    "log": ("get",),
    "exec": ("create", "get"),
    "finalize": ("update",),
}

# Groups served by the API server itself rather than stored (reviews).
EXTRA_GROUPS: dict[str, list[dict[str, Any]]] = {
    "authorization.k8s.io": [
        {"name": "selfsubjectaccessreviews", "singularName": "selfsubjectaccessreview", "namespaced": False,
         "kind": "SelfSubjectAccessReview", "verbs": ["create"]},
        {"name": "subjectaccessreviews", "singularName": "subjectaccessreview", "namespaced": False,
         "kind": "SubjectAccessReview", "verbs": ["create"]},
    ],
    "authentication.k8s.io": [
        {"name": "selfsubjectreviews", "singularName": "selfsubjectreview", "namespaced": False,
         "kind": "SelfSubjectReview", "verbs": ["create"]},
        {"name": "tokenreviews", "singularName": "tokenreview", "namespaced": False,
         "kind": "TokenReview", "verbs": ["create"]},
    ],
}


def _resource_entries(info: ResourceInfo) -> list[dict[str, Any]]:
    entry: dict[str, Any] = {
        "name": info.plural, "singularName": info.singular, "namespaced": info.namespaced,
        "kind": info.kind, "verbs": list(info.verbs),
    }
    if info.short_names:
        entry["shortNames"] = list(info.short_names)
    if info.categories:
        entry["categories"] = list(info.categories)
    out = [entry]
    for sub in info.subresources:
        e: dict[str, Any] = {"name": f"{info.plural}/{sub}", "singularName": "", "namespaced": info.namespaced,
                             "kind": info.kind, "verbs": list(_SUB_VERBS.get(sub, ("get",)))}
        if sub in _SUB_KINDS:
            g, v, k = _SUB_KINDS[sub]
            e.update(group=g, version=v, kind=k)
        out.append(e)
    return out


def _all_groups() -> dict[str, list[str]]:
    groups = group_versions()
    for g in EXTRA_GROUPS:
        groups.setdefault(g, ["v1"])
    return groups


@functools.cache
def api_versions() -> bytes:
    return dumps({"kind": "APIVersions", "versions": ["v1"],
                  "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]})


@functools.cache
def api_group_list() -> bytes:
    groups = []
    for name, versions in _all_groups().items():
        if not name:
            continue
        gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
        groups.append({"name": name, "versions": gvs, "preferredVersion": gvs[0]})
    return dumps({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})


@functools.cache
def api_group(name: str) -> bytes | None:
    versions = _all_groups().get(name)
    if not name or versions is None:
        return None
    gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return dumps({"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": gvs,
                  "preferredVersion": gvs[0]})


@functools.cache
def resource_list(group: str, version: str) -> bytes | None:
    infos = in_group_version(group, version)
    extra = EXTRA_GROUPS.get(group, []) if version == "v1" else []
    if not infos and not extra:
        return None
    resources: list[dict[str, Any]] = []
    for info in infos:
        resources.extend(_resource_entries(info))
    resources.extend(extra)
    gv = f"{group}/{version}" if group else version
    return dumps({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})


def _aggregated_resource(info: ResourceInfo) -> dict[str, Any]:
    r: dict[str, Any] = {
        "resource": info.plural,
        "responseKind": {"group": info.group, "version": info.version, "kind": info.kind},
        "scope": "Namespaced" if info.namespaced else "Cluster",
        "singularResource": info.singular,
        "verbs": list(info.verbs),
    }
    if info.short_names:
        r["shortNames"] = list(info.short_names)
    if info.categories:
        r["categories"] = list(info.categories)
    subs = []
    for sub in info.subresources:
        g, v, k = _SUB_KINDS.get(sub, (info.group, info.version, info.kind))
        subs.append({"subresource": sub, "responseKind": {"group": g, "version": v, "kind": k},
                     "verbs": list(_SUB_VERBS.get(sub, ("get",)))})
    if subs:
        r["subresources"] = subs
    return r


@functools.cache
def aggregated(core: bool, version: str) -> bytes:
    """APIGroupDiscoveryList for /api (core=True) or /apis, in apidiscovery.k8s.io/<version>."""
    items = []
    for name, versions in _all_groups().items():
        if (name == "") != core:
            continue
        vers = []
        for v in versions:
            resources = [_aggregated_resource(i) for i in RESOURCES if i.group == name and i.version == v]
            for e in EXTRA_GROUPS.get(name, []):
                resources.append({"resource": e["name"], "responseKind": {"group": name, "version": v,
                                  "kind": e["kind"]}, "scope": "Cluster", "singularResource": e["singularName"],
                                  "verbs": e["verbs"]})
            vers.append({"version": v, "freshness": "Current", "resources": resources})
        items.append({"metadata": {"name": name}, "versions": vers})
    return dumps({"kind": "APIGroupDiscoveryList", "apiVersion": f"apidiscovery.k8s.io/{version}",
                  "metadata": {}, "items": items})


def wants_aggregated(accept: str) -> str | None:
    """The aggregated content type the client asked for, if any (v2 preferred)."""
    if "as=APIGroupDiscoveryList" not in accept:
        return None
    for part in accept.split(","):
        p = part.replace(" ", "")
        if "as=APIGroupDiscoveryList" in p and "g=apidiscovery.k8s.io" in p:
            if "v=v2;" in p + ";" and "v=v2beta1" not in p:
                return AGGREGATED_V2
    for part in accept.split(","):
        if "v=v2beta1" in part and "as=APIGroupDiscoveryList" in part:
            return AGGREGATED_V2BETA1
    return None
