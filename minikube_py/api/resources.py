"""The kinds the API server serves: one :class:`ResourceInfo` per resource, as discovery shows them."""

from __future__ import annotations

from dataclasses import dataclass

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # Subresources served under /<plural>/<name>/<sub>: "status", "scale", "binding", "log", "exec".
    subresources: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    # The kubernetes Python client's model class name, which names the OpenAPI schema.
    model: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def qualified(self) -> str:
        """``deployments.apps``: the name kubectl and Status messages use."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def key(self, namespace: str | None, name: str) -> str:
        """The store key, as Kubernetes lays it out: ``/registry/<resource>/<ns>/<name>``."""
        return f"{self.prefix(namespace)}{name}"

    def prefix(self, namespace: str | None) -> str:
        """The store prefix of a list: every namespace when ``namespace`` is None."""
        base = f"/registry/{self.plural}/"
        if self.namespaced and namespace:
            return f"{base}{namespace}/"
        return base


RESOURCES: tuple[ResourceInfo, ...] = (
    # core/v1
    ResourceInfo("", "v1", "Namespace", "namespaces", "namespace", False, ("ns",),
                 subresources=("status", "finalize"), model="V1Namespace"),
    ResourceInfo("", "v1", "Pod", "pods", "pod", True, ("po",), ("all",),
                 ("status", "binding", "log", "exec", "eviction"), model="V1Pod"),
    ResourceInfo("", "v1", "Node", "nodes", "node", False, ("no",), subresources=("status",),
                 model="V1Node"),
    ResourceInfo("", "v1", "Service", "services", "service", True, ("svc",), ("all",),
                 ("status",), model="V1Service"),
    ResourceInfo("", "v1", "Endpoints", "endpoints", "endpoints", True, ("ep",), model="V1Endpoints"),
    ResourceInfo("", "v1", "ConfigMap", "configmaps", "configmap", True, ("cm",), model="V1ConfigMap"),
    ResourceInfo("", "v1", "Secret", "secrets", "secret", True, model="V1Secret"),
    ResourceInfo("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", True, ("sa",),
                 subresources=("token",), model="V1ServiceAccount"),
    ResourceInfo("", "v1", "Event", "events", "event", True, ("ev",), model="CoreV1Event"),
    # apps/v1
    ResourceInfo("apps", "v1", "Deployment", "deployments", "deployment", True, ("deploy",), ("all",),
                 ("status", "scale"), model="V1Deployment"),
    ResourceInfo("apps", "v1", "ReplicaSet", "replicasets", "replicaset", True, ("rs",), ("all",),
                 ("status", "scale"), model="V1ReplicaSet"),
    ResourceInfo("apps", "v1", "DaemonSet", "daemonsets", "daemonset", True, ("ds",), ("all",),
                 ("status",), model="V1DaemonSet"),
    # coordination.k8s.io/v1
    ResourceInfo("coordination.k8s.io", "v1", "Lease", "leases", "lease", True, model="V1Lease"),
    # discovery.k8s.io/v1
    ResourceInfo("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", True,
                 model="V1EndpointSlice"),
    # rbac.authorization.k8s.io/v1
    ResourceInfo("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", False,
                 model="V1ClusterRole"),
    ResourceInfo("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings",
                 "clusterrolebinding", False, model="V1ClusterRoleBinding"),
    ResourceInfo("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", True, model="V1Role"),
    ResourceInfo("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", True,
                 model="V1RoleBinding"),
)

_BY_PATH: dict[tuple[str, str, str], ResourceInfo] = {
    (r.group, r.version, r.plural): r for r in RESOURCES
}
_BY_KIND: dict[tuple[str, str], ResourceInfo] = {(r.api_version, r.kind): r for r in RESOURCES}


def lookup(group: str, version: str, plural: str) -> ResourceInfo | None:
    """The resource served at ``/api[s]/<group>/<version>/.../<plural>``, or None."""
    return _BY_PATH.get((group, version, plural))


def by_kind(api_version: str, kind: str) -> ResourceInfo | None:
    """The resource of an object's ``apiVersion`` and ``kind``, or None."""
    return _BY_KIND.get((api_version, kind))


def group_versions() -> dict[str, list[str]]:
    """Every served group (core as "") with its versions, preferred first."""
    out: dict[str, list[str]] = {}
    for r in RESOURCES:
        versions = out.setdefault(r.group, [])
        if r.version not in versions:
            versions.append(r.version)
    return out


def in_group_version(group: str, version: str) -> list[ResourceInfo]:
    return [r for r in RESOURCES if r.group == group and r.version == version]
