"""Server-side printing: the columns and cells of ``kubectl get`` for every served kind.

Mirrors the apiserver's printers (pkg/printers/internalversion): same column names, types and
priorities (priority 1 = ``-o wide`` only), and cells computed the same way, e.g. a pod's STATUS
from its container states. The server always prints wide rows; kubectl hides the extra columns.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .resources import ResourceInfo

_NAME_DOC = (
    "Name must be unique within a namespace. Is required when creating resources, although some resources "
    "may allow a client to request the generation of an appropriate name automatically. Name is primarily "
    "intended for creation idempotence and configuration definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
_AGE_DOC = (
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is not "
    "guaranteed to be set in happens-before order across separate operations. Clients may not set this "
    "value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for "
    "lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md"
    "#metadata"
)
_CONTAINERS_DOC = "Names of each container in the template."
_IMAGES_DOC = "Images referenced by each container in the template."


def _column(name: str, description: str, type_: str = "string", priority: int = 0, fmt: str = "") -> dict:
    return {"name": name, "type": type_, "format": fmt, "description": description, "priority": priority}


def _name_column(priority: int = 0) -> dict:
    return _column("Name", _NAME_DOC, priority=priority, fmt="name")


def _age_column() -> dict:
    return _column("Age", _AGE_DOC)


def _template_columns(selector_doc: str) -> list[dict]:
    return [
        _column("Containers", _CONTAINERS_DOC, priority=1),
        _column("Images", _IMAGES_DOC, priority=1),
        _column("Selector", selector_doc, priority=1),
    ]


_COLUMNS: dict[tuple[str, str], list[dict]] = {
    ("", "Pod"): [
        _name_column(),
        _column("Ready", "The aggregate readiness state of this pod for accepting traffic."),
        _column("Status", "The aggregate status of the containers in this pod."),
        _column("Restarts", "The number of times the containers in this pod have been restarted and when the "
                            "last container in this pod has restarted."),
        _age_column(),
        _column("IP", "podIP address allocated to the pod. Routable at least within the cluster. Empty if "
                      "not yet allocated.", priority=1),
        _column("Node", "NodeName indicates in which node this pod is scheduled. If empty, this pod is a "
                        "candidate for scheduling by the scheduler defined in schedulerName.", priority=1),
        _column("Nominated Node", "nominatedNodeName is set only when this pod preempts other pods on the "
                                  "node, but it cannot be scheduled right away as preemption victims receive "
                                  "their graceful termination periods.", priority=1),
        _column("Readiness Gates", "If specified, all readiness gates will be evaluated for pod readiness.",
                priority=1),
    ],
    ("", "Node"): [
        _name_column(),
        _column("Status", "The status of the node"),
        _column("Roles", "The roles of the node"),
        _age_column(),
        _column("Version", "Kubelet Version reported by the node."),
        _column("Internal-IP", "List of addresses reachable to the node.", priority=1),
        _column("External-IP", "List of addresses reachable to the node.", priority=1),
        _column("OS-Image", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 "
                            "(wheezy)).", priority=1),
        _column("Kernel-Version", "Kernel Version reported by the node from 'uname -r' (e.g. "
                                  "3.16.0-0.bpo.4-amd64).", priority=1),
        _column("Container-Runtime", "ContainerRuntime Version reported by the node through runtime remote "
                                     "API (e.g. containerd://1.4.2).", priority=1),
    ],
    ("", "Namespace"): [
        _name_column(),
        _column("Status", "The status of the namespace"),
        _age_column(),
    ],
    ("", "Service"): [
        _name_column(),
        _column("Type", "type determines how the Service is exposed."),
        _column("Cluster-IP", "clusterIP is the IP address of the service and is usually assigned randomly."),
        _column("External-IP", "externalIPs is a list of IP addresses for which nodes in the cluster will "
                               "also accept traffic for this service."),
        _column("Port(s)", "The list of ports that are exposed by this service."),
        _age_column(),
        _column("Selector", "Route service traffic to pods with label keys and values matching this "
                            "selector.", priority=1),
    ],
    ("", "Endpoints"): [
        _name_column(),
        _column("Endpoints", "The set of all endpoints is the union of all subsets."),
        _age_column(),
    ],
    ("", "ConfigMap"): [
        _name_column(),
        _column("Data", "Data contains the configuration data."),
        _age_column(),
    ],
    ("", "Secret"): [
        _name_column(),
        _column("Type", "Used to facilitate programmatic handling of secret data."),
        _column("Data", "Data contains the secret data."),
        _age_column(),
    ],
    ("", "ServiceAccount"): [
        _name_column(),
        _column("Secrets", "Secrets is a list of the secrets in the same namespace that pods running using "
                           "this ServiceAccount are allowed to use."),
        _age_column(),
    ],
    ("", "Event"): [
        _column("Last Seen", "The time at which the most recent occurrence of this event was recorded."),
        _column("Type", "Type of this event (Normal, Warning), new types could be added in the future"),
        _column("Reason", "This should be a short, machine understandable string that gives the reason for "
                          "the transition into the object's current status."),
        _column("Object", "The object that this event is about."),
        _column("Subobject", "If referring to a piece of an object instead of an entire object, this string "
                             "should contain a valid JSON/Go field access statement.", priority=1),
        _column("Source", "The component reporting this event.", priority=1),
        _column("Message", "A human-readable description of the status of this operation."),
        _column("First Seen", "The time at which the event was first recorded.", priority=1),
        _column("Count", "The number of times this event has occurred.", priority=1),
        _name_column(priority=1),
    ],
    ("apps", "Deployment"): [
        _name_column(),
        _column("Ready", "Number of the pod with ready state"),
        _column("Up-to-date", "Total number of non-terminated pods targeted by this deployment that have the "
                              "desired template spec."),
        _column("Available", "Total number of available pods (ready for at least minReadySeconds) targeted "
                             "by this deployment."),
        _age_column(),
        *_template_columns("Label selector for pods. Existing ReplicaSets whose pods are selected by this "
                           "will be the ones affected by this deployment."),
    ],
    ("apps", "ReplicaSet"): [
        _name_column(),
        _column("Desired", "Replicas is the number of desired replicas.", "integer"),
        _column("Current", "Replicas is the most recently observed number of replicas.", "integer"),
        _column("Ready", "The number of ready replicas for this replica set.", "integer"),
        _age_column(),
        *_template_columns("Selector is a label query over pods that should match the replica count."),
    ],
    ("apps", "DaemonSet"): [
        _name_column(),
        _column("Desired", "The total number of nodes that should be running the daemon pod.", "integer"),
        _column("Current", "The number of nodes that are running at least 1 daemon pod and are supposed to "
                           "run the daemon pod.", "integer"),
        _column("Ready", "The number of nodes that should be running the daemon pod and have one or more of "
                         "the daemon pod running and ready.", "integer"),
        _column("Up-to-date", "The total number of nodes that are running updated daemon pod", "integer"),
        _column("Available", "The number of nodes that should be running the daemon pod and have one or more "
                             "of the daemon pod running and available.", "integer"),
        _column("Node Selector", "NodeSelector is a selector which must be true for the pod to fit on a "
                                 "node."),
        _age_column(),
        *_template_columns("A label query over pods that are managed by the daemon set."),
    ],
    ("coordination.k8s.io", "Lease"): [
        _name_column(),
        _column("Holder", "holderIdentity contains the identity of the holder of a current lease."),
        _age_column(),
    ],
    ("discovery.k8s.io", "EndpointSlice"): [
        _name_column(),
        _column("AddressType", "addressType specifies the type of address carried by this EndpointSlice."),
        _column("Ports", "ports specifies the list of network ports exposed by each endpoint in this slice."),
        _column("Endpoints", "endpoints is a list of unique endpoints in this slice."),
        _age_column(),
    ],
}

# Kinds without a printer get what the apiserver gives them (registry/rest/table.go).
_DEFAULT_COLUMNS = [_name_column(), _column("Created At", _AGE_DOC, "date")]


def column_definitions(info: ResourceInfo) -> list[dict]:
    """meta.k8s.io/v1 TableColumnDefinition dicts: name, type, format, description, priority
    (priority 1 = shown only with -o wide)."""
    return [dict(column) for column in _COLUMNS.get((info.group, info.kind), _DEFAULT_COLUMNS)]


def row_cells(info: ResourceInfo, obj: dict, now: datetime) -> list:
    """The cells of one row, in column order (AGE is a string like kubectl's duration: 5s, 3m2s, 7h,
    2d...)."""
    if not isinstance(obj, dict):
        raise TypeError(f"a {info.kind} must be a JSON object, not {type(obj).__name__}")
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    printer = _PRINTERS.get((info.group, info.kind), _print_default)
    return printer(_View(obj), now)


# -- durations --------------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """kubectl's rounded duration (apimachinery duration.HumanDuration): 45s, 3m2s, 15m, 7h, 2d3h, 3y."""
    whole = int(seconds)  # Go truncates toward zero
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"  # up to a second of clock skew reads as "now"
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        rest = whole % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = whole // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        rest = (hours // 24) % 365
        return f"{hours // 24 // 365}y{rest}d" if rest else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (``2024-05-01T10:00:00Z``, fractions allowed) or None."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    if "." in text:
        # Go writes up to nine fractional digits; Python reads at most six.
        head, _, tail = text.partition(".")
        digits = len(tail) - len(tail.lstrip("0123456789"))
        text = head + "." + tail[:min(digits, 6)].ljust(6, "0") + tail[digits:]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def since(timestamp: Any, now: datetime) -> str:
    """translateTimestampSince: the age of a timestamp, ``<unknown>`` when there is none."""
    then = parse_time(timestamp)
    if then is None:
        return "<unknown>"
    return human_duration((now - then).total_seconds())


# -- reading objects --------------------------------------------------------------------------


class _View:
    """Tolerant access to a stored object: a missing or mistyped field reads as empty."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj if isinstance(obj, dict) else {}

    def get(self, *path: str) -> Any:
        value: Any = self.obj
        for key in path:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value

    def mapping(self, *path: str) -> dict:
        value = self.get(*path)
        return value if isinstance(value, dict) else {}

    def objects(self, *path: str) -> list[dict]:
        value = self.get(*path)
        return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []

    def text(self, *path: str) -> str:
        value = self.get(*path)
        return value if isinstance(value, str) else ""

    def number(self, *path: str, default: int = 0) -> int:
        value = self.get(*path)
        return value if isinstance(value, int) and not isinstance(value, bool) else default

    @property
    def name(self) -> str:
        return self.text("metadata", "name")

    def age(self, now: datetime) -> str:
        return since(self.get("metadata", "creationTimestamp"), now)


def format_labels(labels: Any) -> str:
    """labels.FormatLabels: ``a=b,c=d`` sorted, ``<none>`` when empty."""
    if not isinstance(labels, dict) or not labels:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def format_label_selector(selector: Any) -> str:
    """metav1.FormatLabelSelector: ``app=web,tier in (a,b)`` by key, ``<none>`` when it selects all."""
    if not isinstance(selector, dict):
        return "<none>"
    requirements: list[tuple[str, str]] = []
    match_labels = selector.get("matchLabels")
    for key, value in sorted(match_labels.items()) if isinstance(match_labels, dict) else []:
        requirements.append((key, f"{key}={value}"))
    expressions = selector.get("matchExpressions")
    for expr in expressions if isinstance(expressions, list) else []:
        if not isinstance(expr, dict):
            return "<error>"
        key, operator = str(expr.get("key", "")), expr.get("operator")
        raw_values = expr.get("values")
        values = ",".join(sorted(str(v) for v in raw_values)) if isinstance(raw_values, list) else ""
        text = {
            "In": f"{key} in ({values})",
            "NotIn": f"{key} notin ({values})",
            "Exists": key,
            "DoesNotExist": f"!{key}",
        }.get(operator) if isinstance(operator, str) else None
        if text is None:
            return "<error>"
        requirements.append((key, text))
    requirements.sort(key=lambda item: item[0])
    return ",".join(text for _, text in requirements) or "<none>"


def _container_cells(view: _View) -> tuple[str, str]:
    containers = view.objects("spec", "template", "spec", "containers")
    return (",".join(str(c.get("name", "")) for c in containers),
            ",".join(str(c.get("image", "")) for c in containers))


def _join_host_port(host: str, port: Any) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def _with_more(items: list[str], total: int, limit: int = 3) -> str:
    text = ",".join(items[:limit])
    if total > limit:
        return f"{text} + {total - limit} more..."
    return text


# -- printers ---------------------------------------------------------------------------------


def _print_default(view: _View, now: datetime) -> list:
    return [view.name, view.get("metadata", "creationTimestamp")]


def _condition_true(conditions: list[dict], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def _print_pod(view: _View, now: datetime) -> list:
    status = view.mapping("status")
    statuses = _View(status)
    conditions = statuses.objects("conditions")
    phase = statuses.text("phase")
    reason = statuses.text("reason") or phase
    if any(c.get("type") == "PodScheduled" and c.get("reason") == "SchedulingGated" for c in conditions):
        reason = "SchedulingGated"

    init_specs = {c.get("name"): c for c in view.objects("spec", "initContainers")}
    # Sidecars (init containers with restartPolicy Always) count as containers of the pod.
    sidecars = {name for name, c in init_specs.items() if c.get("restartPolicy") == "Always"}
    total = len(view.objects("spec", "containers")) + len(sidecars)
    ready = 0
    restarts = 0
    sidecar_restarts = 0
    last_restart: datetime | None = None
    last_sidecar_restart: datetime | None = None

    initializing = False
    init_statuses = statuses.objects("initContainerStatuses")
    for i, container in enumerate(init_statuses):
        count = _View(container).number("restartCount")
        finished = parse_time(_View(container).get("lastState", "terminated", "finishedAt"))
        restarts += count
        last_restart = _later(last_restart, finished)
        is_sidecar = container.get("name") in sidecars
        if is_sidecar:
            sidecar_restarts += count
            last_sidecar_restart = _later(last_sidecar_restart, finished)
        state = _View(container).mapping("state")
        terminated = _View(state).mapping("terminated") if state.get("terminated") is not None else None
        waiting = _View(state).mapping("waiting") if state.get("waiting") is not None else None
        if terminated is not None and _View(terminated).number("exitCode") == 0:
            continue
        if is_sidecar and container.get("started") is True:
            if container.get("ready") is True:
                ready += 1
            continue
        if terminated is not None:
            if terminated.get("reason"):
                reason = f"Init:{terminated['reason']}"
            elif _View(terminated).number("signal"):
                reason = f"Init:Signal:{_View(terminated).number('signal')}"
            else:
                reason = f"Init:ExitCode:{_View(terminated).number('exitCode')}"
        elif waiting is not None and waiting.get("reason") and waiting.get("reason") != "PodInitializing":
            reason = f"Init:{waiting['reason']}"
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break

    if not initializing or _condition_true(conditions, "Initialized"):
        restarts = sidecar_restarts
        last_restart = last_sidecar_restart
        has_running = False
        for container in reversed(statuses.objects("containerStatuses")):
            cview = _View(container)
            restarts += cview.number("restartCount")
            finished = parse_time(cview.get("lastState", "terminated", "finishedAt"))
            last_restart = _later(last_restart, finished)
            waiting_reason = cview.text("state", "waiting", "reason")
            terminated = cview.get("state", "terminated")
            if waiting_reason:
                reason = waiting_reason
            elif isinstance(terminated, dict) and terminated.get("reason"):
                reason = str(terminated["reason"])
            elif isinstance(terminated, dict):
                signal = _View(terminated).number("signal")
                reason = f"Signal:{signal}" if signal else f"ExitCode:{_View(terminated).number('exitCode')}"
            elif container.get("ready") is True and cview.get("state", "running") is not None:
                has_running = True
                ready += 1
        # A pod whose last container completed but another still runs is not Completed.
        if reason == "Completed" and has_running:
            reason = "Running" if _condition_true(conditions, "Ready") else "NotReady"

    deleting = view.get("metadata", "deletionTimestamp") is not None
    if deleting and statuses.text("reason") == "NodeLost":
        reason = "Unknown"
    elif deleting and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"

    restarts_text = str(restarts)
    if restarts and last_restart is not None:
        restarts_text = f"{restarts} ({human_duration((now - last_restart).total_seconds())} ago)"

    pod_ips = statuses.objects("podIPs")
    pod_ip = (str(pod_ips[0].get("ip") or "") if pod_ips else "") or statuses.text("podIP") or "<none>"
    gates = view.objects("spec", "readinessGates")
    gates_text = "<none>"
    if gates:
        by_type = {}
        for condition in conditions:
            by_type.setdefault(condition.get("type"), condition)
        true_count = sum(1 for g in gates if by_type.get(g.get("conditionType"), {}).get("status") == "True")
        gates_text = f"{true_count}/{len(gates)}"
    return [
        view.name, f"{ready}/{total}", reason, restarts_text, view.age(now),
        pod_ip,
        view.text("spec", "nodeName") or "<none>",
        statuses.text("nominatedNodeName") or "<none>",
        gates_text,
    ]


def _later(current: datetime | None, candidate: datetime | None) -> datetime | None:
    if candidate is None:
        return current
    if current is None or candidate > current:
        return candidate
    return current


def _print_node(view: _View, now: datetime) -> list:
    ready = next((c for c in view.objects("status", "conditions") if c.get("type") == "Ready"), None)
    states = ["Unknown"] if ready is None else ["Ready" if ready.get("status") == "True" else "NotReady"]
    if view.get("spec", "unschedulable") is True:
        states.append("SchedulingDisabled")
    roles = set()
    for key, value in view.mapping("metadata", "labels").items():
        if key.startswith("node-role.kubernetes.io/") and key != "node-role.kubernetes.io/":
            roles.add(key.removeprefix("node-role.kubernetes.io/"))
        elif key == "kubernetes.io/role" and value:
            roles.add(str(value))
    info = _View(view.mapping("status", "nodeInfo"))
    return [
        view.name, ",".join(states), ",".join(sorted(roles)) or "<none>", view.age(now),
        info.text("kubeletVersion"),
        _node_address(view, "InternalIP"), _node_address(view, "ExternalIP"),
        info.text("osImage") or "<unknown>",
        info.text("kernelVersion") or "<unknown>",
        info.text("containerRuntimeVersion") or "<unknown>",
    ]


def _node_address(view: _View, kind: str) -> str:
    for address in view.objects("status", "addresses"):
        if address.get("type") == kind:
            return str(address.get("address", ""))
    return "<none>"


def _print_namespace(view: _View, now: datetime) -> list:
    return [view.name, view.text("status", "phase"), view.age(now)]


def _print_service(view: _View, now: datetime) -> list:
    spec = _View(view.mapping("spec"))
    cluster_ips = spec.get("clusterIPs")
    cluster_ip = (cluster_ips[0] if isinstance(cluster_ips, list) and cluster_ips else spec.text("clusterIP"))
    ports = []
    for port in spec.objects("ports"):
        text = f"{port.get('port')}"
        if isinstance(port.get("nodePort"), int) and port["nodePort"] > 0:
            text += f":{port['nodePort']}"
        ports.append(f"{text}/{port.get('protocol') or ''}")
    return [
        view.name, spec.text("type"), cluster_ip or "<none>", _service_external_ip(view),
        ",".join(ports) or "<none>", view.age(now), format_labels(spec.get("selector")),
    ]


def _service_external_ip(view: _View) -> str:
    spec = _View(view.mapping("spec"))
    external_ips = [str(ip) for ip in spec.get("externalIPs") or [] if ip] if isinstance(
        spec.get("externalIPs"), list) else []
    service_type = spec.text("type")
    if service_type in ("ClusterIP", "NodePort"):
        return ",".join(external_ips) or "<none>"
    if service_type == "LoadBalancer":
        ingress = {str(i.get("ip") or i.get("hostname") or "")
                   for i in view.objects("status", "loadBalancer", "ingress")}
        addresses = sorted(a for a in ingress if a) + external_ips
        return ",".join(addresses) or "<pending>"
    if service_type == "ExternalName":
        return spec.text("externalName")
    return "<unknown>"


def _print_endpoints(view: _View, now: datetime) -> list:
    subsets = view.objects("subsets")
    if not subsets:
        return [view.name, "<none>", view.age(now)]
    shown: list[str] = []
    total = 0
    for subset in subsets:
        addresses = [str(a.get("ip", "")) for a in _View(subset).objects("addresses")]
        ports = _View(subset).objects("ports")
        if not ports:
            # A headless service may have no ports: the addresses alone are listed.
            total += len(addresses)
            shown.extend(addresses)
            continue
        for port in ports:
            total += len(addresses)
            shown.extend(_join_host_port(ip, port.get("port")) for ip in addresses)
    return [view.name, _with_more(shown, total), view.age(now)]


def _print_config_map(view: _View, now: datetime) -> list:
    return [view.name, len(view.mapping("data")) + len(view.mapping("binaryData")), view.age(now)]


def _print_secret(view: _View, now: datetime) -> list:
    return [view.name, view.text("type"), len(view.mapping("data")), view.age(now)]


def _print_service_account(view: _View, now: datetime) -> list:
    secrets = view.get("secrets")
    return [view.name, len(secrets) if isinstance(secrets, list) else 0, view.age(now)]


def _print_event(view: _View, now: datetime) -> list:
    first_seen = since(view.get("firstTimestamp"), now)
    if parse_time(view.get("firstTimestamp")) is None:
        first_seen = since(view.get("eventTime"), now)
    last_seen = since(view.get("lastTimestamp"), now)
    if parse_time(view.get("lastTimestamp")) is None:
        last_seen = first_seen
    count = view.number("count")
    if view.get("series") is not None:
        last_seen = since(view.get("series", "lastObservedTime"), now)
        count = view.number("series", "count")
    elif count == 0:
        count = 1  # events.k8s.io writes singletons without a count
    involved = _View(view.mapping("involvedObject"))
    kind = involved.text("kind").lower()
    target = f"{kind}/{involved.text('name')}" if involved.text("name") else kind
    component = view.text("source", "component") or view.text("reportingController")
    instance = view.text("source", "host") or view.text("reportingInstance")
    source = f"{component}, {instance}" if instance else component
    return [
        last_seen, view.text("type"), view.text("reason"), target, involved.text("fieldPath"), source,
        view.text("message").strip(), first_seen, count, view.name,
    ]


def _print_deployment(view: _View, now: datetime) -> list:
    names, images = _container_cells(view)
    desired = view.number("spec", "replicas", default=1)
    return [
        view.name, f"{view.number('status', 'readyReplicas')}/{desired}",
        view.number("status", "updatedReplicas"), view.number("status", "availableReplicas"), view.age(now),
        names, images, format_label_selector(view.get("spec", "selector")),
    ]


def _print_replica_set(view: _View, now: datetime) -> list:
    names, images = _container_cells(view)
    return [
        view.name, view.number("spec", "replicas", default=1), view.number("status", "replicas"),
        view.number("status", "readyReplicas"), view.age(now),
        names, images, format_label_selector(view.get("spec", "selector")),
    ]


def _print_daemon_set(view: _View, now: datetime) -> list:
    names, images = _container_cells(view)
    status = _View(view.mapping("status"))
    return [
        view.name, status.number("desiredNumberScheduled"), status.number("currentNumberScheduled"),
        status.number("numberReady"), status.number("updatedNumberScheduled"),
        status.number("numberAvailable"),
        format_labels(view.get("spec", "template", "spec", "nodeSelector")), view.age(now),
        names, images, format_label_selector(view.get("spec", "selector")),
    ]


def _print_lease(view: _View, now: datetime) -> list:
    return [view.name, view.text("spec", "holderIdentity"), view.age(now)]


def _print_endpoint_slice(view: _View, now: datetime) -> list:
    ports = []
    for port in view.objects("ports"):
        number = port.get("port")
        ports.append(str(number) if number is not None else str(port.get("name") or "*"))
    addresses: list[str] = []
    for endpoint in view.objects("endpoints"):
        values = endpoint.get("addresses")
        if isinstance(values, list):
            addresses.extend(str(a) for a in values if a is not None)
    return [
        view.name, view.text("addressType"),
        _with_more(ports, len(ports)) or "<unset>",
        _with_more(addresses, len(addresses)) or "<unset>",
        view.age(now),
    ]


_PRINTERS: dict[tuple[str, str], Callable[[_View, datetime], list]] = {
    ("", "Pod"): _print_pod,
    ("", "Node"): _print_node,
    ("", "Namespace"): _print_namespace,
    ("", "Service"): _print_service,
    ("", "Endpoints"): _print_endpoints,
    ("", "ConfigMap"): _print_config_map,
    ("", "Secret"): _print_secret,
    ("", "ServiceAccount"): _print_service_account,
    ("", "Event"): _print_event,
    ("apps", "Deployment"): _print_deployment,
    ("apps", "ReplicaSet"): _print_replica_set,
    ("apps", "DaemonSet"): _print_daemon_set,
    ("coordination.k8s.io", "Lease"): _print_lease,
    ("discovery.k8s.io", "EndpointSlice"): _print_endpoint_slice,
}
