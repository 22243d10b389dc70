"""Real kubectl binaries read our OpenAPI documents: explain, and apply's strategic merge patch.

A small stand-in server on 127.0.0.1 serves legacy discovery, the documents and one Pod; it is not
the project's API server, only enough of one for these commands.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
from aiohttp import web

from minikube_py.api import openapi
from minikube_py.api.resources import group_versions, in_group_version

pytestmark = pytest.mark.kubectl


def _kubectl_binaries() -> dict[str, str]:
    found: dict[str, str] = {}
    default = shutil.which("kubectl")
    if default:
        sdk_dir = Path(os.path.realpath(default)).parent
        for version in ("1.27", "1.33"):
            candidate = sdk_dir / f"kubectl.{version}"
            if candidate.exists():
                found[version] = str(candidate)
    venv = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kubectl"
    if venv.exists():
        found["venv"] = str(venv)
    return found


KUBECTL = _kubectl_binaries()
ALL = ["1.27", "1.33", "venv"]

LAST_APPLIED = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"annotations": {}, "name": "web", "namespace": "default"},
    "spec": {"containers": [{"image": "demo/web:1", "name": "web"}]},
}
LIVE_POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "web", "namespace": "default", "uid": "1d2c", "resourceVersion": "7",
                 "creationTimestamp": "2026-01-01T00:00:00Z",
                 "annotations": {"kubectl.kubernetes.io/last-applied-configuration":
                                 json.dumps(LAST_APPLIED, separators=(",", ":")) + "\n"}},
    "spec": {"containers": [{"image": "demo/web:1", "name": "web"}]},
    "status": {"phase": "Running"},
}
MANIFEST = """apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
spec:
  containers:
  - name: web
    image: demo/web:2
  - name: sidecar
    image: demo/busybox
"""


def _resource_list(group: str, version: str) -> dict:
    return {
        "kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [{"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                       "kind": r.kind, "verbs": list(r.verbs), "shortNames": list(r.short_names),
                       "categories": list(r.categories)} for r in in_group_version(group, version)],
    }


class StandIn:
    def __init__(self) -> None:
        self.patches: list[tuple[str, str, dict]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/api":
            return web.json_response({"kind": "APIVersions", "versions": ["v1"],
                                      "serverAddressByClientCIDRs": []})
        if path == "/apis":
            groups = [{"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                       "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}}
                      for g, vs in group_versions().items() if g]
            return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        parts = path.strip("/").split("/")
        if parts == ["api", "v1"]:
            return web.json_response(_resource_list("", "v1"))
        if len(parts) == 3 and parts[0] == "apis":
            return web.json_response(_resource_list(parts[1], parts[2]))
        if path == "/openapi/v2":
            if "protobuf" in request.headers.get("Accept", ""):
                return web.Response(body=openapi.v2_protobuf(), content_type=openapi.V2_PROTOBUF_CONTENT_TYPE)
            return web.json_response(openapi.v2_json())
        if path == "/openapi/v3":
            return web.json_response(openapi.v3_index())
        if path.startswith("/openapi/v3/"):
            data = openapi.v3_document_bytes(path[len("/openapi/v3/"):])
            if data is not None:
                return web.Response(body=data, content_type="application/json")
        if path == "/api/v1/namespaces/default/pods/web":
            if request.method == "PATCH":
                self.patches.append((request.headers.get("Content-Type", ""), request.query_string,
                                     await request.json()))
            if request.method in ("GET", "PATCH"):
                return web.json_response(LIVE_POD)
        return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "reason": "NotFound", "code": 404, "message": "not found"}, status=404)


@pytest.fixture
async def stand_in(tmp_path: Path):
    server = StandIn()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "default"}}],
        }))
        yield server, kubeconfig
    finally:
        await runner.cleanup()


async def _kubectl(version: str, kubeconfig: Path, *args: str) -> tuple[int, str, str]:
    if version not in KUBECTL:
        pytest.skip(f"kubectl {version} binary not found")
    proc = await asyncio.create_subprocess_exec(
        KUBECTL[version], "--kubeconfig", str(kubeconfig), "--cache-dir", str(kubeconfig.parent / "cache"),
        "--request-timeout=20s", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.parametrize("version", ALL)
async def test_explain_pod_containers(stand_in, version: str) -> None:
    _, kubeconfig = stand_in
    code, out, err = await _kubectl(version, kubeconfig, "explain", "pods.spec.containers")
    assert code == 0, err
    assert "KIND:       Pod" in out and "VERSION:    v1" in out
    assert "FIELD: containers <[]Container>" in out
    assert "name\t<string> -required-" in out
    assert "resources\t<ResourceRequirements>" in out


@pytest.mark.parametrize("version", ["1.27", "1.33"])
async def test_explain_deployment_strategy_and_service_ports(stand_in, version: str) -> None:
    _, kubeconfig = stand_in
    code, out, err = await _kubectl(version, kubeconfig, "explain", "deployments.spec.strategy")
    assert code == 0, err
    assert "GROUP:      apps" in out and "FIELD: strategy <DeploymentStrategy>" in out
    assert "rollingUpdate\t<RollingUpdateDeployment>" in out
    code, out, err = await _kubectl(version, kubeconfig, "explain", "services.spec.ports")
    assert code == 0, err
    # IntOrString is a string-typed schema (the apiserver's shape), which explain shows as <string>.
    assert "port\t<integer> -required-" in out and "targetPort\t<string>" in out


@pytest.mark.parametrize("version", ["1.27", "1.33"])
async def test_explain_from_the_protobuf_v2_document(stand_in, version: str) -> None:
    _, kubeconfig = stand_in
    code, out, err = await _kubectl(version, kubeconfig, "explain", "pods.spec.containers.ports",
                                    "--output=plaintext-openapiv2")
    assert code == 0, err
    assert "RESOURCE: ports <[]Object>" in out
    assert "containerPort\t<integer> -required-" in out


@pytest.mark.parametrize("version", ["1.27", "1.33"])
async def test_apply_builds_a_strategic_merge_patch_keyed_by_container_name(stand_in, tmp_path: Path,
                                                                           version: str) -> None:
    server, kubeconfig = stand_in
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(MANIFEST)
    code, out, err = await _kubectl(version, kubeconfig, "apply", "-f", str(manifest))
    assert code == 0, err
    assert "pod/web configured" in out
    [(content_type, query, patch)] = server.patches
    assert content_type == "application/strategic-merge-patch+json"
    assert "fieldValidation=Strict" in query
    spec = patch["spec"]
    # A merge key from our schema: the list is patched element by element, not replaced.
    assert spec["$setElementOrder/containers"] == [{"name": "web"}, {"name": "sidecar"}]
    assert sorted(spec["containers"], key=lambda c: c["name"]) == [
        {"image": "demo/busybox", "name": "sidecar"}, {"image": "demo/web:2", "name": "web"}]
