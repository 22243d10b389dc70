"""The schema definitions built from the kubernetes client's models, and unknown-field detection."""

from __future__ import annotations

import copy
import re

import pytest

from minikube_py.api import schema
from minikube_py.api.resources import RESOURCES, by_kind

CORE = "io.k8s.api.core.v1"
META = "io.k8s.apimachinery.pkg.apis.meta.v1"


@pytest.fixture(scope="module")
def defs() -> dict[str, dict]:
    return schema.definitions()


def _ref_of(prop: dict) -> str:
    ref = prop.get("$ref") or prop["allOf"][0]["$ref"]
    assert ref.startswith(schema.REF_PREFIX)
    return ref[len(schema.REF_PREFIX):]


def _walk(node):
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_definitions_are_built_once_and_shared() -> None:
    assert schema.definitions() is schema.definitions()


@pytest.mark.parametrize("info", RESOURCES, ids=lambda r: r.qualified)
def test_every_served_kind_and_its_list_carry_their_group_version_kind(defs, info) -> None:
    kind = defs[schema.definition_name(info)]
    assert kind["x-kubernetes-group-version-kind"] == [
        {"group": info.group, "version": info.version, "kind": info.kind}]
    assert {"apiVersion", "kind", "metadata"} <= set(kind["properties"])
    listed = defs[schema.list_definition_name(info)]
    assert listed["x-kubernetes-group-version-kind"][0]["kind"] == info.list_kind
    assert _ref_of(listed["properties"]["metadata"]) == f"{META}.ListMeta"


def test_definition_names_follow_the_apiserver(defs) -> None:
    assert schema.definition_name(by_kind("apps/v1", "Deployment")) == "io.k8s.api.apps.v1.Deployment"
    lease = by_kind("coordination.k8s.io/v1", "Lease")
    assert schema.definition_name(lease) == "io.k8s.api.coordination.v1.Lease"
    for name in (f"{CORE}.Event", f"{CORE}.EndpointPort", "io.k8s.api.discovery.v1.EndpointPort",
                 f"{CORE}.PodTemplateSpec", "io.k8s.api.apps.v1.RollingUpdateDeployment",
                 f"{META}.ObjectMeta", f"{META}.LabelSelector", "io.k8s.api.autoscaling.v1.Scale",
                 schema.QUANTITY, schema.INT_OR_STRING, schema.TIME, schema.MICRO_TIME):
        assert name in defs, name
    # Client-model spellings must not leak into the names.
    leaked = [n for n in defs if re.match(r"([A-Z][a-z]+)?V\d+[A-Z]", n.rsplit(".", 1)[1])]
    assert not leaked and all(n.startswith("io.k8s.") for n in defs)


def test_every_reference_resolves(defs) -> None:
    for name, definition in defs.items():
        for target in schema.references(definition):
            assert target in defs, f"{name} refers to missing {target}"


def test_no_pydantic_artifacts_remain(defs) -> None:
    for node in _walk(defs):
        if isinstance(node, dict):
            assert "anyOf" not in node and "title" not in node and "$defs" not in node
            assert node.get("type") != "null"
        if isinstance(node, str):
            assert "openapi_types (dict)" not in node


def test_required_fields_match_kubernetes(defs) -> None:
    assert defs[f"{CORE}.Container"]["required"] == ["name"]
    assert defs[f"{CORE}.PodSpec"]["required"] == ["containers"]
    assert "required" not in defs[f"{META}.ObjectMeta"]
    assert set(defs["io.k8s.api.apps.v1.DeploymentSpec"]["required"]) == {"selector", "template"}


def test_special_types_have_the_apiserver_shapes(defs) -> None:
    assert defs[schema.QUANTITY]["type"] == "string"
    assert defs[schema.INT_OR_STRING] | {"description": ""} == {
        "type": "string", "format": "int-or-string", "description": ""}
    assert (defs[schema.TIME]["type"], defs[schema.TIME]["format"]) == ("string", "date-time")
    assert (defs[schema.MICRO_TIME]["type"], defs[schema.MICRO_TIME]["format"]) == ("string", "date-time")

    limits = defs[f"{CORE}.ResourceRequirements"]["properties"]["limits"]
    assert limits["type"] == "object" and _ref_of(limits["additionalProperties"]) == schema.QUANTITY
    assert _ref_of(defs[f"{CORE}.EmptyDirVolumeSource"]["properties"]["sizeLimit"]) == schema.QUANTITY
    for owner, field in ((f"{CORE}.ServicePort", "targetPort"), (f"{CORE}.HTTPGetAction", "port"),
                         ("io.k8s.api.apps.v1.RollingUpdateDeployment", "maxSurge")):
        assert _ref_of(defs[owner]["properties"][field]) == schema.INT_OR_STRING
    assert _ref_of(defs[f"{META}.ObjectMeta"]["properties"]["creationTimestamp"]) == schema.TIME
    assert _ref_of(defs[f"{CORE}.Event"]["properties"]["eventTime"]) == schema.MICRO_TIME
    assert _ref_of(defs[f"{CORE}.Event"]["properties"]["lastTimestamp"]) == schema.TIME
    lease_spec = defs["io.k8s.api.coordination.v1.LeaseSpec"]
    assert _ref_of(lease_spec["properties"]["renewTime"]) == schema.MICRO_TIME
    assert defs[f"{CORE}.Secret"]["properties"]["data"]["additionalProperties"] == {
        "type": "string", "format": "byte"}
    assert _ref_of(defs[f"{META}.ManagedFieldsEntry"]["properties"]["fieldsV1"]) == schema.FIELDS_V1


@pytest.mark.parametrize(("owner", "field", "strategy", "key", "list_type", "map_keys"), [
    (f"{CORE}.PodSpec", "containers", "merge", "name", "map", ["name"]),
    (f"{CORE}.PodSpec", "volumes", "merge,retainKeys", "name", "map", ["name"]),
    (f"{CORE}.Container", "ports", "merge", "containerPort", "map", ["containerPort", "protocol"]),
    (f"{CORE}.Container", "env", "merge", "name", "map", ["name"]),
    (f"{CORE}.Container", "volumeMounts", "merge", "mountPath", "map", ["mountPath"]),
    (f"{CORE}.ServiceSpec", "ports", "merge", "port", "map", ["port", "protocol"]),
    (f"{META}.ObjectMeta", "ownerReferences", "merge", "uid", "map", ["uid"]),
    (f"{META}.ObjectMeta", "finalizers", "merge", None, "set", None),
    ("io.k8s.api.apps.v1.DeploymentStatus", "conditions", "merge", "type", "map", ["type"]),
    (f"{CORE}.PodSpec", "tolerations", None, None, "atomic", None),
])
def test_list_fields_carry_patch_and_list_metadata(defs, owner, field, strategy, key, list_type,
                                                   map_keys) -> None:
    prop = defs[owner]["properties"][field]
    assert prop["type"] == "array"
    assert prop.get("x-kubernetes-patch-strategy") == strategy
    assert prop.get("x-kubernetes-patch-merge-key") == key
    assert prop["x-kubernetes-list-type"] == list_type
    assert prop.get("x-kubernetes-list-map-keys") == map_keys


def test_descriptions_come_from_kubernetes(defs) -> None:
    pod = defs[f"{CORE}.Pod"]
    assert pod["description"].startswith("Pod is a collection of containers")
    assert "Attributes" not in pod["description"]
    assert pod["properties"]["metadata"]["description"].startswith("Standard object's metadata")
    assert "DNS_LABEL" in defs[f"{CORE}.Container"]["properties"]["name"]["description"]


# --- unknown_fields --------------------------------------------------------------------------

POD = by_kind("v1", "Pod")
DEPLOYMENT = by_kind("apps/v1", "Deployment")
CONFIGMAP = by_kind("v1", "ConfigMap")


def _pod() -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "web", "namespace": "default", "labels": {"app": "web", "any-key": "x"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u"}],
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:metadata": {"f:labels": {}}}}],
        },
        "spec": {
            "nodeSelector": {"disk": "ssd"},
            "containers": [{
                "name": "web", "image": "demo/web",
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "resources": {"limits": {"cpu": 1, "memory": "64Mi"}, "requests": {"cpu": "100m"}},
                "livenessProbe": {"httpGet": {"port": "http", "path": "/"}, "periodSeconds": 5},
                "env": [{"name": "A", "value": "1"}],
            }],
            "volumes": [{"name": "v", "emptyDir": {"sizeLimit": "1Gi"}}],
        },
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }


def test_a_valid_pod_has_no_unknown_fields() -> None:
    assert schema.unknown_fields(POD, _pod()) == []


def test_unknown_fields_are_found_at_every_depth() -> None:
    pod = _pod()
    pod["bogus"] = 1
    pod["metadata"]["nickname"] = "x"
    pod["spec"]["containers"][0]["bogusField"] = True
    pod["spec"]["containers"][0]["ports"][0]["hostname"] = "x"
    pod["spec"]["containers"][0]["livenessProbe"]["httpGet"]["verb"] = "GET"
    pod["spec"]["volumes"][0]["emptyDir"]["size"] = "1Gi"
    assert sorted(schema.unknown_fields(POD, pod)) == sorted([
        "bogus",
        "metadata.nickname",
        "spec.containers[0].bogusField",
        "spec.containers[0].ports[0].hostname",
        "spec.containers[0].livenessProbe.httpGet.verb",
        "spec.volumes[0].emptyDir.size",
    ])


def test_unknown_fields_inside_a_deployments_pod_template() -> None:
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {
            "replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": copy.deepcopy(_pod()["spec"])},
        },
    }
    assert schema.unknown_fields(DEPLOYMENT, deployment) == []
    deployment["spec"]["template"]["spec"]["containers"].append({"name": "b", "imagePullPolicyy": "Always"})
    assert schema.unknown_fields(DEPLOYMENT, deployment) == [
        "spec.template.spec.containers[1].imagePullPolicyy"]


def test_free_form_maps_are_not_looked_into() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"x": "y"}},
          "data": {"anything": "goes", "nested.key": "v"}, "binaryData": {"b": "AAEC"}, "immutable": False}
    assert schema.unknown_fields(CONFIGMAP, cm) == []


def test_values_of_the_wrong_shape_are_not_reported_and_do_not_crash() -> None:
    odd = {"apiVersion": "v1", "kind": "Pod", "metadata": None,
           "spec": {"containers": "not-a-list", "volumes": [None, 3, {"name": "v", "bogus": 1}]},
           "status": ["not", "an", "object"]}
    assert schema.unknown_fields(POD, odd) == ["spec.volumes[2].bogus"]
    assert schema.unknown_fields(POD, {}) == []


def test_a_pod_serialized_by_the_kubernetes_client_has_no_unknown_fields() -> None:
    from kubernetes.client import ApiClient, V1Container, V1ObjectMeta, V1Pod, V1PodSpec

    pod = V1Pod(api_version="v1", kind="Pod", metadata=V1ObjectMeta(name="p", labels={"a": "b"}),
                spec=V1PodSpec(containers=[V1Container(name="c", image="i")]))
    body = ApiClient().sanitize_for_serialization(pod)
    assert schema.unknown_fields(POD, body) == []


# --- the disk cache ---------------------------------------------------------------------------

def test_definitions_are_cached_on_disk_and_reused(tmp_path, monkeypatch, defs) -> None:
    monkeypatch.setenv("MINIKUBE_PY_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(schema, "_cache", {})
    built = schema.definitions()
    [cached] = tmp_path.glob("openapi-definitions-kubernetes-*.json")
    assert built == defs

    def no_build(self):
        raise AssertionError("rebuilt despite the disk cache")

    monkeypatch.setattr(schema, "_cache", {})
    monkeypatch.setattr(schema._Builder, "build", no_build)
    assert schema.definitions() == defs

    # A damaged file is ignored and replaced by a fresh build.
    cached.write_text('{"truncated": ')
    monkeypatch.undo()
    monkeypatch.setenv("MINIKUBE_PY_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(schema, "_cache", {})
    assert schema.definitions() == defs
    assert schema._load(cached) == defs


def test_an_unwritable_cache_directory_only_costs_a_rebuild(tmp_path, monkeypatch, defs) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("MINIKUBE_PY_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(schema, "_cache", {})
    assert schema.definitions() == defs
