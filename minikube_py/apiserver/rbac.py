"""RBAC (rbac.authorization.k8s.io/v1): the authorizer and the bootstrap roles and bindings.

Decisions come from an in-memory view of Roles and bindings kept by store watches
(:mod:`.rbac_cache`), as kube-apiserver's come from informers; a binding written through this server
counts from the moment its create returns (the view is waited for until it has caught up). Without
the view (not listed yet, or behind for too long) the rules are read from the store, the original
path. Members of ``system:masters`` are allowed everything without a lookup, as kube-apiserver's
privileged group.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from minikube_py.api.resources import ResourceInfo, lookup

from . import objects

if TYPE_CHECKING:
    from .rbac_cache import RBACCache
    from .registry import Registry
    from .requests import RequestInfo
    from .server import APIServer, User

GROUP = "rbac.authorization.k8s.io"
MASTERS = "system:masters"


def _info(plural: str) -> ResourceInfo:
    info = lookup(GROUP, "v1", plural)
    assert info is not None, plural
    return info


def _matches(values: Any, wanted: str) -> bool:
    return isinstance(values, list) and ("*" in values or wanted in values)


def rule_allows(rule: dict[str, Any], ri: RequestInfo) -> bool:
    """Whether one PolicyRule covers the request, with Kubernetes' matching (``*``, ``*/sub``,
    resourceNames, nonResourceURLs with a trailing ``*``)."""
    if not isinstance(rule, dict) or not _matches(rule.get("verbs"), ri.verb):
        return False
    if not ri.is_resource:
        for url in rule.get("nonResourceURLs") or ():
            if not isinstance(url, str):
                continue
            if url == "*" or url == ri.path or (url.endswith("*") and ri.path.startswith(url[:-1])):
                return True
        return False
    if not _matches(rule.get("apiGroups"), ri.group):
        return False
    resources = rule.get("resources")
    if not isinstance(resources, list):
        return False
    if ri.subresource:
        full = f"{ri.resource}/{ri.subresource}"
        if not ("*" in resources or full in resources or f"*/{ri.subresource}" in resources):
            return False
    elif not ("*" in resources or ri.resource in resources):
        return False
    names = rule.get("resourceNames")
    if names:
        return bool(ri.name) and ri.name in names
    return True


def subject_matches(subject: Any, user: User, binding_namespace: str | None) -> bool:
    if not isinstance(subject, dict):
        return False
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return name == user.name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_namespace
        return user.name == f"system:serviceaccount:{ns}:{name}"
    return False


def first_subject(subjects: Any, user: User, binding_namespace: str | None) -> dict[str, Any] | None:
    """The first of a binding's subjects that is the user (a binding with no list of subjects: None)."""
    if not isinstance(subjects, list):
        return None
    return next((s for s in subjects if subject_matches(s, user, binding_namespace)), None)


def role_ref_key(ref: Any, namespace: str | None) -> str | None:
    """The store key of the role a roleRef names (a Role in the binding's namespace), or None when it
    can name none: such a binding grants nothing, as in Kubernetes."""
    if not isinstance(ref, dict) or ref.get("apiGroup", GROUP) != GROUP:
        return None
    kind, name = ref.get("kind"), ref.get("name")
    if not isinstance(name, str) or not name:
        return None
    if kind == "ClusterRole":
        return _info("clusterroles").key(None, name)
    if kind == "Role" and namespace:
        return _info("roles").key(namespace, name)
    return None


def role_rules(role: dict[str, Any]) -> list[dict[str, Any]]:
    rules = role.get("rules")
    return [r for r in rules if isinstance(r, dict)] if isinstance(rules, list) else []


def allowed_reason(kind: str, name: str, namespace: str | None, ref: dict[str, Any], match: dict[str, Any]) -> str:
    where = f' in namespace "{namespace}"' if namespace else ""
    return (f'RBAC: allowed by {kind} "{name}/{namespace}"' if namespace else
            f'RBAC: allowed by {kind} "{name}"') + \
        f' of {ref.get("kind")} "{ref.get("name")}" to {match.get("kind")} "{match.get("name")}"' + where


class RBACAuthorizer:
    """Allows a request when a ClusterRoleBinding, or a RoleBinding in the request's namespace, binds
    the user (or one of its groups) to a role with a rule covering it. Never denies outright.

    With a ``cache`` decisions are made from it once it is fresh (see :mod:`.rbac_cache`); until then,
    and without one, from the store."""

    def __init__(self, registry: Registry, cache: RBACCache | None = None) -> None:
        self.registry = registry
        self.cache = cache

    async def start(self) -> None:
        if self.cache is not None:
            await self.cache.start()

    async def stop(self) -> None:
        if self.cache is not None:
            await self.cache.stop()

    async def authorize(self, user: User, ri: RequestInfo, field_selector: str = "") -> tuple[bool, str]:
        if MASTERS in user.groups:
            return True, ""
        cache = self.cache
        if cache is not None and (cache.fresh() or await cache.wait_fresh()):
            return cache.decide(user, ri)
        return await self.authorize_from_store(user, ri)

    # ---- the store path: the fallback, and the reference the cache is tested against -----------------

    async def _role_rules(self, ref: Any, namespace: str | None) -> list[dict[str, Any]]:
        key = role_ref_key(ref, namespace)
        if key is None:
            return []
        kv = await self.registry.store.get(key)
        return role_rules(objects.decode(kv)) if kv is not None else []

    async def _bindings(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        return (await self.registry.list(_info(plural), namespace)).items

    async def authorize_from_store(self, user: User, ri: RequestInfo) -> tuple[bool, str]:
        if MASTERS in user.groups:
            return True, ""
        sources: list[tuple[str, dict[str, Any]]] = [
            ("ClusterRoleBinding", b) for b in await self._bindings("clusterrolebindings", None)]
        if ri.is_resource and ri.namespace:
            sources += [("RoleBinding", b) for b in await self._bindings("rolebindings", ri.namespace)]
        for kind, binding in sources:
            ns = binding["metadata"].get("namespace") if kind == "RoleBinding" else None
            match = first_subject(binding.get("subjects") or [], user, ns)
            if match is None:
                continue
            ref = binding.get("roleRef")
            if any(rule_allows(rule, ri) for rule in await self._role_rules(ref, ns)):
                return True, allowed_reason(kind, binding["metadata"]["name"], ns, ref, match)
        return False, ""


class UnionAuthorizer:
    """Authorizers asked in order (``--authorization-mode=Node,RBAC``); the first that allows wins."""

    def __init__(self, authorizers: Sequence[Any]) -> None:
        self.authorizers = tuple(authorizers)

    async def start(self) -> None:
        """Start the members that keep state (the RBAC cache's watches)."""
        for a in self.authorizers:
            if hasattr(a, "start"):
                await a.start()

    async def stop(self) -> None:
        for a in self.authorizers:
            if hasattr(a, "stop"):
                await a.stop()

    async def authorize(self, user: User, ri: RequestInfo, field_selector: str = "") -> tuple[bool, str]:
        reasons = []
        for a in self.authorizers:
            result: Any = a.authorize(user, ri, field_selector=field_selector)
            if inspect.isawaitable(result):
                result = await result
            allowed, reason = result
            if allowed:
                return True, reason
            if reason:
                reasons.append(reason)
        return False, ", ".join(reasons)


async def decide(authorizer: Any, user: User, ri: RequestInfo, field_selector: str = "") -> tuple[bool, str]:
    """Ask an authorizer whose answer may be plain or awaitable."""
    result: Any = authorizer.authorize(user, ri, field_selector=field_selector)
    if isinstance(result, Awaitable):
        result = await result
    return result


AUTHORIZATION_MODES = ("AlwaysAllow", "AlwaysDeny", "Node", "RBAC")


class _Always:
    def __init__(self, allow: bool) -> None:
        self.allow = allow

    def authorize(self, user: User, ri: RequestInfo, field_selector: str = "") -> tuple[bool, str]:
        return self.allow, ""


def build_authorizer(mode: str, registry: Registry) -> UnionAuthorizer:
    """The authorizer of ``--authorization-mode`` (comma-separated, asked in order)."""
    from .nodeauthz import NodeAuthorizer

    names = [m.strip() for m in mode.split(",") if m.strip()]
    if not names:
        raise ValueError("--authorization-mode is empty")
    chain: list[Any] = []
    for name in names:
        if name not in AUTHORIZATION_MODES:
            raise ValueError(f"--authorization-mode: unknown mode {name!r} (known: {', '.join(AUTHORIZATION_MODES)})")
        if names.count(name) > 1:
            raise ValueError(f"--authorization-mode: {name} is listed twice")
        if name == "RBAC":
            from .rbac_cache import RBACCache

            chain.append(RBACAuthorizer(registry, RBACCache(registry)))
        else:
            chain.append(NodeAuthorizer(registry) if name == "Node" else _Always(name == "AlwaysAllow"))
    return UnionAuthorizer(chain)


# ---- bootstrap policy -------------------------------------------------------------------------------

def _rule(verbs: Iterable[str], groups: Iterable[str], resources: Iterable[str]) -> dict[str, Any]:
    return {"verbs": list(verbs), "apiGroups": list(groups), "resources": list(resources)}


READ = ("get", "list", "watch")
WRITE = ("create", "delete", "deletecollection", "patch", "update")
_CORE_VIEW = ("pods", "pods/log", "pods/status", "services", "services/status", "endpoints", "configmaps",
              "events", "serviceaccounts", "replicationcontrollers", "persistentvolumeclaims", "resourcequotas",
              "limitranges", "namespaces", "namespaces/status", "bindings")
_APPS = ("deployments", "deployments/scale", "deployments/status", "replicasets", "replicasets/scale",
         "replicasets/status", "daemonsets", "daemonsets/status", "statefulsets", "statefulsets/scale",
         "controllerrevisions")


def bootstrap_cluster_roles() -> list[dict[str, Any]]:
    view = [_rule(READ, [""], _CORE_VIEW), _rule(READ, ["apps"], _APPS),
            _rule(READ, ["discovery.k8s.io"], ["endpointslices"]),
            _rule(READ, ["coordination.k8s.io"], ["leases"])]
    edit = [_rule((*READ, *WRITE), [""], ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy",
                                          "pods/eviction", "services", "endpoints", "configmaps", "secrets",
                                          "serviceaccounts", "persistentvolumeclaims", "replicationcontrollers",
                                          "events"]),
            _rule(["create"], [""], ["serviceaccounts/token"]),
            _rule((*READ, *WRITE), ["apps"], _APPS),
            _rule((*READ, *WRITE), ["discovery.k8s.io"], ["endpointslices"]),
            _rule((*READ, *WRITE), ["coordination.k8s.io"], ["leases"]), *view]
    admin = [_rule((*READ, *WRITE), [GROUP], ["roles", "rolebindings"]),
             _rule(["create"], ["authorization.k8s.io"], ["localsubjectaccessreviews"]), *edit]
    roles: dict[str, list[dict[str, Any]]] = {
        "cluster-admin": [_rule(["*"], ["*"], ["*"]), {"verbs": ["*"], "nonResourceURLs": ["*"]}],
        "admin": admin,
        "edit": edit,
        "view": view,
        "system:basic-user": [_rule(["create"], ["authorization.k8s.io"],
                                    ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
                              _rule(["create"], ["authentication.k8s.io"], ["selfsubjectreviews"])],
        "system:discovery": [{"verbs": ["get"], "nonResourceURLs": [
            "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz",
            "/version", "/version/"]}],
        "system:public-info-viewer": [{"verbs": ["get"], "nonResourceURLs": [
            "/healthz", "/livez", "/readyz", "/version", "/version/"]}],
        "system:kube-scheduler": [
            _rule(["create"], ["", "events.k8s.io"], ["events"]),
            _rule(["patch", "update"], ["", "events.k8s.io"], ["events"]),
            _rule(["create"], ["coordination.k8s.io"], ["leases"]),
            _rule(["get", "update"], ["coordination.k8s.io"], ["leases"]),
            _rule(["delete", *READ], [""], ["pods"]),
            _rule(["create"], [""], ["bindings", "pods/binding"]),
            _rule(["patch", "update"], [""], ["pods/status"]),
            _rule(READ, [""], ["nodes", "namespaces", "services", "replicationcontrollers",
                               "persistentvolumeclaims", "persistentvolumes", "configmaps"]),
            _rule(READ, ["apps"], ["replicasets", "statefulsets"]),
            _rule(["create"], ["authentication.k8s.io"], ["tokenreviews"]),
            _rule(["create"], ["authorization.k8s.io"], ["subjectaccessreviews"]),
        ],
        "system:kube-controller-manager": [
            _rule(["create", "patch", "update"], ["", "events.k8s.io"], ["events"]),
            _rule(["create"], ["coordination.k8s.io"], ["leases"]),
            _rule(["get", "update"], ["coordination.k8s.io"], ["leases"]),
            _rule(["create"], [""], ["secrets", "serviceaccounts"]),
            _rule(["delete"], [""], ["secrets"]),
            _rule(["get"], [""], ["configmaps", "namespaces", "secrets", "serviceaccounts"]),
            _rule(["update"], [""], ["secrets", "serviceaccounts"]),
            _rule(["create"], ["authentication.k8s.io"], ["tokenreviews"]),
            _rule(["create"], ["authorization.k8s.io"], ["subjectaccessreviews"]),
            _rule(["list", "watch"], ["*"], ["*"]),
            _rule(["get"], [""], ["serviceaccounts/token"]),
            _rule(["create"], [""], ["serviceaccounts/token"]),
        ],
        # Full access to the kubelet API (10250), which maps its paths onto these subresources.
        "system:kubelet-api-admin": [
            _rule(READ, [""], ["nodes"]),
            _rule(["proxy"], [""], ["nodes"]),
            _rule(["*"], [""], ["nodes/proxy", "nodes/metrics", "nodes/stats", "nodes/log", "nodes/spec",
                                "nodes/checkpoint"]),
        ],
        # Scraping and probing the components' own ports (10257, 10259) and the API server.
        "system:monitoring": [{"verbs": ["get"], "nonResourceURLs": [
            "/metrics", "/metrics/slis", "/livez", "/readyz", "/healthz", "/livez/*", "/readyz/*", "/healthz/*"]}],
        "system:node-proxier": [
            _rule(["list", "watch"], [""], ["endpoints", "services"]),
            _rule(READ, [""], ["nodes"]),
            _rule(["create", "patch", "update"], ["", "events.k8s.io"], ["events"]),
            _rule(["list", "watch"], ["discovery.k8s.io"], ["endpointslices"]),
        ],
    }
    out = []
    for name, rules in roles.items():
        meta: dict[str, Any] = {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                                "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}}
        out.append({"apiVersion": f"{GROUP}/v1", "kind": "ClusterRole", "metadata": meta, "rules": rules})
    return out


CONTROLLER_ROLE_PREFIX = "system:controller:"
CONTROLLER_NAMESPACE = "kube-system"


def _events_rule() -> dict[str, Any]:
    # Kubernetes' controllers create, update and patch events; "get" is added because our event
    # recorder reads an event back to bump its count, where client-go's correlator keeps it in memory.
    return _rule(["create", "update", "patch", "get"], ["", "events.k8s.io"], ["events"])


def controller_roles() -> dict[str, list[dict[str, Any]]]:
    """``system:controller:<ServiceAccount>`` rules for the controllers this controller-manager runs with
    ``--use-service-account-credentials``: the ServiceAccount names and rules of Kubernetes' bootstrap
    controller policy, for the resources this API server serves. Reads through the shared informers use
    the controller-manager's own identity (list/watch on everything), as in Kubernetes."""
    core, apps = [""], ["apps", "extensions"]
    return {
        "deployment-controller": [
            _rule(["get", "list", "watch", "update"], apps, ["deployments"]),
            _rule(["update"], apps, ["deployments/status", "deployments/finalizers"]),
            _rule(["get", "list", "watch", "create", "update", "patch", "delete"], apps, ["replicasets"]),
            _rule(["get", "list", "watch", "update"], core, ["pods"]),
            _events_rule()],
        "replicaset-controller": [
            _rule(["get", "list", "watch", "update"], apps, ["replicasets"]),
            _rule(["update"], apps, ["replicasets/status", "replicasets/finalizers"]),
            _rule(["list", "watch", "patch", "create", "delete"], core, ["pods"]),
            _events_rule()],
        "daemon-set-controller": [
            _rule(["get", "list", "watch"], apps, ["daemonsets"]),
            _rule(["update"], apps, ["daemonsets/status", "daemonsets/finalizers"]),
            _rule(["list", "watch"], core, ["nodes"]),
            _rule(["list", "watch", "create", "delete", "patch"], core, ["pods"]),
            _rule(["create"], core, ["pods/binding"]),
            _rule(["get", "list", "watch", "create", "delete", "update", "patch"], ["apps"], ["controllerrevisions"]),
            _events_rule()],
        # The node IPAM and node lifecycle controllers share one account, as in Kubernetes.
        "node-controller": [
            _rule(["get", "list", "watch", "update", "delete", "patch"], core, ["nodes"]),
            _rule(["patch", "update"], core, ["nodes/status", "pods/status"]),
            _rule(["list", "watch", "get", "delete"], core, ["pods"]),
            _events_rule()],
        "endpoint-controller": [
            _rule(["get", "list", "watch"], core, ["services", "pods"]),
            _rule(["get", "list", "watch", "create", "update", "delete"], core, ["endpoints"]),
            _rule(["create"], core, ["endpoints/restricted"]),
            _events_rule()],
        "endpointslice-controller": [
            _rule(["get", "list", "watch"], core, ["services", "pods", "nodes"]),
            _rule(["update"], core, ["services/finalizers"]),
            _rule(["get", "list", "watch", "create", "update", "delete"], ["discovery.k8s.io"], ["endpointslices"]),
            _events_rule()],
        "service-account-controller": [
            _rule(["create"], core, ["serviceaccounts"]),
            _events_rule()],
        "namespace-controller": [
            _rule(["get", "list", "watch", "delete"], core, ["namespaces"]),
            _rule(["update"], core, ["namespaces/finalize", "namespaces/status"]),
            _rule(["get", "list", "watch", "delete", "deletecollection"], ["*"], ["*"])],
        "generic-garbage-collector": [
            _rule(["get", "list", "watch", "patch", "update", "delete"], ["*"], ["*"]),
            _events_rule()],
        "root-ca-cert-publisher": [
            _rule(["create", "update"], core, ["configmaps"]),
            _events_rule()],
    }


def _bootstrap_meta(name: str) -> dict[str, Any]:
    return {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}}


def controller_cluster_roles() -> list[dict[str, Any]]:
    return [{"apiVersion": f"{GROUP}/v1", "kind": "ClusterRole",
             "metadata": _bootstrap_meta(CONTROLLER_ROLE_PREFIX + sa), "rules": rules}
            for sa, rules in controller_roles().items()]


def controller_cluster_role_bindings() -> list[dict[str, Any]]:
    """Each role bound to the ServiceAccount of the same name in kube-system, as Kubernetes binds them."""
    return [{"apiVersion": f"{GROUP}/v1", "kind": "ClusterRoleBinding",
             "metadata": _bootstrap_meta(CONTROLLER_ROLE_PREFIX + sa),
             "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": CONTROLLER_ROLE_PREFIX + sa},
             "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": CONTROLLER_NAMESPACE}]}
            for sa in controller_roles()]


def bootstrap_cluster_role_bindings() -> list[dict[str, Any]]:
    def subj(kind: str, name: str) -> dict[str, Any]:
        return {"kind": kind, "apiGroup": GROUP, "name": name}

    bindings = {
        "cluster-admin": ("cluster-admin", [subj("Group", MASTERS)]),
        "system:basic-user": ("system:basic-user", [subj("Group", "system:authenticated")]),
        "system:discovery": ("system:discovery", [subj("Group", "system:authenticated")]),
        "system:public-info-viewer": ("system:public-info-viewer", [subj("Group", "system:authenticated"),
                                                                    subj("Group", "system:unauthenticated")]),
        "system:kube-scheduler": ("system:kube-scheduler", [subj("User", "system:kube-scheduler")]),
        "system:kube-controller-manager": ("system:kube-controller-manager",
                                           [subj("User", "system:kube-controller-manager")]),
        "system:node-proxier": ("system:node-proxier", [subj("User", "system:kube-proxy")]),
        "system:monitoring": ("system:monitoring", [subj("Group", "system:monitoring")]),
        # The API server's client identity towards the kubelets (kube-apiserver-kubelet-client), as
        # Kubernetes the hard way binds it: logs and exec keep working if its certificate is not in
        # system:masters.
        "system:kube-apiserver-kubelet-client": ("system:kubelet-api-admin",
                                                 [subj("User", "kube-apiserver-kubelet-client")]),
    }
    out = []
    for name, (role, subjects) in bindings.items():
        meta: dict[str, Any] = {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                                "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}}
        out.append({"apiVersion": f"{GROUP}/v1", "kind": "ClusterRoleBinding", "metadata": meta,
                    "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role}, "subjects": subjects})
    return out


async def bootstrap_policy(srv: APIServer) -> None:
    """Create the bootstrap ClusterRoles and ClusterRoleBindings that are missing (existing ones,
    perhaps edited by an administrator, stay as they are)."""
    roles, bindings = _info("clusterroles"), _info("clusterrolebindings")
    work = [(roles, obj) for obj in bootstrap_cluster_roles() + controller_cluster_roles()] + \
        [(bindings, obj) for obj in bootstrap_cluster_role_bindings() + controller_cluster_role_bindings()]

    from .bootstrap import ensure_object

    await asyncio.gather(*(ensure_object(srv, info, None, obj) for info, obj in work))
