"""The Node authorizer: what a kubelet (user ``system:node:<name>`` in group ``system:nodes``) may do.

Like kube-apiserver's (with AuthorizeNodeWithSelectors), a node may read Nodes, write only its own
Node and Lease, see pods only when bound to it (lists and watches must select
``spec.nodeName=<its name>``), update their status and delete them, write events, and read the
Secrets and ConfigMaps — and get tokens for the ServiceAccounts — that its pods use. The relation is
looked up in the store at decision time rather than kept in a graph: a pod bound a moment ago counts.
Anything else is left to the next authorizer (RBAC), which grants a node nothing by default.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from minikube_py.api import errors
from minikube_py.api.resources import lookup

if TYPE_CHECKING:
    from .registry import Registry
    from .requests import RequestInfo
    from .server import User

NODES_GROUP = "system:nodes"
NODE_PREFIX = "system:node:"
READ = ("get", "list", "watch")
WRITE_OWN = ("update", "patch", "delete")


def node_name(user: User) -> str | None:
    """The node a kubelet identity stands for, or None for any other user."""
    if NODES_GROUP in user.groups and user.name.startswith(NODE_PREFIX) and len(user.name) > len(NODE_PREFIX):
        return user.name[len(NODE_PREFIX):]
    return None


def selected_node(field_selector: str) -> str | None:
    """``spec.nodeName`` from a field selector (``spec.nodeName=n1``, ``==``), or None."""
    for term in field_selector.split(","):
        key, sep, value = term.replace("==", "=").partition("=")
        if sep and key.strip() == "spec.nodeName" and not key.strip().endswith("!"):
            return value.strip()
    return None


def selected_name(field_selector: str) -> str | None:
    for term in field_selector.split(","):
        key, sep, value = term.replace("==", "=").partition("=")
        if sep and key.strip() == "metadata.name":
            return value.strip()
    return None


def _containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(field) or ():
            if isinstance(c, dict):
                yield c


def pod_references(pod: dict[str, Any]) -> tuple[set[str], set[str], str]:
    """(secret names, configmap names, service account) a pod uses."""
    spec = pod.get("spec") or {}
    secrets: set[str] = set()
    configmaps: set[str] = set()
    for ref in spec.get("imagePullSecrets") or ():
        if isinstance(ref, dict) and ref.get("name"):
            secrets.add(ref["name"])
    for vol in spec.get("volumes") or ():
        if not isinstance(vol, dict):
            continue
        if isinstance(vol.get("secret"), dict) and vol["secret"].get("secretName"):
            secrets.add(vol["secret"]["secretName"])
        if isinstance(vol.get("configMap"), dict) and vol["configMap"].get("name"):
            configmaps.add(vol["configMap"]["name"])
        for src in (vol.get("projected") or {}).get("sources") or ():
            if not isinstance(src, dict):
                continue
            if isinstance(src.get("secret"), dict) and src["secret"].get("name"):
                secrets.add(src["secret"]["name"])
            if isinstance(src.get("configMap"), dict) and src["configMap"].get("name"):
                configmaps.add(src["configMap"]["name"])
    for c in _containers(spec):
        for env in c.get("env") or ():
            source = env.get("valueFrom") if isinstance(env, dict) else None
            if not isinstance(source, dict):
                continue
            if isinstance(source.get("secretKeyRef"), dict) and source["secretKeyRef"].get("name"):
                secrets.add(source["secretKeyRef"]["name"])
            if isinstance(source.get("configMapKeyRef"), dict) and source["configMapKeyRef"].get("name"):
                configmaps.add(source["configMapKeyRef"]["name"])
        for env_from in c.get("envFrom") or ():
            if not isinstance(env_from, dict):
                continue
            if isinstance(env_from.get("secretRef"), dict) and env_from["secretRef"].get("name"):
                secrets.add(env_from["secretRef"]["name"])
            if isinstance(env_from.get("configMapRef"), dict) and env_from["configMapRef"].get("name"):
                configmaps.add(env_from["configMapRef"]["name"])
    return secrets, configmaps, str(spec.get("serviceAccountName") or "default")


class NodeAuthorizer:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        pods = lookup("", "v1", "pods")
        assert pods is not None
        self._pods = pods

    async def _pod_on(self, namespace: str | None, name: str | None, node: str) -> bool:
        if not namespace or not name:
            return False
        try:
            pod = await self.registry.get(self._pods, namespace, name)
        except errors.ApiError as e:
            # A pod that does not exist is bound to no other node: the kubelet gets the 404 it checks
            # for after a deletion, and learns nothing about other nodes' pods.
            return e.code == 404
        return (pod.get("spec") or {}).get("nodeName") == node

    async def _used_by_pod_on(self, namespace: str | None, node: str, kind: str, name: str) -> bool:
        if not namespace or not name:
            return False
        listed = await self.registry.list(
            self._pods, namespace, matches=lambda p: (p.get("spec") or {}).get("nodeName") == node)
        for pod in listed.items:
            secrets, configmaps, account = pod_references(pod)
            if (kind == "secrets" and name in secrets) or (kind == "configmaps" and name in configmaps) \
                    or (kind == "serviceaccounts" and name == account):
                return True
        return False

    async def authorize(self, user: User, ri: RequestInfo, field_selector: str = "") -> tuple[bool, str]:
        node = node_name(user)
        if node is None or not ri.is_resource:
            return False, ""
        decision = await self._decide(node, ri, field_selector)
        if decision:
            return True, ""
        return False, ""

    async def _decide(self, node: str, ri: RequestInfo, field_selector: str) -> bool:
        group, resource, sub, verb = ri.group, ri.resource, ri.subresource, ri.verb
        if group == "" and resource == "nodes":
            if verb in READ and not sub:
                return True
            if verb == "create" and not sub:
                return True  # registering itself; the body's name is not checked here
            return verb in WRITE_OWN and ri.name == node and sub in ("", "status")
        if group == "coordination.k8s.io" and resource == "leases" and ri.namespace == "kube-node-lease":
            return verb == "create" or (verb in ("get", *WRITE_OWN) and ri.name == node)
        if resource == "events" and group in ("", "events.k8s.io"):
            return verb in ("create", "patch", "update")
        if group == "" and resource == "pods":
            if verb in ("list", "watch") and not sub:
                return selected_node(field_selector) == node
            if (verb == "get" and sub in ("", "status")) or (verb in ("update", "patch") and sub == "status") \
                    or (verb == "delete" and not sub):
                return await self._pod_on(ri.namespace, ri.name, node)
            return False
        if group == "" and resource in ("secrets", "configmaps") and not sub:
            name = ri.name if verb == "get" else selected_name(field_selector) if verb in ("list", "watch") else None
            return bool(name) and await self._used_by_pod_on(ri.namespace, node, resource, name or "")
        if group == "" and resource == "serviceaccounts" and sub == "token" and verb == "create":
            return await self._used_by_pod_on(ri.namespace, node, "serviceaccounts", ri.name or "")
        if group == "" and resource in ("services", "endpoints") and verb in READ and not sub:
            return True  # service environment variables
        if group == "authentication.k8s.io" and resource == "tokenreviews" and verb == "create":
            return True
        if group == "authorization.k8s.io" and resource == "subjectaccessreviews" and verb == "create":
            return True
        return False
