"""Server-side Tables: columns as the apiserver declares them, cells as kubectl shows them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from minikube_py.api.resources import RESOURCES, lookup
from minikube_py.api.tables import (
    column_definitions,
    format_label_selector,
    human_duration,
    parse_time,
    row_cells,
)

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)

POD = lookup("", "v1", "pods")
NODE = lookup("", "v1", "nodes")
NAMESPACE = lookup("", "v1", "namespaces")
SERVICE = lookup("", "v1", "services")
ENDPOINTS = lookup("", "v1", "endpoints")
CONFIGMAP = lookup("", "v1", "configmaps")
SECRET = lookup("", "v1", "secrets")
SERVICEACCOUNT = lookup("", "v1", "serviceaccounts")
EVENT = lookup("", "v1", "events")
DEPLOYMENT = lookup("apps", "v1", "deployments")
REPLICASET = lookup("apps", "v1", "replicasets")
DAEMONSET = lookup("apps", "v1", "daemonsets")
LEASE = lookup("coordination.k8s.io", "v1", "leases")
SLICE = lookup("discovery.k8s.io", "v1", "endpointslices")


def ago(**delta) -> str:
    return (NOW - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def meta(name: str = "web", age: str | None = None, **extra) -> dict:
    return {"name": name, "namespace": "default", "creationTimestamp": age or ago(minutes=5), **extra}


def headers(info, wide: bool = False) -> list[str]:
    return [c["name"].upper() for c in column_definitions(info) if wide or c["priority"] == 0]


# -- age --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds,text", [
    (-5, "<invalid>"), (-1, "0s"), (-0.5, "0s"), (0, "0s"), (5, "5s"), (119, "119s"), (120, "2m"),
    (182, "3m2s"), (599, "9m59s"), (600, "10m"), (179 * 60 + 59, "179m"), (3 * 3600, "3h"),
    (3 * 3600 + 25 * 60, "3h25m"), (8 * 3600, "8h"), (47 * 3600, "47h"), (48 * 3600, "2d"),
    (2 * 86400 + 5 * 3600, "2d5h"), (8 * 86400, "8d"), (400 * 86400, "400d"), (2 * 365 * 86400, "2y"),
    (3 * 365 * 86400 + 10 * 86400, "3y10d"), (9 * 365 * 86400, "9y"),
])
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


def test_parse_time():
    assert parse_time("2025-06-01T11:55:00Z") == NOW - timedelta(minutes=5)
    assert parse_time("2025-06-01T11:55:00.123456789Z") == NOW - timedelta(minutes=5) + timedelta(
        microseconds=123456)
    assert parse_time("2025-06-01T13:55:00+02:00") == NOW - timedelta(minutes=5)
    assert parse_time("yesterday") is None
    assert parse_time(None) is None


def test_missing_creation_timestamp_is_unknown():
    obj = {"metadata": {"name": "cfg"}, "data": {}}
    assert row_cells(CONFIGMAP, obj, NOW) == ["cfg", 0, "<unknown>"]


def test_naive_now_is_taken_as_utc():
    obj = {"metadata": meta("cfg", ago(seconds=42))}
    assert row_cells(CONFIGMAP, obj, NOW.replace(tzinfo=None))[-1] == "42s"


# -- columns ----------------------------------------------------------------------------------


@pytest.mark.parametrize("info,normal,wide", [
    (POD, "NAME READY STATUS RESTARTS AGE", "IP NODE NOMINATED NODE READINESS GATES"),
    (NODE, "NAME STATUS ROLES AGE VERSION",
     "INTERNAL-IP EXTERNAL-IP OS-IMAGE KERNEL-VERSION CONTAINER-RUNTIME"),
    (NAMESPACE, "NAME STATUS AGE", ""),
    (DEPLOYMENT, "NAME READY UP-TO-DATE AVAILABLE AGE", "CONTAINERS IMAGES SELECTOR"),
    (REPLICASET, "NAME DESIRED CURRENT READY AGE", "CONTAINERS IMAGES SELECTOR"),
    (DAEMONSET, "NAME DESIRED CURRENT READY UP-TO-DATE AVAILABLE NODE SELECTOR AGE",
     "CONTAINERS IMAGES SELECTOR"),
    (SERVICE, "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE", "SELECTOR"),
    (ENDPOINTS, "NAME ENDPOINTS AGE", ""),
    (CONFIGMAP, "NAME DATA AGE", ""),
    (SECRET, "NAME TYPE DATA AGE", ""),
    (SERVICEACCOUNT, "NAME SECRETS AGE", ""),
    (EVENT, "LAST SEEN TYPE REASON OBJECT MESSAGE", "SUBOBJECT SOURCE FIRST SEEN COUNT NAME"),
    (LEASE, "NAME HOLDER AGE", ""),
    (SLICE, "NAME ADDRESSTYPE PORTS ENDPOINTS AGE", ""),
])
def test_columns(info, normal, wide):
    assert " ".join(headers(info)) == normal
    extra = [c for c in headers(info, wide=True) if c not in headers(info)]
    assert " ".join(extra) == wide


@pytest.mark.parametrize("info", RESOURCES, ids=lambda r: r.kind)
def test_column_definition_shape(info):
    columns = column_definitions(info)
    for column in columns:
        assert set(column) == {"name", "type", "format", "description", "priority"}
        assert column["type"] in ("string", "integer", "date")
        assert column["priority"] in (0, 1)
        assert column["description"]
    names = [c for c in columns if c["format"] == "name"]
    assert len(names) == 1 and names[0]["name"] == "Name"
    # Every printer fills exactly one cell per column, even for a nearly empty object.
    assert len(row_cells(info, {"metadata": {"name": "x"}}, NOW)) == len(columns)


def test_columns_are_copies():
    column_definitions(POD)[0]["name"] = "Changed"
    assert column_definitions(POD)[0]["name"] == "Name"


def test_column_types_match_the_apiserver():
    types = {c["name"]: c["type"] for c in column_definitions(REPLICASET)}
    assert types == {"Name": "string", "Desired": "integer", "Current": "integer", "Ready": "integer",
                     "Age": "string", "Containers": "string", "Images": "string", "Selector": "string"}
    assert {c["name"]: c["type"] for c in column_definitions(POD)}["Restarts"] == "string"


# -- pods -------------------------------------------------------------------------------------


def running_pod(**status) -> dict:
    return {
        "metadata": meta("web-7d4b9c-xk2lp", ago(hours=2)),
        "spec": {"nodeName": "worker-1", "containers": [{"name": "app", "image": "nginx"},
                                                        {"name": "sidecar", "image": "busybox"}]},
        "status": {
            "phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}],
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}],
            "containerStatuses": [
                {"name": "app", "ready": True, "restartCount": 0, "state": {"running": {}}},
                {"name": "sidecar", "ready": True, "restartCount": 0, "state": {"running": {}}},
            ],
            **status,
        },
    }


def test_running_pod():
    assert row_cells(POD, running_pod(), NOW) == [
        "web-7d4b9c-xk2lp", "2/2", "Running", "0", "120m", "10.244.1.5", "worker-1", "<none>", "<none>"]


def test_pending_pod():
    pod = {"metadata": meta("web", ago(seconds=3)),
           "spec": {"containers": [{"name": "app", "image": "nginx"}]},
           "status": {"phase": "Pending"}}
    assert row_cells(POD, pod, NOW) == [
        "web", "0/1", "Pending", "0", "3s", "<none>", "<none>", "<none>", "<none>"]


def test_container_creating_pod():
    pod = running_pod(phase="Pending", containerStatuses=[
        {"name": "app", "ready": False, "restartCount": 0,
         "state": {"waiting": {"reason": "ContainerCreating"}}},
        {"name": "sidecar", "ready": False, "restartCount": 0,
         "state": {"waiting": {"reason": "ContainerCreating"}}},
    ])
    assert row_cells(POD, pod, NOW)[1:3] == ["0/2", "ContainerCreating"]


def test_crash_loop_with_restart_age():
    pod = running_pod(containerStatuses=[
        {"name": "app", "ready": False, "restartCount": 3,
         "state": {"waiting": {"reason": "CrashLoopBackOff"}},
         "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(minutes=2)}}},
        {"name": "sidecar", "ready": True, "restartCount": 1, "state": {"running": {}},
         "lastState": {"terminated": {"exitCode": 137, "finishedAt": ago(minutes=30)}}},
    ])
    ready, status, restarts = row_cells(POD, pod, NOW)[1:4]
    assert (ready, status, restarts) == ("1/2", "CrashLoopBackOff", "4 (2m ago)")


def test_completed_pod():
    pod = running_pod(phase="Succeeded", containerStatuses=[
        {"name": "app", "ready": False, "restartCount": 0,
         "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        {"name": "sidecar", "ready": False, "restartCount": 0,
         "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
    ])
    assert row_cells(POD, pod, NOW)[1:3] == ["0/2", "Completed"]


def test_exit_code_and_signal_without_reason():
    pod = running_pod(phase="Failed", containerStatuses=[
        {"name": "app", "ready": False, "state": {"terminated": {"exitCode": 2}}},
        {"name": "sidecar", "ready": False, "state": {"terminated": {"exitCode": 137, "signal": 9}}},
    ])
    # The first container is examined last, as in the apiserver's loop.
    assert row_cells(POD, pod, NOW)[2] == "ExitCode:2"


def test_one_container_completed_one_running():
    pod = running_pod(containerStatuses=[
        {"name": "app", "ready": True, "state": {"running": {}}},
        {"name": "sidecar", "ready": False, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
    ])
    assert row_cells(POD, pod, NOW)[1:3] == ["1/2", "Running"]
    pod["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    assert row_cells(POD, pod, NOW)[2] == "NotReady"


def test_terminating_pod():
    pod = running_pod()
    pod["metadata"]["deletionTimestamp"] = ago(seconds=5)
    assert row_cells(POD, pod, NOW)[2] == "Terminating"
    pod["status"]["reason"] = "NodeLost"
    assert row_cells(POD, pod, NOW)[2] == "Unknown"
    done = running_pod(phase="Succeeded", containerStatuses=[])
    done["metadata"]["deletionTimestamp"] = ago(seconds=5)
    assert row_cells(POD, done, NOW)[2] == "Succeeded"


def test_status_reason_wins_over_phase():
    pod = {"metadata": meta(), "spec": {"containers": [{"name": "a", "image": "x"}]},
           "status": {"phase": "Failed", "reason": "Evicted"}}
    assert row_cells(POD, pod, NOW)[2] == "Evicted"


def init_pod(*init_statuses, initialized: bool = False) -> dict:
    pod = running_pod(phase="Pending", containerStatuses=[
        {"name": "app", "ready": False, "state": {"waiting": {"reason": "PodInitializing"}}},
        {"name": "sidecar", "ready": False, "state": {"waiting": {"reason": "PodInitializing"}}},
    ], initContainerStatuses=list(init_statuses),
        conditions=[{"type": "Initialized", "status": "True" if initialized else "False"}])
    pod["spec"]["initContainers"] = [{"name": "migrate", "image": "x"}, {"name": "warm", "image": "y"}]
    return pod


def test_init_container_progress():
    pod = init_pod({"name": "migrate", "state": {"terminated": {"exitCode": 0}}},
                   {"name": "warm", "state": {"running": {}}})
    assert row_cells(POD, pod, NOW)[1:3] == ["0/2", "Init:1/2"]


def test_init_container_failures():
    crash = init_pod({"name": "migrate", "restartCount": 2,
                      "state": {"waiting": {"reason": "CrashLoopBackOff"}}})
    assert row_cells(POD, crash, NOW)[2:4] == ["Init:CrashLoopBackOff", "2"]
    failed = init_pod({"name": "migrate", "state": {"terminated": {"exitCode": 3}}})
    assert row_cells(POD, failed, NOW)[2] == "Init:ExitCode:3"
    killed = init_pod({"name": "migrate", "state": {"terminated": {"exitCode": 137, "signal": 9}}})
    assert row_cells(POD, killed, NOW)[2] == "Init:Signal:9"
    errored = init_pod({"name": "migrate", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}})
    assert row_cells(POD, errored, NOW)[2] == "Init:Error"


def test_init_done_then_main_containers_decide():
    pod = init_pod({"name": "migrate", "state": {"terminated": {"exitCode": 0}}},
                   {"name": "warm", "state": {"terminated": {"exitCode": 0}}}, initialized=True)
    assert row_cells(POD, pod, NOW)[2] == "PodInitializing"


def test_sidecar_counts_as_a_container():
    pod = running_pod(initContainerStatuses=[
        {"name": "proxy", "ready": True, "started": True, "restartCount": 1, "state": {"running": {}}}])
    pod["spec"]["initContainers"] = [{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}]
    assert row_cells(POD, pod, NOW)[1:4] == ["3/3", "Running", "1"]


def test_pod_wide_cells():
    pod = running_pod(nominatedNodeName="worker-2",
                      conditions=[{"type": "Ready", "status": "True"},
                                  {"type": "example.com/lb", "status": "True"}])
    pod["spec"]["readinessGates"] = [{"conditionType": "example.com/lb"},
                                     {"conditionType": "example.com/dns"}]
    assert row_cells(POD, pod, NOW)[5:] == ["10.244.1.5", "worker-1", "worker-2", "1/2"]
    pod["status"].pop("podIPs")
    assert row_cells(POD, pod, NOW)[5] == "10.244.1.5"  # podIP alone is enough


# -- nodes and namespaces ---------------------------------------------------------------------


def node(**extra) -> dict:
    obj = {
        "metadata": {"name": "master-1", "creationTimestamp": ago(days=3, hours=4),
                     "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/hostname": "m"}},
        "spec": {},
        "status": {
            "conditions": [{"type": "MemoryPressure", "status": "False"},
                           {"type": "Ready", "status": "True"}],
            "addresses": [{"type": "Hostname", "address": "master-1"},
                          {"type": "InternalIP", "address": "10.0.0.10"}],
            "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
                         "kernelVersion": "6.1.0-18-amd64", "containerRuntimeVersion": "minikube-py://0.1.0"},
        },
    }
    obj.update(extra)
    return obj


def test_ready_node():
    assert row_cells(NODE, node(), NOW) == [
        "master-1", "Ready", "control-plane", "3d4h", "v1.33.0", "10.0.0.10", "<none>",
        "Debian GNU/Linux 12 (bookworm)", "6.1.0-18-amd64", "minikube-py://0.1.0"]


def test_node_status_variants():
    cordoned = node(spec={"unschedulable": True})
    assert row_cells(NODE, cordoned, NOW)[1] == "Ready,SchedulingDisabled"
    unknown = node()
    unknown["status"]["conditions"][1]["status"] = "Unknown"
    assert row_cells(NODE, unknown, NOW)[1] == "NotReady"
    fresh = node(status={})
    assert row_cells(NODE, fresh, NOW)[1:] == ["Unknown", "control-plane", "3d4h", "", "<none>", "<none>",
                                               "<unknown>", "<unknown>", "<unknown>"]


def test_node_roles():
    obj = node()
    obj["metadata"]["labels"] = {"node-role.kubernetes.io/worker": "", "node-role.kubernetes.io/gpu": "true",
                                 "kubernetes.io/role": "edge", "node-role.kubernetes.io/": ""}
    assert row_cells(NODE, obj, NOW)[2] == "edge,gpu,worker"
    obj["metadata"]["labels"] = {}
    assert row_cells(NODE, obj, NOW)[2] == "<none>"


def test_namespace():
    ns = {"metadata": {"name": "kube-system", "creationTimestamp": ago(days=20)},
          "status": {"phase": "Active"}}
    assert row_cells(NAMESPACE, ns, NOW) == ["kube-system", "Active", "20d"]


# -- workloads --------------------------------------------------------------------------------

TEMPLATE = {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"},
                                    {"name": "log", "image": "busybox"}]}}


def test_deployment():
    obj = {"metadata": meta("web", ago(minutes=7)),
           "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": TEMPLATE},
           "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
    assert row_cells(DEPLOYMENT, obj, NOW) == ["web", "2/3", 3, 2, "7m", "nginx,log", "nginx:1.25,busybox",
                                               "app=web"]
    obj.pop("status")
    assert row_cells(DEPLOYMENT, obj, NOW)[1:4] == ["0/3", 0, 0]


def test_replica_set():
    obj = {"metadata": meta("web-7d4b9c", ago(minutes=7)),
           "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "7d4b9c"}},
                    "template": TEMPLATE},
           "status": {"replicas": 3, "readyReplicas": 1}}
    assert row_cells(REPLICASET, obj, NOW) == ["web-7d4b9c", 3, 3, 1, "7m", "nginx,log", "nginx:1.25,busybox",
                                               "app=web,pod-template-hash=7d4b9c"]


def test_daemon_set():
    template = {**TEMPLATE, "spec": {**TEMPLATE["spec"], "nodeSelector": {"kubernetes.io/os": "linux"}}}
    obj = {"metadata": meta("proxy", ago(hours=30)),
           "spec": {"selector": {"matchLabels": {"k8s-app": "proxy"}}, "template": template},
           "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                      "updatedNumberScheduled": 3, "numberAvailable": 2}}
    assert row_cells(DAEMONSET, obj, NOW) == ["proxy", 3, 3, 2, 3, 2, "kubernetes.io/os=linux", "30h",
                                              "nginx,log", "nginx:1.25,busybox", "k8s-app=proxy"]


def test_label_selector_format():
    selector = {"matchLabels": {"b": "2", "a": "1"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]},
                                     {"key": "env", "operator": "NotIn", "values": ["dev"]},
                                     {"key": "gpu", "operator": "Exists"},
                                     {"key": "old", "operator": "DoesNotExist"}]}
    assert format_label_selector(selector) == "a=1,b=2,env notin (dev),gpu,!old,tier in (be,fe)"
    assert format_label_selector({}) == "<none>"
    assert format_label_selector(None) == "<none>"
    assert format_label_selector({"matchExpressions": [{"key": "x", "operator": "Near"}]}) == "<error>"


# -- services and endpoints -------------------------------------------------------------------


def svc(**spec) -> dict:
    return {"metadata": meta("web", ago(days=1, hours=2)),
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.15", "clusterIPs": ["10.96.0.15"],
                     "selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}], **spec}}


def test_cluster_ip_service():
    assert row_cells(SERVICE, svc(), NOW) == ["web", "ClusterIP", "10.96.0.15", "<none>", "80/TCP", "26h",
                                              "app=web"]


def test_node_port_service():
    obj = svc(type="NodePort", ports=[{"port": 80, "nodePort": 30080, "protocol": "TCP"},
                                      {"port": 53, "nodePort": 30053, "protocol": "UDP"}],
              externalIPs=["192.168.1.10"])
    assert row_cells(SERVICE, obj, NOW)[2:5] == ["10.96.0.15", "192.168.1.10", "80:30080/TCP,53:30053/UDP"]


def test_load_balancer_and_external_name_services():
    pending = svc(type="LoadBalancer", ports=[{"port": 443, "nodePort": 31443, "protocol": "TCP"}])
    assert row_cells(SERVICE, pending, NOW)[3] == "<pending>"
    pending["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.example.com"}]}}
    assert row_cells(SERVICE, pending, NOW)[3] == "203.0.113.9,lb.example.com"
    external = {"metadata": meta("db"), "spec": {"type": "ExternalName", "externalName": "db.example.com"}}
    assert row_cells(SERVICE, external, NOW)[1:5] == ["ExternalName", "<none>", "db.example.com", "<none>"]


def test_headless_service_without_selector():
    obj = svc(clusterIP="None", clusterIPs=["None"], selector=None, ports=[])
    assert row_cells(SERVICE, obj, NOW)[2:] == ["None", "<none>", "<none>", "26h", "<none>"]


def test_endpoints():
    obj = {"metadata": meta(), "subsets": [{"addresses": [{"ip": "10.244.1.5"}, {"ip": "10.244.2.3"}],
                                           "ports": [{"port": 80}]}]}
    assert row_cells(ENDPOINTS, obj, NOW) == ["web", "10.244.1.5:80,10.244.2.3:80", "5m"]
    assert row_cells(ENDPOINTS, {"metadata": meta()}, NOW)[1] == "<none>"
    many = {"metadata": meta(), "subsets": [{"addresses": [{"ip": f"10.244.{i}.5"} for i in range(1, 6)],
                                            "ports": [{"port": 80}, {"port": 443}]}]}
    assert row_cells(ENDPOINTS, many, NOW)[1] == "10.244.1.5:80,10.244.2.5:80,10.244.3.5:80 + 7 more..."
    headless = {"metadata": meta(), "subsets": [{"addresses": [{"ip": "fd00::5"}], "ports": []}]}
    assert row_cells(ENDPOINTS, headless, NOW)[1] == "fd00::5"
    v6 = {"metadata": meta(), "subsets": [{"addresses": [{"ip": "fd00::5"}], "ports": [{"port": 80}]}]}
    assert row_cells(ENDPOINTS, v6, NOW)[1] == "[fd00::5]:80"


def test_endpoint_slice():
    obj = {"metadata": meta("web-x7k2p"), "addressType": "IPv4",
           "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
           "endpoints": [{"addresses": [f"10.244.{i}.5"]} for i in range(1, 5)]}
    assert row_cells(SLICE, obj, NOW) == [
        "web-x7k2p", "IPv4", "80", "10.244.1.5,10.244.2.5,10.244.3.5 + 1 more...", "5m"]
    empty = {"metadata": meta("web-empty"), "addressType": "IPv4"}
    assert row_cells(SLICE, empty, NOW)[2:4] == ["<unset>", "<unset>"]


# -- configuration and the rest ---------------------------------------------------------------


def test_config_map_secret_service_account_lease():
    cm = {"metadata": meta("cfg"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}
    assert row_cells(CONFIGMAP, cm, NOW) == ["cfg", 3, "5m"]
    secret = {"metadata": meta("tls"), "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}
    assert row_cells(SECRET, secret, NOW) == ["tls", "kubernetes.io/tls", 2, "5m"]
    sa = {"metadata": meta("default")}
    assert row_cells(SERVICEACCOUNT, sa, NOW) == ["default", 0, "5m"]
    lease = {"metadata": meta("kube-scheduler"), "spec": {"holderIdentity": "master-1_3f2a"}}
    assert row_cells(LEASE, lease, NOW) == ["kube-scheduler", "master-1_3f2a", "5m"]


def test_event():
    event = {"metadata": meta("web.17d3"), "type": "Warning", "reason": "BackOff", "count": 5,
             "message": "Back-off restarting failed container\n",
             "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default",
                                "fieldPath": "spec.containers{app}"},
             "source": {"component": "kubelet", "host": "worker-1"},
             "firstTimestamp": ago(minutes=10), "lastTimestamp": ago(seconds=30)}
    assert row_cells(EVENT, event, NOW) == [
        "30s", "Warning", "BackOff", "pod/web", "spec.containers{app}", "kubelet, worker-1",
        "Back-off restarting failed container", "10m", 5, "web.17d3"]


def test_new_style_event():
    event = {"metadata": meta("n.1"), "type": "Normal", "reason": "Starting",
             "eventTime": "2025-06-01T11:59:00.000000Z",
             "reportingController": "kube-proxy", "involvedObject": {"kind": "Node", "name": ""},
             "series": {"count": 4, "lastObservedTime": "2025-06-01T11:59:50.500000Z"}}
    cells = row_cells(EVENT, event, NOW)
    assert cells[0] == "9s"  # the series' last observation
    assert cells[3] == "node"
    assert cells[5] == "kube-proxy"
    assert cells[7:9] == ["60s", 4]
    single = {"metadata": meta("n.2"), "eventTime": "2025-06-01T11:59:00.000000Z", "involvedObject": {}}
    assert row_cells(EVENT, single, NOW)[0] == "60s"
    assert row_cells(EVENT, single, NOW)[8] == 1


def test_garbage_does_not_raise():
    junk = {"metadata": {"name": 5, "creationTimestamp": 12}, "spec": "x", "status": ["y"],
            "subsets": "z", "data": [1], "involvedObject": None}
    for info in RESOURCES:
        cells = row_cells(info, junk, NOW)
        assert len(cells) == len(column_definitions(info))
    with pytest.raises(TypeError):
        row_cells(POD, "not an object", NOW)  # type: ignore[arg-type]
