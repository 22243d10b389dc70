"""Container environments and pod volumes as the kubelet builds them (no runtime needed)."""

from __future__ import annotations

import base64
import stat
from pathlib import Path
from typing import Any

import pytest

from minikube_py.kubelet.envvars import ContainerConfigError, container_env, expand, expand_args
from minikube_py.kubelet.pod_workers import linux_resources, pull_policy, sandbox_hostname
from minikube_py.kubelet.volumes import PodVolumes, VolumeError, host_path

OBJECTS: dict[tuple[str, str, str], dict[str, Any]] = {
    ("configmaps", "ns", "cfg"): {"data": {"color": "blue", "size": "L"}},
    ("secrets", "ns", "sec"): {"data": {"password": base64.b64encode(b"s3cret").decode()}},
}


async def get(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    return OBJECTS.get((kind, namespace, name))


POD = {"metadata": {"name": "web-1", "namespace": "ns", "uid": "0123abcd-0000-4000-8000-000000000001",
                    "labels": {"app": "web"}},
       "spec": {"nodeName": "node-a", "serviceAccountName": "default"}, "status": {}}


async def test_env_sources_in_order() -> None:
    container = {
        "name": "c",
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"},
                    {"secretRef": {"name": "nope", "optional": True}}],
        "env": [
            {"name": "A", "value": "1"},
            {"name": "B", "value": "$(A)-$(MISSING)-$$(A)"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "color"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
            {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "gone", "optional": True}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "CFG_size", "value": "override"},
        ],
        "resources": {"limits": {"memory": "64Mi"}},
    }
    env = await container_env(POD, container, get, pod_ip="10.244.251.7", host_ip="127.0.0.1")
    got = {e["key"]: e["value"] for e in env}
    assert got == {"CFG_color": "blue", "CFG_size": "override", "A": "1", "B": "1-$(MISSING)-$(A)", "POD": "web-1",
                   "NS": "ns", "UID": POD["metadata"]["uid"], "IP": "10.244.251.7", "HOST": "127.0.0.1",
                   "NODE": "node-a", "APP": "web", "COLOR": "blue", "PW": "s3cret", "MEM": "64"}
    assert [e["key"] for e in env][:2] == ["CFG_color", "CFG_size"]      # envFrom first, env after
    assert expand_args(["echo", "$(POD)"], env) == ["echo", "web-1"]
    assert expand("$(A)$$", {"A": "x"}) == "x$"


@pytest.mark.parametrize(("var", "message"), [
    ({"configMapKeyRef": {"name": "absent", "key": "k"}}, 'configmap "absent" not found'),
    ({"secretKeyRef": {"name": "sec", "key": "user"}}, "couldn't find key user in Secret ns/sec"),
    ({"fieldRef": {"fieldPath": "spec.bogus"}}, 'unsupported fieldPath "spec.bogus"'),
])
async def test_env_errors_are_config_errors(var: dict[str, Any], message: str) -> None:
    with pytest.raises(ContainerConfigError, match=message):
        await container_env(POD, {"env": [{"name": "X", "valueFrom": var}]}, get)


def test_resources_pull_policy_hostname() -> None:
    assert linux_resources({"resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}}}) \
        == {"cpuShares": 256, "cpuQuota": 50000, "cpuPeriod": 100000, "memoryLimitInBytes": 64 * 1024 * 1024}
    assert linux_resources({}) == {}
    assert pull_policy({"image": "demo/web"}) == "Always"
    assert pull_policy({"image": "demo/web:latest"}) == "Always"
    assert pull_policy({"image": "demo/web:1.0"}) == "IfNotPresent"
    assert pull_policy({"image": "demo/web:1.0", "imagePullPolicy": "Never"}) == "Never"
    assert sandbox_hostname({"metadata": {"name": "Web_1"}, "spec": {}}) == "web-1"


async def test_volumes_are_written_and_mounted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host_dir = tmp_path / "host" / "data"
    pod = {**POD, "spec": {**POD["spec"], "volumes": [
        {"name": "scratch", "emptyDir": {}},
        {"name": "cfg", "configMap": {"name": "cfg",
                                      "items": [{"key": "color", "path": "sub/color.txt", "mode": 0o600}]}},
        {"name": "all", "configMap": {"name": "cfg", "defaultMode": 0o640}},
        {"name": "sec", "secret": {"secretName": "sec"}},
        {"name": "opt", "secret": {"secretName": "absent", "optional": True}},
        {"name": "info", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                                                   {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
        {"name": "host", "hostPath": {"path": str(host_dir), "type": "DirectoryOrCreate"}},
    ]}}
    vols = PodVolumes(tmp_path / "root", pod)
    await vols.setup(get, pod_ip="10.244.251.7")
    base = tmp_path / "root" / "pods" / POD["metadata"]["uid"] / "volumes"
    color = base / "kubernetes.io~configmap" / "cfg" / "sub" / "color.txt"
    assert color.read_text() == "blue" and stat.S_IMODE(color.stat().st_mode) == 0o600
    assert sorted(p.name for p in (base / "kubernetes.io~configmap" / "all").iterdir()) == ["color", "size"]
    assert stat.S_IMODE((base / "kubernetes.io~configmap" / "all" / "size").stat().st_mode) == 0o640
    assert (base / "kubernetes.io~secret" / "sec" / "password").read_text() == "s3cret"
    assert (base / "kubernetes.io~downward-api" / "info" / "labels").read_text() == 'app="web"'
    assert host_dir.is_dir()
    mounts = vols.mounts({"name": "c", "volumeMounts": [
        {"name": "scratch", "mountPath": "/scratch"}, {"name": "cfg", "mountPath": "/cfg"},
        {"name": "host", "mountPath": "/host", "readOnly": True},
        {"name": "scratch", "mountPath": "/s2", "subPath": "a/b"}]})
    assert [(m["containerPath"], m["readonly"]) for m in mounts] == [
        ("/scratch", False), ("/cfg", True), ("/host", True), ("/s2", False)]
    assert mounts[3]["hostPath"].endswith("kubernetes.io~empty-dir/scratch/a/b")
    # A changed ConfigMap rewrites the files; a key that went away goes too.
    monkeypatch.setitem(OBJECTS, ("configmaps", "ns", "cfg"), {"data": {"color": "red"}})
    await vols.setup(get)
    assert sorted(p.name for p in (base / "kubernetes.io~configmap" / "all").iterdir()) == ["color"]
    assert (base / "kubernetes.io~configmap" / "all" / "color").read_text() == "red"
    hosts = vols.write_etc_hosts("10.244.251.7")
    assert "10.244.251.7\tweb-1" in hosts.read_text()
    vols.teardown()
    assert not (tmp_path / "root" / "pods" / POD["metadata"]["uid"]).exists()
    assert host_dir.is_dir()   # a hostPath is never deleted with the pod


async def test_volume_errors(tmp_path: Path) -> None:
    def pod_with(volumes: list[dict[str, Any]]) -> dict[str, Any]:
        return {**POD, "spec": {**POD["spec"], "volumes": volumes}}

    with pytest.raises(VolumeError, match='configmap "absent" not found'):
        await PodVolumes(tmp_path, pod_with([{"name": "v", "configMap": {"name": "absent"}}])).setup(get)
    with pytest.raises(VolumeError, match="non-existent config key: nokey"):
        await PodVolumes(tmp_path, pod_with([{"name": "v", "configMap": {
            "name": "cfg", "items": [{"key": "nokey", "path": "x"}]}}])).setup(get)
    with pytest.raises(VolumeError, match="unsupported volume type"):
        await PodVolumes(tmp_path, pod_with([{"name": "v", "nfs": {"server": "x"}}])).setup(get)
    with pytest.raises(VolumeError, match=r"without '\.\.'"):
        await PodVolumes(tmp_path, pod_with([{"name": "v", "configMap": {
            "name": "cfg", "items": [{"key": "color", "path": "../escape"}]}}])).setup(get)
    vols = PodVolumes(tmp_path, pod_with([{"name": "v", "emptyDir": {}}]))
    await vols.setup(get)
    with pytest.raises(VolumeError, match=r"without '\.\.'"):
        vols.mounts({"volumeMounts": [{"name": "v", "mountPath": "/x", "subPath": "../../etc"}]})
    with pytest.raises(VolumeError, match="has no volume"):
        vols.mounts({"name": "c", "volumeMounts": [{"name": "other", "mountPath": "/x"}]})
    (tmp_path / "afile").write_text("x")
    with pytest.raises(VolumeError, match="is not a Directory"):
        host_path(str(tmp_path / "afile"), "Directory")
    with pytest.raises(VolumeError, match="must be absolute"):
        host_path("relative/path", "")
    with pytest.raises(VolumeError, match="cannot name a directory"):
        PodVolumes(tmp_path, {"metadata": {"uid": "../x"}})
