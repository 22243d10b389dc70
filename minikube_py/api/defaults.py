"""Kubernetes' defaulting (the ``SetDefaults_*`` functions), applied in place to a decoded object.

Only fields a user may leave out are filled, and never over a value the user gave. What the API
server allocates itself (uid, clusterIP, nodePort, tolerations from admission) is not done here.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from .resources import ResourceInfo

# The grace period every pod gets unless it says otherwise (v1.DefaultTerminationGracePeriodSeconds).
DEFAULT_TERMINATION_GRACE_PERIOD = 30
# Secret, ConfigMap, DownwardAPI and projected volumes: 0644, as Kubernetes writes it in decimal.
DEFAULT_VOLUME_MODE = 420
# The two classes every cluster has (scheduling.SystemPriorityClasses).
BUILTIN_PRIORITY_CLASSES = {"system-cluster-critical": 2000000000, "system-node-critical": 2000001000}
# ClientIP session affinity lasts three hours unless configured (v1.DefaultClientIPServiceAffinitySeconds).
DEFAULT_CLIENT_IP_AFFINITY_SECONDS = 10800

_VOLUME_SOURCES_WITH_MODE = ("secret", "configMap", "downwardAPI", "projected")
# Every volume source a Volume may carry besides its name, in the order Kubernetes checks them; a
# volume with none becomes an emptyDir.
VOLUME_SOURCES = (
    "emptyDir", "hostPath", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "secret", "nfs",
    "iscsi", "glusterfs", "persistentVolumeClaim", "rbd", "flexVolume", "cinder", "cephfs", "flocker",
    "downwardAPI", "fc", "azureFile", "configMap", "vsphereVolume", "quobyte", "azureDisk",
    "photonPersistentDisk", "projected", "portworxVolume", "scaleIO", "storageos", "csi", "ephemeral",
    "image",
)


def apply_defaults(info: ResourceInfo, obj: dict) -> None:
    """Fill Kubernetes' defaults into a freshly decoded object, in place (the object is the server's
    own copy)."""
    if not isinstance(obj, dict):
        raise TypeError(f"a {info.kind} must be a JSON object, not {type(obj).__name__}")
    handler = _BY_KIND.get((info.group, info.kind))
    if handler is not None:
        handler(obj)


# -- pods and pod templates -------------------------------------------------------------------


def _default_pod(pod: dict) -> None:
    spec = _child(pod, "spec")
    default_pod_spec(spec)
    # The Priority admission plugin resolves the pod's class to a number (0 without a class); it
    # runs on pods only, so templates stay without it.
    priority_class = spec.get("priorityClassName")
    spec.setdefault("priority", BUILTIN_PRIORITY_CLASSES.get(priority_class, 0)
                    if isinstance(priority_class, str) else 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")


def default_pod_spec(spec: dict) -> None:
    """SetDefaults_PodSpec and everything it reaches (containers, volumes, probes)."""
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", DEFAULT_TERMINATION_GRACE_PERIOD)
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    if spec.get("securityContext") is None:
        spec["securityContext"] = {}
    host_network = spec.get("hostNetwork") is True
    for group in ("initContainers", "containers", "ephemeralContainers"):
        for container in _dicts(spec.get(group)):
            _default_container(container, host_network)
    for volume in _dicts(spec.get("volumes")):
        _default_volume(volume)


def _default_container(container: dict, host_network: bool) -> None:
    if not container.get("imagePullPolicy"):
        image = container.get("image")
        container["imagePullPolicy"] = image_pull_policy(image if isinstance(image, str) else "")
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    if container.get("resources") is None:
        container["resources"] = {}
    resources = container["resources"]
    if isinstance(resources, dict):
        # SetDefaults_Pod: a limit without a request means the request equals the limit.
        limits = resources.get("limits")
        if isinstance(limits, dict) and limits:
            requests = resources.get("requests")
            if not isinstance(requests, dict):
                requests = resources["requests"] = {}
            for name, value in limits.items():
                requests.setdefault(name, value)
    for port in _dicts(container.get("ports")):
        port.setdefault("protocol", "TCP")
        if host_network and not port.get("hostPort") and port.get("containerPort"):
            port["hostPort"] = port["containerPort"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if isinstance(container.get(probe), dict):
            _default_probe(container[probe])
    lifecycle = container.get("lifecycle")
    if isinstance(lifecycle, dict):
        for hook in _dicts([lifecycle.get("postStart"), lifecycle.get("preStop")]):
            _default_handler(hook)
    for env in _dicts(container.get("env")):
        value_from = env.get("valueFrom")
        if isinstance(value_from, dict) and isinstance(value_from.get("fieldRef"), dict):
            value_from["fieldRef"].setdefault("apiVersion", "v1")


def image_pull_policy(image: str) -> str:
    """Always for ``:latest`` or an untagged image, else IfNotPresent (a digest alone counts as pinned)."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        tag = last.rsplit(":", 1)[1]
    else:
        tag = "" if digest else "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


def _default_probe(probe: dict) -> None:
    probe.setdefault("timeoutSeconds", 1)
    probe.setdefault("periodSeconds", 10)
    probe.setdefault("successThreshold", 1)
    probe.setdefault("failureThreshold", 3)
    _default_handler(probe)


def _default_handler(handler: dict) -> None:
    http_get = handler.get("httpGet")
    if isinstance(http_get, dict):
        http_get.setdefault("path", "/")
        http_get.setdefault("scheme", "HTTP")


def _default_volume(volume: dict) -> None:
    if not any(volume.get(source) is not None for source in VOLUME_SOURCES):
        volume["emptyDir"] = {}
        return
    for source in _VOLUME_SOURCES_WITH_MODE:
        if isinstance(volume.get(source), dict):
            volume[source].setdefault("defaultMode", DEFAULT_VOLUME_MODE)
    if isinstance(volume.get("hostPath"), dict):
        volume["hostPath"].setdefault("type", "")


def _default_template(obj: dict) -> None:
    template = _child(_child(obj, "spec"), "template")
    default_pod_spec(_child(template, "spec"))


# -- workloads --------------------------------------------------------------------------------


def _default_deployment(obj: dict) -> None:
    spec = _child(obj, "spec")
    spec.setdefault("replicas", 1)
    strategy = _child(spec, "strategy")
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = _child(strategy, "rollingUpdate")
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _default_template(obj)


def _default_replica_set(obj: dict) -> None:
    _child(obj, "spec").setdefault("replicas", 1)
    _default_template(obj)


def _default_daemon_set(obj: dict) -> None:
    spec = _child(obj, "spec")
    strategy = _child(spec, "updateStrategy")
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = _child(strategy, "rollingUpdate")
        rolling.setdefault("maxUnavailable", 1)
        rolling.setdefault("maxSurge", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    _default_template(obj)


# -- networking -------------------------------------------------------------------------------


def _default_service(obj: dict) -> None:
    spec = _child(obj, "spec")
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["sessionAffinity"] == "ClientIP":
        config = _child(_child(spec, "sessionAffinityConfig"), "clientIP")
        config.setdefault("timeoutSeconds", DEFAULT_CLIENT_IP_AFFINITY_SECONDS)
    for port in _dicts(spec.get("ports")):
        port.setdefault("protocol", "TCP")
        # A targetPort of 0 or "" is as good as missing: the service forwards to its own port.
        if port.get("targetPort") in (None, 0, ""):
            port["targetPort"] = port.get("port")
    service_type = spec["type"]
    if service_type in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if service_type == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    if service_type != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
        # The REST storage picks the families; this cluster is single-stack IPv4.
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")


def _default_endpoints(obj: dict) -> None:
    for subset in _dicts(obj.get("subsets")):
        for port in _dicts(subset.get("ports")):
            port.setdefault("protocol", "TCP")


def _default_endpoint_slice(obj: dict) -> None:
    for port in _dicts(obj.get("ports")):
        port.setdefault("name", "")
        port.setdefault("protocol", "TCP")


# -- everything else --------------------------------------------------------------------------


def _default_secret(obj: dict) -> None:
    if not obj.get("type"):
        obj["type"] = "Opaque"
    # stringData is write-only: decoding merges it into data (its keys win) and drops it, so it is
    # never stored or returned.
    string_data = obj.get("stringData")
    if isinstance(string_data, dict):
        data = obj.get("data")
        if data is None:
            data = obj["data"] = {}
        if isinstance(data, dict) and all(isinstance(v, str) for v in string_data.values()):
            for key, value in string_data.items():
                data[key] = base64.b64encode(value.encode()).decode()
            del obj["stringData"]


def _default_namespace(obj: dict) -> None:
    _child(obj, "spec").setdefault("finalizers", ["kubernetes"])
    _child(obj, "status").setdefault("phase", "Active")
    name = _child(obj, "metadata").get("name")
    if isinstance(name, str) and name:
        # The apiserver labels every namespace with its own name, so selectors can pick namespaces.
        labels = _child(obj["metadata"], "labels")
        labels["kubernetes.io/metadata.name"] = name


def _default_node(obj: dict) -> None:
    status = obj.get("status")
    if not isinstance(status, dict):
        return
    if isinstance(status.get("capacity"), dict) and not status.get("allocatable"):
        status["allocatable"] = dict(status["capacity"])


def _child(parent: dict, key: str) -> dict:
    """``parent[key]`` as a dict, created when missing or null (a non-object is left for validation)."""
    value = parent.get(key)
    if value is None:
        value = parent[key] = {}
    if not isinstance(value, dict):
        # Keep the user's bad value for validation to report; defaults go to a throwaway dict.
        return {}
    return value


def _dicts(items: Any) -> list[dict]:
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, dict)]


_BY_KIND: dict[tuple[str, str], Callable[[dict], None]] = {
    ("", "Pod"): _default_pod,
    ("", "Service"): _default_service,
    ("", "Endpoints"): _default_endpoints,
    ("", "Secret"): _default_secret,
    ("", "Namespace"): _default_namespace,
    ("", "Node"): _default_node,
    ("apps", "Deployment"): _default_deployment,
    ("apps", "ReplicaSet"): _default_replica_set,
    ("apps", "DaemonSet"): _default_daemon_set,
    ("discovery.k8s.io", "EndpointSlice"): _default_endpoint_slice,
}
