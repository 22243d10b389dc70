"""Bad requests over raw HTTP: each gets the Status code and reason the real kube-apiserver gives,
never a 5xx or a hang, and the server goes on serving afterwards."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import LocalAPIServer

CM_BODY = {"metadata": {"name": "cm"}, "data": {"a": "1"}}
MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


@pytest.fixture
def http(apiserver: LocalAPIServer) -> Iterator[httpx.Client]:
    with apiserver.http_client() as c:
        yield c
        # Whatever the test sent, the server still answers ordinary requests.
        assert c.get("/api/v1/namespaces/default").status_code == 200
        assert c.get("/healthz").text == "ok"


@pytest.fixture
def ns(http: httpx.Client) -> str:
    name = f"bad-{uuid.uuid4().hex[:8]}"
    assert http.post("/api/v1/namespaces", json={"metadata": {"name": name}}).status_code == 201
    return name


def expect(resp: httpx.Response, code: int, reason: str) -> dict[str, Any]:
    """The response is a Status with this code and reason; returns it."""
    assert resp.status_code == code, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    status = resp.json()
    assert status["kind"] == "Status" and status["apiVersion"] == "v1", status
    assert status["status"] == "Failure"
    assert status["code"] == code and status["reason"] == reason, status
    assert status["message"]
    return status


def cause_fields(status: dict[str, Any]) -> list[str]:
    """kubectl prints 422s from details.causes[].field: each cause must name its field."""
    causes = status["details"]["causes"]
    assert causes and all(c["message"] and c["reason"] for c in causes), causes
    return [c["field"] for c in causes]


def cms(ns: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/configmaps" + (f"/{name}" if name else "")


@pytest.mark.parametrize(
    "content_type,body",
    [
        ("application/json", b'{"metadata": '),
        ("application/json", b'{"metadata": {"name": "x"}} trailing'),
        ("application/json", b"\xff\xfe not utf-8"),
        ("application/json", b""),
        ("application/yaml", b"metadata: [unclosed"),
        ("application/yaml", b"metadata:\n  name: x\n bad-indent: y\n"),
        ("application/json", b"[1, 2]"),
        ("application/json", b'"a string"'),
        ("application/yaml", b"just a scalar"),
        ("application/json", b'{"metadata": [1]}'),
    ],
    ids=[
        "json-truncated",
        "json-trailing",
        "json-binary",
        "empty",
        "yaml-unclosed",
        "yaml-indent",
        "json-list",
        "json-string",
        "yaml-scalar",
        "metadata-list",
    ],
)
def test_malformed_bodies(http: httpx.Client, ns: str, content_type: str, body: bytes) -> None:
    expect(http.post(cms(ns), content=body, headers={"Content-Type": content_type}), 400, "BadRequest")
    expect(http.put(cms(ns, "x"), content=body, headers={"Content-Type": content_type}), 400, "BadRequest")


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/namespaces/default/widgets",
        "/api/v1/widgets",
        "/api/v2/pods",
        "/apis/apps/v2/deployments",
        "/apis/apps/v1beta1/namespaces/default/deployments",
        "/apis/nope.example.com/v1/things",
        "/apis/apps/v1/namespaces/default/configmaps",  # a core kind asked for in the wrong group
        "/api/v1/namespaces/default/configmaps/x/nosuchsub",
        "/api/v1/namespaces/default/configmaps/x/status",  # configmaps have no status subresource
        "/api/v1/namespaces/default/configmaps/x/a/b",
        "/nonsense",
    ],
)
def test_unknown_resources_and_versions(http: httpx.Client, path: str) -> None:
    expect(http.get(path), 404, "NotFound")
    expect(http.post(path, json={"metadata": {"name": "x"}}), 404, "NotFound")


def test_kind_and_version_must_match_the_url(http: httpx.Client, ns: str) -> None:
    status = expect(
        http.post(cms(ns), json={**CM_BODY, "kind": "Secret", "apiVersion": "v1"}), 400, "BadRequest"
    )
    assert "Secret" in status["message"]
    expect(
        http.post(cms(ns), json={**CM_BODY, "kind": "ConfigMap", "apiVersion": "apps/v1"}), 400, "BadRequest"
    )
    deploy = f"/apis/apps/v1/namespaces/{ns}/deployments"
    expect(
        http.post(
            deploy, json={"kind": "Deployment", "apiVersion": "extensions/v1beta1", "metadata": {"name": "d"}}
        ),
        400,
        "BadRequest",
    )
    status = expect(
        http.post(cms(ns), json={"metadata": {"name": "x", "namespace": "elsewhere"}}), 400, "BadRequest"
    )
    assert "namespace" in status["message"]
    http.post(cms(ns), json=CM_BODY)
    expect(http.put(cms(ns, "cm"), json={"metadata": {"name": "other"}}), 400, "BadRequest")


@pytest.mark.parametrize(
    "path,body,fields",
    [
        ("configmaps", {"metadata": {}}, ["metadata.name"]),
        ("pods", {"metadata": {"name": "p"}, "spec": {}}, ["spec.containers"]),
        (
            "pods",
            {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}},
            ["spec.containers[0].image"],
        ),
        ("services", {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 0}]}}, ["spec.ports[0].port"]),
        ("configmaps", {"metadata": {"name": "l", "labels": {"a": 1}}}, ["metadata.labels[a]"]),
    ],
    ids=["configmap-name", "pod-containers", "container-image", "service-port", "label-type"],
)
def test_missing_or_invalid_fields(
    http: httpx.Client, ns: str, path: str, body: dict[str, Any], fields: list[str]
) -> None:
    status = expect(http.post(f"/api/v1/namespaces/{ns}/{path}", json=body), 422, "Invalid")
    assert set(fields) <= set(cause_fields(status))
    assert " is invalid: " in status["message"]


def test_deployment_without_selector(http: httpx.Client, ns: str) -> None:
    body = {
        "metadata": {"name": "d"},
        "spec": {
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            }
        },
    }
    status = expect(http.post(f"/apis/apps/v1/namespaces/{ns}/deployments", json=body), 422, "Invalid")
    assert "spec.selector" in cause_fields(status)
    assert status["details"]["group"] == "apps" and status["details"]["kind"] == "Deployment"


@pytest.mark.parametrize(
    "collection,name",
    [
        ("configmaps", "Bad_Name"),
        ("configmaps", "ends-with-dash-"),
        ("configmaps", "x" * 254),
        ("pods", "UPPER"),
        ("namespaces", "dots.are.not.labels"),
        ("services", "1starts-with-digit"),
    ],
)
def test_invalid_names(http: httpx.Client, ns: str, collection: str, name: str) -> None:
    path = "/api/v1/namespaces" if collection == "namespaces" else f"/api/v1/namespaces/{ns}/{collection}"
    body: dict[str, Any] = {"metadata": {"name": name}}
    if collection == "pods":
        body["spec"] = {"containers": [{"name": "c", "image": "nginx"}]}
    if collection == "services":
        body["spec"] = {"ports": [{"port": 80}]}
    status = expect(http.post(path, json=body), 422, "Invalid")
    assert cause_fields(status) == ["metadata.name"]


def _create(http: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = http.post(path, json=body)
    assert r.status_code == 201, r.text
    return r.json()


def test_immutable_fields(http: httpx.Client, ns: str) -> None:
    deploys = f"/apis/apps/v1/namespaces/{ns}/deployments"
    _create(
        http,
        deploys,
        {
            "metadata": {"name": "d"},
            "spec": {
                "selector": {"matchLabels": {"app": "d"}},
                "template": {
                    "metadata": {"labels": {"app": "d", "v": "1"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]},
                },
            },
        },
    )
    patch = {"spec": {"selector": {"matchLabels": {"app": "d", "v": "1"}}}}
    status = expect(http.patch(f"{deploys}/d", json=patch, headers=MERGE), 422, "Invalid")
    assert "spec.selector" in cause_fields(status)
    assert "field is immutable" in status["message"]

    svc = _create(
        http,
        f"/api/v1/namespaces/{ns}/services",
        {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}},
    )
    ip = svc["spec"]["clusterIP"]
    other = ip.rsplit(".", 1)[0] + (".77" if not ip.endswith(".77") else ".78")
    status = expect(
        http.patch(
            f"/api/v1/namespaces/{ns}/services/s",
            json={"spec": {"clusterIP": other, "clusterIPs": [other]}},
            headers=MERGE,
        ),
        422,
        "Invalid",
    )
    assert any(f.startswith("spec.clusterIP") for f in cause_fields(status))
    assert http.get(f"/api/v1/namespaces/{ns}/services/s").json()["spec"]["clusterIP"] == ip

    _create(http, cms(ns), {"metadata": {"name": "frozen"}, "data": {"a": "1"}, "immutable": True})
    status = expect(http.patch(cms(ns, "frozen"), json={"data": {"a": "2"}}, headers=MERGE), 422, "Invalid")
    assert "data" in cause_fields(status)


def test_oversized_bodies(http: httpx.Client, ns: str) -> None:
    big = {"metadata": {"name": "big"}, "data": {"a": "x" * (3 * 1024 * 1024 + 16)}}
    expect(http.post(cms(ns), json=big), 413, "RequestEntityTooLarge")

    def chunks() -> Iterator[bytes]:
        # No Content-Length: the server must cut the body off as it reads, not after buffering it all.
        yield b'{"metadata": {"name": "big2"}, "data": {"a": "'
        for _ in range(40):
            yield b"x" * 100_000
        yield b'"}}'

    expect(
        http.post(cms(ns), content=chunks(), headers={"Content-Type": "application/json"}),
        413,
        "RequestEntityTooLarge",
    )
    assert http.get(cms(ns, "big")).status_code == 404


@pytest.mark.parametrize(
    "method,suffix,content_type",
    [
        ("POST", "", "text/plain"),
        ("POST", "", "application/x-www-form-urlencoded"),
        ("PUT", "/cm", "application/xml"),
        ("PATCH", "/cm", "application/json"),  # a patch must say which kind of patch it is
        ("PATCH", "/cm", "text/plain"),
    ],
)
def test_wrong_content_types(
    http: httpx.Client, ns: str, method: str, suffix: str, content_type: str
) -> None:
    http.post(cms(ns), json=CM_BODY)
    resp = http.request(
        method,
        cms(ns) + suffix,
        content=b'{"metadata": {"name": "cm"}}',
        headers={"Content-Type": content_type},
    )
    expect(resp, 415, "UnsupportedMediaType")


def test_unacceptable_accept_header(http: httpx.Client, ns: str) -> None:
    expect(http.get(cms(ns), headers={"Accept": "application/vnd.kubernetes.protobuf"}), 406, "NotAcceptable")


def test_stale_put_conflicts(http: httpx.Client, ns: str) -> None:
    created = _create(http, cms(ns), CM_BODY)
    fresh = {**created, "data": {"a": "2"}}
    assert http.put(cms(ns, "cm"), json=fresh).status_code == 200
    stale = {**created, "data": {"a": "3"}}
    status = expect(http.put(cms(ns, "cm"), json=stale), 409, "Conflict")
    assert status["details"]["name"] == "cm"
    # A patch carrying the stale resourceVersion is refused too; a delete precondition as well.
    expect(
        http.patch(
            cms(ns, "cm"),
            json={
                "metadata": {"resourceVersion": created["metadata"]["resourceVersion"]},
                "data": {"a": "4"},
            },
            headers=MERGE,
        ),
        409,
        "Conflict",
    )
    expect(
        http.request(
            "DELETE",
            cms(ns, "cm"),
            json={"preconditions": {"resourceVersion": created["metadata"]["resourceVersion"]}},
        ),
        409,
        "Conflict",
    )
    assert http.get(cms(ns, "cm")).json()["data"] == {"a": "2"}
    expect(http.post(cms(ns), json=CM_BODY), 409, "AlreadyExists")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
    ],
    ids=["none", "wrong-token", "bare-bearer", "basic"],
)
def test_unauthenticated(apiserver: LocalAPIServer, headers: dict[str, str]) -> None:
    ctx = ssl.create_default_context(cafile=str(apiserver.ca_file))
    with httpx.Client(base_url=apiserver.url, verify=ctx, headers=headers, timeout=30.0) as anon:
        for method, path in (
            ("GET", "/api/v1/namespaces"),
            ("POST", "/api/v1/namespaces/default/configmaps"),
            ("GET", "/version"),
            ("GET", "/api"),
        ):
            status = expect(anon.request(method, path, json=CM_BODY), 401, "Unauthorized")
            assert status["message"] == "Unauthorized"
        # Health checks stay open, as kube-apiserver's are to unauthenticated probes.
        assert anon.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/api/v1/namespaces/default/configmaps/named"),
        ("PUT", "/api/v1/namespaces/default/configmaps"),
        ("PATCH", "/api/v1/namespaces/default/configmaps"),
        ("OPTIONS", "/api/v1/namespaces/default/configmaps"),
        ("DELETE", "/version"),
        ("POST", "/api"),
        ("PUT", "/api/v1/namespaces/default/pods/x/log"),
        ("DELETE", "/apis/apps/v1/namespaces/default/deployments/x/scale"),
    ],
)
def test_unsupported_methods(http: httpx.Client, method: str, path: str) -> None:
    headers = MERGE if method == "PATCH" else {"Content-Type": "application/json"}
    expect(
        http.request(method, path, content=b'{"metadata": {"name": "named"}}', headers=headers),
        405,
        "MethodNotAllowed",
    )
    assert http.get("/api/v1/namespaces/default/configmaps/named").status_code == 404


def test_json_patch_failures(http: httpx.Client, ns: str) -> None:
    _create(http, cms(ns), CM_BODY)
    for ops in (
        [{"op": "test", "path": "/data/a", "value": "nope"}],
        [{"op": "remove", "path": "/data/missing"}],
        [{"op": "frobnicate", "path": "/data/a"}],
        [{"op": "add", "path": "/data/b", "value": "2"}, {"op": "test", "path": "/data/a", "value": "0"}],
    ):
        expect(http.patch(cms(ns, "cm"), json=ops, headers=JSON_PATCH), 422, "Invalid")
    for body in ({"op": "add"}, "not a list"):
        expect(http.patch(cms(ns, "cm"), json=body, headers=JSON_PATCH), 400, "BadRequest")
    expect(http.patch(cms(ns, "cm"), json=[1, 2], headers=MERGE), 400, "BadRequest")
    # Nothing of a failed patch was applied, not even its first operations.
    assert http.get(cms(ns, "cm")).json()["data"] == {"a": "1"}
    expect(http.patch(cms(ns, "missing"), json={"data": {}}, headers=MERGE), 404, "NotFound")


@pytest.mark.parametrize(
    "params",
    [
        {"labelSelector": "a in ("},
        {"labelSelector": "a=b=c"},
        {"labelSelector": "!"},
        {"labelSelector": "-bad-key=x"},
        {"fieldSelector": "spec.bogus=x"},
        {"fieldSelector": "metadata.name"},
        {"fieldSelector": "metadata.name~x"},
        {"limit": "abc"},
        {"limit": "-1"},
        {"continue": "!!!not-a-token"},
        {"resourceVersion": "abc"},
        {"resourceVersionMatch": "Sometimes", "resourceVersion": "1"},
        {"resourceVersionMatch": "Exact"},
    ],
)
def test_invalid_list_parameters(http: httpx.Client, params: dict[str, str]) -> None:
    expect(http.get("/api/v1/namespaces/default/configmaps", params=params), 400, "BadRequest")


def test_invalid_write_parameters(http: httpx.Client, ns: str) -> None:
    expect(http.post(cms(ns), params={"dryRun": "Sometimes"}, json=CM_BODY), 400, "BadRequest")
    expect(http.post(cms(ns), params={"fieldValidation": "Lenient"}, json=CM_BODY), 400, "BadRequest")
    status = expect(
        http.post(cms(ns), params={"fieldValidation": "Strict"}, json={**CM_BODY, "bogus": 1}),
        400,
        "BadRequest",
    )
    assert 'unknown field "bogus"' in status["message"]
    _create(http, cms(ns), CM_BODY)
    expect(http.delete(cms(ns, "cm"), params={"propagationPolicy": "Sideways"}), 422, "Invalid")
    expect(http.delete(cms(ns, "cm"), params={"gracePeriodSeconds": "soon"}), 400, "BadRequest")
    expect(
        http.request(
            "DELETE", cms(ns, "cm"), content=b"{not json", headers={"Content-Type": "application/json"}
        ),
        400,
        "BadRequest",
    )
    assert http.get(cms(ns, "cm")).status_code == 200


def _post_yaml(http: httpx.Client, ns: str, doc: str) -> httpx.Response:
    return http.post(cms(ns), content=doc.encode(), headers={"Content-Type": "application/yaml"})


def test_yaml_reads_as_kube_apiserver_converts_it_to_json(http: httpx.Client, ns: str) -> None:
    r = _post_yaml(
        http,
        ns,
        "metadata:\n  name: y\n  labels: {true: a, null: b}\n"
        "data: {1: one, when: 2024-01-01, at: 2024-01-01T10:00:00Z}\n"
        "binaryData: {raw: !!binary aGVsbG8=}\n",
    )
    assert r.status_code == 201, r.text
    obj = r.json()
    assert obj["metadata"]["labels"] == {"true": "a", "null": "b"}
    assert obj["data"] == {"1": "one", "when": "2024-01-01", "at": "2024-01-01T10:00:00Z"}
    assert obj["binaryData"] == {"raw": "aGVsbG8="}


def _laughs(levels: int) -> str:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "metadata: {name: laughs}\nspec:\n" + "\n".join("  " + line for line in lines) + "\n"


@pytest.mark.parametrize(
    "content_type,body,message",
    [
        ("application/yaml", _laughs(9).encode(), "excessive aliasing"),  # 10^9 nodes once expanded
        ("application/yaml", b"metadata: {name: r}\ndata: &a {k: *a}\n", "recursive alias"),
        ("application/yaml", b"metadata: {name: n}\ndata: {a: .nan}\n", "cannot be represented in JSON"),
        ("application/yaml", b"metadata: {name: d}\nx: " + b"[" * 150 + b"]" * 150 + b"\n", "deeper than"),
        (
            "application/json",
            b'{"metadata": {"name": "d", "labels": ' + b'{"a": ' * 150 + b"1" + b"}" * 152,
            "deeper than",
        ),
        (
            "application/json",
            b'{"metadata": {"name": "d"}, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
            "depth",
        ),
        ("application/merge-patch+json", b'{"data": ' + b'{"a": ' * 150 + b"1" + b"}" * 151, "deeper than"),
    ],
    ids=[
        "billion-laughs",
        "recursive-alias",
        "nan",
        "deep-yaml",
        "deep-json",
        "very-deep-json",
        "deep-patch",
    ],
)
def test_hostile_documents(http: httpx.Client, ns: str, content_type: str, body: bytes, message: str) -> None:
    if content_type.startswith("application/merge-patch"):
        _create(http, cms(ns), {"metadata": {"name": "d"}})
        resp = http.patch(cms(ns, "d"), content=body, headers={"Content-Type": content_type})
    else:
        resp = http.post(cms(ns), content=body, headers={"Content-Type": content_type})
    assert message in expect(resp, 400, "BadRequest")["message"]


_POD_SPEC = {"containers": [{"name": "c", "image": "nginx"}]}


@pytest.mark.parametrize(
    "collection,body",
    [
        ("pods", {"metadata": {"name": "t"}, "spec": {"containers": [{"name": "c", "image": {"a": 1}}]}}),
        ("pods", {"metadata": {"name": "t"}, "spec": "not an object"}),
        ("pods", {"metadata": {"name": "t"}, "spec": {"containers": {"name": "c"}}}),
        ("pods", {"metadata": {"name": "t"}, "spec": {"containers": [{"name": "c", "resources": ["cpu"]}]}}),
        (
            "pods",
            {"metadata": {"name": "t"}, "spec": {"containers": [{"name": "c", "resources": {"limits": 1}}]}},
        ),
        ("pods", {"metadata": {"name": "t"}, "spec": {"containers": [{"name": "c", "ports": {"a": 1}}]}}),
        ("pods", {"metadata": {"name": "t"}, "spec": {"containers": [{"name": "c", "env": "A=1"}]}}),
        ("pods", {"metadata": {"name": "t"}, "spec": {**_POD_SPEC, "tolerations": {"key": "k"}}}),
        (
            "pods",
            {"metadata": {"name": "t"}, "spec": {**_POD_SPEC, "volumes": [{"name": "v", "configMap": 3}]}},
        ),
        ("pods", {"metadata": {"name": "t", "labels": ["a"]}, "spec": _POD_SPEC}),
        ("pods", {"metadata": {"name": "t", "finalizers": "x"}, "spec": _POD_SPEC}),
        ("pods", {"metadata": {"name": "t", "ownerReferences": {"a": 1}}, "spec": _POD_SPEC}),
        ("pods", {"metadata": {"name": 7}, "spec": _POD_SPEC}),
        ("configmaps", {"metadata": {"name": "t"}, "data": ["a"]}),
        ("services", {"metadata": {"name": "t"}, "spec": {"ports": {"port": 80}}}),
        ("services", {"metadata": {"name": "t"}, "spec": {"ports": [{"port": "eighty"}]}}),
        ("deployments", {"metadata": {"name": "t"}, "spec": {"replicas": "3", "selector": "app=t"}}),
    ],
)
def test_wrongly_typed_fields(http: httpx.Client, ns: str, collection: str, body: dict[str, Any]) -> None:
    # kube-apiserver answers these 400 (typed decoding) or 422 (validation); never a 5xx.
    group = "apis/apps/v1" if collection == "deployments" else "api/v1"
    resp = http.post(f"/{group}/namespaces/{ns}/{collection}", json=body)
    assert resp.status_code in (400, 422), resp.text
    expect(resp, resp.status_code, "BadRequest" if resp.status_code == 400 else "Invalid")
