"""Defaulting: each SetDefaults_* rule, and that nothing the user wrote is overwritten."""

from __future__ import annotations

import base64
import copy

import pytest

from minikube_py.api.defaults import apply_defaults, image_pull_policy
from minikube_py.api.resources import lookup

POD = lookup("", "v1", "pods")
SERVICE = lookup("", "v1", "services")
SECRET = lookup("", "v1", "secrets")
NAMESPACE = lookup("", "v1", "namespaces")
NODE = lookup("", "v1", "nodes")
ENDPOINTS = lookup("", "v1", "endpoints")
CONFIGMAP = lookup("", "v1", "configmaps")
DEPLOYMENT = lookup("apps", "v1", "deployments")
REPLICASET = lookup("apps", "v1", "replicasets")
DAEMONSET = lookup("apps", "v1", "daemonsets")
SLICE = lookup("discovery.k8s.io", "v1", "endpointslices")


def pod(**spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}], **spec}}


def defaulted(info, obj: dict) -> dict:
    apply_defaults(info, obj)
    return obj


def test_pod_spec_defaults():
    spec = defaulted(POD, pod())["spec"]
    assert spec["restartPolicy"] == "Always"
    assert spec["dnsPolicy"] == "ClusterFirst"
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["schedulerName"] == "default-scheduler"
    assert spec["securityContext"] == {}
    assert spec["enableServiceLinks"] is True
    assert spec["priority"] == 0
    assert spec["preemptionPolicy"] == "PreemptLowerPriority"


def test_pod_priority_from_builtin_class():
    assert defaulted(POD, pod(priorityClassName="system-node-critical"))["spec"]["priority"] == 2000001000
    assert defaulted(POD, pod(priority=7))["spec"]["priority"] == 7


def test_container_defaults():
    container = defaulted(POD, pod())["spec"]["containers"][0]
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "File"
    assert container["resources"] == {}


@pytest.mark.parametrize("image,policy", [
    ("nginx", "Always"),
    ("nginx:latest", "Always"),
    ("nginx:1.25", "IfNotPresent"),
    ("registry.local:5000/team/app", "Always"),
    ("registry.local:5000/team/app:v2", "IfNotPresent"),
    ("nginx@sha256:" + "a" * 64, "IfNotPresent"),
    ("nginx:latest@sha256:" + "a" * 64, "Always"),
])
def test_image_pull_policy_follows_the_tag(image, policy):
    assert image_pull_policy(image) == policy


def test_user_values_are_kept():
    obj = pod(restartPolicy="Never", terminationGracePeriodSeconds=5, dnsPolicy="Default")
    obj["spec"]["containers"][0]["imagePullPolicy"] = "Never"
    spec = defaulted(POD, obj)["spec"]
    kept = (spec["restartPolicy"], spec["terminationGracePeriodSeconds"], spec["dnsPolicy"])
    assert kept == ("Never", 5, "Default")
    assert spec["containers"][0]["imagePullPolicy"] == "Never"


def test_init_containers_ports_probes_and_env():
    obj = pod(initContainers=[{"name": "init", "image": "busybox"}])
    container = obj["spec"]["containers"][0]
    container["ports"] = [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}]
    container["livenessProbe"] = {"httpGet": {"port": 80}}
    container["readinessProbe"] = {"tcpSocket": {"port": 80}, "periodSeconds": 3}
    container["env"] = [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {"name": "PLAIN", "value": "x"}]
    spec = defaulted(POD, obj)["spec"]
    assert spec["initContainers"][0]["imagePullPolicy"] == "Always"
    assert spec["initContainers"][0]["terminationMessagePolicy"] == "File"
    ports = spec["containers"][0]["ports"]
    assert [p["protocol"] for p in ports] == ["TCP", "UDP"]
    assert "hostPort" not in ports[0]
    liveness = spec["containers"][0]["livenessProbe"]
    assert liveness == {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
                        "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}
    assert spec["containers"][0]["readinessProbe"]["periodSeconds"] == 3
    assert spec["containers"][0]["env"][0]["valueFrom"]["fieldRef"] == {"fieldPath": "spec.nodeName",
                                                                      "apiVersion": "v1"}
    assert spec["containers"][0]["env"][1] == {"name": "PLAIN", "value": "x"}


def test_host_network_ports_get_host_ports():
    obj = pod(hostNetwork=True)
    obj["spec"]["containers"][0]["ports"] = [{"containerPort": 8080}]
    assert defaulted(POD, obj)["spec"]["containers"][0]["ports"][0]["hostPort"] == 8080


def test_limits_default_requests():
    obj = pod()
    obj["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "500m", "memory": "128Mi"},
                                                  "requests": {"cpu": "100m"}}
    resources = defaulted(POD, obj)["spec"]["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "100m", "memory": "128Mi"}


def test_volumes():
    obj = pod(volumes=[{"name": "scratch"}, {"name": "cfg", "configMap": {"name": "c"}},
                       {"name": "tok", "secret": {"secretName": "s", "defaultMode": 256}},
                       {"name": "host", "hostPath": {"path": "/var/log"}}])
    volumes = defaulted(POD, obj)["spec"]["volumes"]
    assert volumes[0] == {"name": "scratch", "emptyDir": {}}
    assert volumes[1]["configMap"] == {"name": "c", "defaultMode": 420}
    assert volumes[2]["secret"]["defaultMode"] == 256
    assert volumes[3]["hostPath"] == {"path": "/var/log", "type": ""}


def test_missing_spec_is_created_and_bad_types_left_for_validation():
    obj = {"metadata": {"name": "x"}}
    assert defaulted(POD, obj)["spec"]["restartPolicy"] == "Always"
    bad = {"metadata": {"name": "x"}, "spec": "nonsense"}
    assert defaulted(POD, bad)["spec"] == "nonsense"
    with pytest.raises(TypeError):
        apply_defaults(POD, ["not", "an", "object"])  # type: ignore[arg-type]


def deployment(**spec) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "app", "image": "nginx"}]}}, **spec}}


def test_deployment_defaults():
    spec = defaulted(DEPLOYMENT, deployment())["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    assert spec["revisionHistoryLimit"] == 10
    assert spec["progressDeadlineSeconds"] == 600
    template_spec = spec["template"]["spec"]
    assert template_spec["restartPolicy"] == "Always"
    assert template_spec["containers"][0]["imagePullPolicy"] == "Always"
    # Priority comes from admission, which only sees pods.
    assert "priority" not in template_spec


def test_deployment_recreate_gets_no_rolling_update():
    spec = defaulted(DEPLOYMENT, deployment(replicas=0, strategy={"type": "Recreate"}))["spec"]
    assert spec["strategy"] == {"type": "Recreate"}
    assert spec["replicas"] == 0


def test_replica_set_and_daemon_set_defaults():
    rs = defaulted(REPLICASET, deployment())["spec"]
    assert rs["replicas"] == 1
    assert rs["template"]["spec"]["dnsPolicy"] == "ClusterFirst"
    ds = defaulted(DAEMONSET, deployment())["spec"]
    assert ds["updateStrategy"] == {"type": "RollingUpdate",
                                    "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
    assert ds["revisionHistoryLimit"] == 10
    assert "replicas" not in ds
    assert ds["template"]["spec"]["schedulerName"] == "default-scheduler"


def test_service_defaults():
    svc = {"metadata": {"name": "web", "namespace": "default"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}, {"port": 53, "protocol": "UDP",
                                                                         "targetPort": "dns"}]}}
    spec = defaulted(SERVICE, svc)["spec"]
    assert spec["type"] == "ClusterIP"
    assert spec["sessionAffinity"] == "None"
    assert spec["ports"][0] == {"port": 80, "protocol": "TCP", "targetPort": 80}
    assert spec["ports"][1]["targetPort"] == "dns"
    assert spec["ipFamilies"] == ["IPv4"]
    assert spec["ipFamilyPolicy"] == "SingleStack"
    assert spec["internalTrafficPolicy"] == "Cluster"
    assert "externalTrafficPolicy" not in spec
    assert "clusterIP" not in spec  # allocation is the server's


@pytest.mark.parametrize("service_type", ["NodePort", "LoadBalancer"])
def test_node_port_services_get_external_traffic_policy(service_type):
    spec = defaulted(SERVICE, {"spec": {"type": service_type, "ports": [{"port": 80}]}})["spec"]
    assert spec["externalTrafficPolicy"] == "Cluster"
    assert "nodePort" not in spec["ports"][0]


def test_external_name_service_has_no_ip_families():
    spec = defaulted(SERVICE, {"spec": {"type": "ExternalName", "externalName": "example.com"}})["spec"]
    assert "ipFamilies" not in spec and "internalTrafficPolicy" not in spec


def test_client_ip_affinity_timeout():
    spec = defaulted(SERVICE, {"spec": {"sessionAffinity": "ClientIP", "ports": [{"port": 80}]}})["spec"]
    assert spec["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}


def test_secret_type_and_string_data():
    secret = defaulted(SECRET, {"metadata": {"name": "s"}, "data": {"a": "eA=="},
                                "stringData": {"b": "hello"}})
    assert secret["type"] == "Opaque"
    assert secret["data"] == {"a": "eA==", "b": base64.b64encode(b"hello").decode()}
    assert "stringData" not in secret
    typed = defaulted(SECRET, {"type": "kubernetes.io/tls"})
    assert typed["type"] == "kubernetes.io/tls"


def test_namespace_defaults():
    ns = defaulted(NAMESPACE, {"metadata": {"name": "team-a"}})
    assert ns["spec"]["finalizers"] == ["kubernetes"]
    assert ns["status"]["phase"] == "Active"
    assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": "team-a"}


def test_node_allocatable_defaults_to_capacity():
    node = defaulted(NODE, {"metadata": {"name": "n1"}, "status": {"capacity": {"cpu": "2", "pods": "110"}}})
    assert node["status"]["allocatable"] == {"cpu": "2", "pods": "110"}
    assert defaulted(NODE, {"metadata": {"name": "n2"}}) == {"metadata": {"name": "n2"}}


def test_endpoint_ports_default_protocol():
    ep = defaulted(ENDPOINTS, {"subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]})
    assert ep["subsets"][0]["ports"][0]["protocol"] == "TCP"
    eps = defaulted(SLICE, {"addressType": "IPv4", "ports": [{"port": 80}]})
    assert eps["ports"][0] == {"port": 80, "name": "", "protocol": "TCP"}


def test_kinds_without_defaults_are_untouched():
    cm = {"metadata": {"name": "c"}, "data": {"k": "v"}}
    assert defaulted(CONFIGMAP, copy.deepcopy(cm)) == cm


def test_defaulting_twice_changes_nothing():
    once = defaulted(DEPLOYMENT, deployment())
    twice = defaulted(DEPLOYMENT, copy.deepcopy(once))
    assert once == twice
