"""The create path's shortcuts answer exactly as the full checks do: the clean-pod-spec cache, the
unknown-field pre-walk and the system:masters authorization shortcut (bench/apiserver.py)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from minikube_py.api import schema, validation
from minikube_py.api.defaults import apply_defaults
from minikube_py.api.resources import lookup
from minikube_py.apiserver.server import APIServer, Config
from minikube_py.apiserver.tokens import TokenFile
from minikube_py.store.sqlite import SqliteStore

PODS = lookup("", "v1", "pods")
DEPLOYMENTS = lookup("apps", "v1", "deployments")


def _pod(name: str = "web-1") -> dict[str, Any]:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
           "spec": {"containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 80}],
                                    "resources": {"requests": {"cpu": "100m"}}}]}}
    apply_defaults(PODS, pod)
    return pod


def _fields(causes: list[Any]) -> list[str]:
    return [c.field for c in causes]


def test_a_cached_clean_spec_still_catches_a_changed_one() -> None:
    pod = _pod()
    assert validation.validate(PODS, pod) == []
    assert validation.validate(PODS, _pod("web-2")) == []  # same spec: served from the cache
    bad = _pod("web-3")
    bad["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "lots"
    assert _fields(validation.validate(PODS, bad)) == ["spec.containers[0].resources.requests[cpu]"]
    # A clean object mutated in place afterwards is checked afresh.
    pod["spec"]["containers"][0]["name"] = "Bad_Name"
    assert _fields(validation.validate(PODS, pod)) == ["spec.containers[0].name"]


def test_an_invalid_spec_is_never_cached() -> None:
    bad = _pod()
    bad["spec"]["restartPolicy"] = "Sometimes"
    first = validation.validate(PODS, bad)
    assert first and validation.validate(PODS, copy.deepcopy(bad)) == first


def test_the_cache_key_holds_the_path() -> None:
    # The same spec is clean in a pod, but in a Deployment's template its restartPolicy must be Always.
    pod = _pod()
    pod["spec"]["restartPolicy"] = "Never"
    assert validation.validate(PODS, pod) == []
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "default"},
                  "spec": {"selector": {"matchLabels": {"app": "a"}},
                           "template": {"metadata": {"labels": {"app": "a"}}, "spec": copy.deepcopy(pod["spec"])}}}
    apply_defaults(DEPLOYMENTS, deployment)
    deployment["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    assert "spec.template.spec.restartPolicy" in _fields(validation.validate(DEPLOYMENTS, deployment))


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validation, "_CLEAN_SPECS", {})
    for i in range(validation._CLEAN_SPECS_MAX + 10):
        pod = _pod()
        pod["spec"]["containers"][0]["image"] = f"nginx:{i}"
        assert validation.validate(PODS, pod) == []
    assert len(validation._CLEAN_SPECS) == validation._CLEAN_SPECS_MAX


@pytest.mark.parametrize("patch, expected", [
    ({}, []),
    ({"bogus": 1}, ["bogus"]),
    ({"metadata": {"name": "p", "labels": {"any.key/x": "v"}, "nope": {}}}, ["metadata.nope"]),
    ({"spec": {"containers": [{"name": "a", "image": "i"}, {"name": "b", "image": "i", "extra": [1]}]}},
     ["spec.containers[1].extra"]),
    ({"spec": {"containers": [{"name": "a", "image": "i", "resources": {"limits": {"cpu": "1"}, "x": 1}}]}},
     ["spec.containers[0].resources.x"]),
])
def test_unknown_fields_pre_walk_agrees_with_the_full_walk(patch: dict[str, Any], expected: list[str]) -> None:
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}}
    obj.update(patch)
    assert schema.unknown_fields(PODS, obj) == expected


def test_a_cached_clean_spec_leaves_the_rest_checked() -> None:
    pod = _pod()
    assert schema.unknown_fields(PODS, pod) == []
    assert schema.unknown_fields(PODS, copy.deepcopy(pod)) == []  # the spec is now known clean
    other = copy.deepcopy(pod)
    other["metadata"]["nope"] = 1
    other["bogus"] = {}
    assert schema.unknown_fields(PODS, other) == ["metadata.nope", "bogus"]
    other = copy.deepcopy(pod)
    other["spec"]["containers"][0]["nope"] = True
    assert schema.unknown_fields(PODS, other) == ["spec.containers[0].nope"]
    assert schema.unknown_fields(PODS, {**pod, "spec": "not an object"}) == []


def test_qualified_name_cache_keeps_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validation, "_QUALIFIED_OK", set())
    monkeypatch.setattr(validation, "_QUALIFIED_OK_MAX", 3)
    for key in ("app", "example.com/tier", "app", "a", "b", "c"):
        assert validation.is_qualified_name(key) == []
    assert len(validation._QUALIFIED_OK) == 3
    first = validation.is_qualified_name("bad key!")
    assert first and validation.is_qualified_name("bad key!") == first
    assert validation.is_qualified_name("app") is not validation.is_qualified_name("app")  # fresh lists


async def _server(tmp_path: Path, mode: str) -> tuple[APIServer, SqliteStore]:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text('admin-token,admin,1,"system:masters"\nuser-token,jane,2\n')
    store = await SqliteStore.open(str(tmp_path / "store.db"), compact_interval=None)
    srv = APIServer(Config(store_url="sqlite://", token_file=tokens, authorization_mode=mode), store)
    await srv.registry.start()
    return srv, store


@pytest.mark.parametrize("mode, masters_ok", [("Node,RBAC", True), ("RBAC", True), ("AlwaysDeny", False),
                                              ("AlwaysDeny,RBAC", True), ("Node", False)])
async def test_masters_shortcut_only_where_rbac_would_allow(tmp_path: Path, mode: str, masters_ok: bool) -> None:
    srv, store = await _server(tmp_path, mode)
    try:
        assert srv._masters_allowed == ("RBAC" in mode)
        async with TestClient(TestServer(srv.build_app())) as client:
            resp = await client.get("/api/v1/namespaces/default/configmaps",
                                    headers={"Authorization": "Bearer admin-token"})
            assert resp.status == (200 if masters_ok else 403)
            # Someone outside system:masters still goes through the authorizers (and has no binding).
            resp = await client.get("/api/v1/namespaces/default/configmaps",
                                    headers={"Authorization": "Bearer user-token"})
            assert resp.status == 403
    finally:
        await srv.registry.stop()
        await store.close()


async def test_an_explicit_authorizer_is_always_asked(tmp_path: Path) -> None:
    class Deny:
        asked = 0

        def authorize(self, user: Any, ri: Any, field_selector: str = "") -> tuple[bool, str]:
            Deny.asked += 1
            return False, "no"

    tokens = tmp_path / "tokens.csv"
    tokens.write_text('admin-token,admin,1,"system:masters"\n')
    store = await SqliteStore.open(str(tmp_path / "store.db"), compact_interval=None)
    srv = APIServer(Config(store_url="sqlite://", token_file=tokens), store, authorizer=Deny())
    try:
        assert not srv._masters_allowed
        async with TestClient(TestServer(srv.build_app())) as client:
            resp = await client.get("/api/v1/namespaces", headers={"Authorization": "Bearer admin-token"})
            assert resp.status == 403 and Deny.asked == 1
    finally:
        await store.close()


def test_token_file_fixture_parses() -> None:
    # The fixture's groups column is what kube-apiserver's token file takes.
    users = TokenFile.parse('admin-token,admin,1,"system:masters"\n')
    info = users.authenticate("admin-token")
    assert info is not None and "system:masters" in info.groups
