"""The OpenAPI v3 and v2 documents served to kubectl."""

from __future__ import annotations

import json

import pytest
import yaml

from minikube_py.api import openapi, schema
from minikube_py.api.resources import RESOURCES, group_versions

GV_PATHS = [openapi.gv_path(g, v) for g, vs in group_versions().items() for v in vs]


def _refs(node) -> set[str]:
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("$ref"), str):
                found.add(item["$ref"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def test_index_lists_every_group_version_with_its_hashed_url() -> None:
    index = openapi.v3_index()
    assert set(index["paths"]) == {"api/v1", "apis/apps/v1", "apis/coordination.k8s.io/v1",
                                   "apis/discovery.k8s.io/v1", "apis/rbac.authorization.k8s.io/v1"}
    for path, entry in index["paths"].items():
        assert not path.startswith("/")
        assert entry["serverRelativeURL"] == f"/openapi/v3/{path}?hash={openapi.v3_hash(path)}"
    hashes = [openapi.v3_hash(p) for p in GV_PATHS]
    assert len(set(hashes)) == len(hashes) and all(len(h) == 128 for h in hashes)


@pytest.mark.parametrize("path", ["api/v2", "apis/apps", "apis/nope/v1", "", "api", "apis/apps/v1/x",
                                  "../api/v1"])
def test_unknown_group_versions_have_no_document(path: str) -> None:
    assert openapi.v3_document(path) is None
    assert openapi.v3_document_bytes(path) is None
    assert openapi.v3_hash(path) == ""


@pytest.mark.parametrize("path", GV_PATHS)
def test_v3_document_is_self_contained_and_serialized_consistently(path: str) -> None:
    doc = openapi.v3_document(path)
    assert doc["openapi"].startswith("3.0") and doc["info"]["title"] == "Kubernetes"
    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):
        assert ref.startswith(schema.REF_PREFIX), ref
        assert ref[len(schema.REF_PREFIX):] in schemas, ref
    assert json.loads(openapi.v3_document_bytes(path)) == doc
    op_ids = [op["operationId"] for item in doc["paths"].values()
              for key, op in item.items() if key != "parameters"]
    assert len(op_ids) == len(set(op_ids))


@pytest.mark.parametrize("info", RESOURCES, ids=lambda r: r.qualified)
def test_each_kind_advertises_field_validation_on_patch(info) -> None:
    doc = openapi.v3_document(openapi.gv_path(info.group, info.version))
    gvk = {"group": info.group, "version": info.version, "kind": info.kind}
    patches = [item["patch"] for item in doc["paths"].values()
               if "patch" in item and item["patch"]["x-kubernetes-group-version-kind"] == gvk]
    assert patches, f"no PATCH operation for {gvk}"
    for op in patches:
        assert {"name": "fieldValidation", "in": "query"}.items() <= next(
            p for p in op["parameters"] if p["name"] == "fieldValidation").items()
        assert set(op["requestBody"]["content"]) == set(openapi.PATCH_MEDIA_TYPES)
    ns = "/namespaces/{namespace}" if info.namespaced else ""
    prefix = f"/{openapi.gv_path(info.group, info.version)}{ns}/{info.plural}"
    assert {"get", "post"} <= set(doc["paths"][prefix])
    assert {"get", "put", "patch", "delete"} <= set(doc["paths"][prefix + "/{name}"])
    kind_schema = doc["components"]["schemas"][schema.definition_name(info)]
    assert gvk in kind_schema["x-kubernetes-group-version-kind"]


def test_explain_needs_pod_container_schemas_in_core_document() -> None:
    schemas = openapi.v3_document("api/v1")["components"]["schemas"]
    assert schemas["io.k8s.api.core.v1.PodSpec"]["required"] == ["containers"]
    assert schemas["io.k8s.api.core.v1.Container"]["required"] == ["name"]
    apps = openapi.v3_document("apis/apps/v1")["components"]["schemas"]
    assert "io.k8s.api.apps.v1.DeploymentStrategy" in apps
    assert "io.k8s.api.core.v1.PodTemplateSpec" in apps
    assert "io.k8s.api.autoscaling.v1.Scale" in apps
    paths = openapi.v3_document("apis/apps/v1")["paths"]
    scale = paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]
    assert scale["patch"]["x-kubernetes-group-version-kind"] == {
        "group": "autoscaling", "version": "v1", "kind": "Scale"}


def test_v2_json_is_swagger_with_plain_refs() -> None:
    doc = openapi.v2_json()
    assert doc["swagger"] == "2.0"
    defs = doc["definitions"]
    for ref in _refs(doc):
        assert ref.startswith("#/definitions/") and ref[len("#/definitions/"):] in defs, ref
    assert "allOf" not in json.dumps(doc)
    containers = defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["items"]["$ref"] == "#/definitions/io.k8s.api.core.v1.Container"
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    patch = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert set(patch["consumes"]) == set(openapi.PATCH_MEDIA_TYPES)
    assert any(p["name"] == "fieldValidation" and p["in"] == "query" for p in patch["parameters"])
    assert patch["parameters"][0]["in"] == "body"


# --- protobuf ----------------------------------------------------------------------------------

def _decode(data: bytes) -> list[tuple[int, int | bytes]]:
    """A protobuf message as (field, value) pairs: varints as ints, length-delimited as bytes."""
    out, i = [], 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while i < len(data):
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            out.append((field, varint()))
        elif wire == 2:
            n = varint()
            out.append((field, data[i:i + n]))
            i += n
        else:
            raise AssertionError(f"unexpected wire type {wire}")
    assert i == len(data)
    return out


def _named(message: bytes, field: int) -> dict[str, bytes]:
    """Entries of a repeated Named* field (name = 1, value = 2) by name."""
    entries = {}
    for num, value in _decode(message):
        if num == field:
            parts = dict(_decode(value))
            entries[parts[1].decode()] = parts[2]
    return entries


def test_v2_protobuf_is_a_gnostic_document() -> None:
    data = openapi.v2_protobuf()
    assert data.startswith(b"\x0a\x03\x32\x2e\x30")  # swagger = "2.0", what kubectl 1.27 requires first
    top = dict(_decode(data))
    definitions = _named(top[9], 1)
    assert set(definitions) == set(openapi.v2_json()["definitions"])

    pod = dict(_decode(definitions["io.k8s.api.core.v1.Pod"]))
    extensions = _named(definitions["io.k8s.api.core.v1.Pod"], 31)
    gvk = yaml.safe_load(dict(_decode(extensions["x-kubernetes-group-version-kind"]))[2].decode())
    assert gvk == [{"group": "", "version": "v1", "kind": "Pod"}]
    assert dict(_decode(pod[22]))[1] == b"object"
    spec = dict(_decode(_named(pod[25], 1)["spec"]))
    assert spec[1] == b"#/definitions/io.k8s.api.core.v1.PodSpec"

    container = definitions["io.k8s.api.core.v1.Container"]
    assert [v for f, v in _decode(container) if f == 19] == [b"name"]  # required

    paths = _named(top[8], 2)
    item = paths["/api/v1/namespaces/{namespace}/pods/{name}"]
    patch = dict(_decode(item))[8]
    params = [v for f, v in _decode(patch) if f == 8]
    names = []
    for p in params:
        parameter = dict(_decode(dict(_decode(p))[1]))
        if 2 in parameter:  # non-body parameter -> query (3) or path (4) sub-schema
            sub = dict(_decode(dict(_decode(parameter[2]))[3]))
            names.append((sub[4].decode(), sub[2].decode()))
    assert ("fieldValidation", "query") in names
    consumes = {v.decode() for f, v in _decode(patch) if f == 7}
    assert consumes == set(openapi.PATCH_MEDIA_TYPES)


def test_documents_are_cached() -> None:
    assert openapi.v2_protobuf() is openapi.v2_protobuf()
    assert openapi.v3_document("api/v1") is openapi.v3_document("api/v1")
