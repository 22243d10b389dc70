"""The official ``kubernetes`` Python client against the real API server process: every served kind
through its generated API class, the subresources, selectors and paging, watch resume, and the
lifecycle rules (conflicts, allocation, generation, graceful deletion, finalizers, namespaces)."""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import kubernetes
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .conftest import LocalAPIServer

Manifest = Callable[[str, str], dict[str, Any]]


@pytest.fixture(scope="module")
def api(apiserver: LocalAPIServer) -> Iterator[client.ApiClient]:
    api_client = kubernetes.config.new_client_from_config(config_file=str(apiserver.kubeconfig))
    try:
        yield api_client
    finally:
        api_client.close()


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def apps(api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api)


@pytest.fixture
def ns(core: client.CoreV1Api) -> Iterator[str]:
    """A fresh namespace per test, so tests neither see nor disturb each other's objects."""
    name = f"pyc-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except ApiException as e:
            if e.status != 404:
                raise


def status_of(e: ApiException) -> dict[str, Any]:
    """The Status object the server sent with an error."""
    body = json.loads(e.body)
    assert body["kind"] == "Status" and body["status"] == "Failure", body
    assert body["code"] == e.status
    return body


def _template(app: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]},
    }


def _workload(name: str, ns: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}}, "template": _template(name)},
    }


def _daemonset(name: str, ns: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": _template(name)},
    }


@dataclass(frozen=True)
class Kind:
    """How the generated client spells one served kind: its API class and method suffix."""

    plural: str
    api: type
    suffix: str
    namespaced: bool
    manifest: Manifest

    def call(self, api_client: client.ApiClient, verb: str, *args: Any, ns: str = "", **kwargs: Any) -> Any:
        obj = self.api(api_client)
        if self.namespaced:
            # By keyword: create takes (namespace, body) but replace takes (name, namespace, body).
            return getattr(obj, f"{verb}_namespaced_{self.suffix}")(*args, namespace=ns, **kwargs)
        return getattr(obj, f"{verb}_{self.suffix}")(*args, **kwargs)


KINDS = [
    Kind("namespaces", client.CoreV1Api, "namespace", False, lambda n, ns: {"metadata": {"name": n}}),
    Kind(
        "pods",
        client.CoreV1Api,
        "pod",
        True,
        lambda n, ns: {"metadata": {"name": n}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
    ),
    Kind(
        "nodes",
        client.CoreV1Api,
        "node",
        False,
        lambda n, ns: {"metadata": {"name": n}, "spec": {"podCIDR": "10.244.7.0/24"}},
    ),
    Kind(
        "services",
        client.CoreV1Api,
        "service",
        True,
        lambda n, ns: {"metadata": {"name": n}, "spec": {"selector": {"app": n}, "ports": [{"port": 80}]}},
    ),
    Kind(
        "endpoints",
        client.CoreV1Api,
        "endpoints",
        True,
        lambda n, ns: {
            "metadata": {"name": n},
            "subsets": [{"addresses": [{"ip": "10.244.0.5"}], "ports": [{"port": 80}]}],
        },
    ),
    Kind(
        "configmaps",
        client.CoreV1Api,
        "config_map",
        True,
        lambda n, ns: {"metadata": {"name": n}, "data": {"key": "value"}},
    ),
    Kind(
        "secrets",
        client.CoreV1Api,
        "secret",
        True,
        lambda n, ns: {"metadata": {"name": n}, "type": "Opaque", "data": {"key": "dmFsdWU="}},
    ),
    Kind(
        "serviceaccounts", client.CoreV1Api, "service_account", True, lambda n, ns: {"metadata": {"name": n}}
    ),
    Kind(
        "events",
        client.CoreV1Api,
        "event",
        True,
        lambda n, ns: {
            "metadata": {"name": n},
            "reason": "Tested",
            "message": "from the python client",
            "type": "Normal",
            "involvedObject": {"kind": "Pod", "name": "x", "namespace": ns, "apiVersion": "v1"},
        },
    ),
    Kind("deployments", client.AppsV1Api, "deployment", True, _workload),
    Kind("replicasets", client.AppsV1Api, "replica_set", True, _workload),
    Kind("daemonsets", client.AppsV1Api, "daemon_set", True, _daemonset),
    Kind(
        "leases",
        client.CoordinationV1Api,
        "lease",
        True,
        lambda n, ns: {"metadata": {"name": n}, "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}},
    ),
    Kind(
        "endpointslices",
        client.DiscoveryV1Api,
        "endpoint_slice",
        True,
        lambda n, ns: {
            "metadata": {"name": n, "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.5"]}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        },
    ),
]


@pytest.mark.parametrize("kind", KINDS, ids=[k.plural for k in KINDS])
def test_crud_every_kind(api: client.ApiClient, ns: str, kind: Kind) -> None:
    name = f"crud-{uuid.uuid4().hex[:6]}"
    created = kind.call(api, "create", body=kind.manifest(name, ns), ns=ns)
    assert created.metadata.name == name
    assert created.metadata.uid and created.metadata.resource_version
    if kind.namespaced:
        assert created.metadata.namespace == ns

    read = kind.call(api, "read", name, ns=ns)
    assert read.metadata.uid == created.metadata.uid
    assert read.metadata.resource_version == created.metadata.resource_version

    listed = kind.call(api, "list", ns=ns)
    assert name in [item.metadata.name for item in listed.items]
    assert int(listed.metadata.resource_version) >= int(created.metadata.resource_version)

    # Namespaces carry a server-set kubernetes.io/metadata.name label; keep what is there.
    read.metadata.labels = {**(read.metadata.labels or {}), "step": "replaced"}
    replaced = kind.call(api, "replace", name, body=read, ns=ns)
    assert replaced.metadata.labels == read.metadata.labels
    assert int(replaced.metadata.resource_version) > int(read.metadata.resource_version)
    assert replaced.metadata.uid == created.metadata.uid

    # A dict body makes the client send a strategic merge patch: labels merge, nothing else moves.
    patched = kind.call(api, "patch", name, body={"metadata": {"labels": {"patched": "yes"}}}, ns=ns)
    assert patched.metadata.labels == {**read.metadata.labels, "patched": "yes"}
    assert int(patched.metadata.resource_version) > int(replaced.metadata.resource_version)

    kind.call(api, "delete", name, ns=ns)
    if kind.plural == "namespaces":
        # The "kubernetes" finalizer holds a namespace in Terminating until its content is gone.
        assert kind.call(api, "read", name).status.phase == "Terminating"
        return
    with pytest.raises(ApiException) as err:
        kind.call(api, "read", name, ns=ns)
    assert err.value.status == 404
    assert status_of(err.value)["reason"] == "NotFound"


def _deployment(apps: client.AppsV1Api, ns: str, name: str = "web", replicas: int = 2) -> Any:
    body = _workload(name, ns)
    body["spec"]["replicas"] = replicas
    return apps.create_namespaced_deployment(ns, body)


def test_scale_subresource(apps: client.AppsV1Api, ns: str) -> None:
    dep = _deployment(apps, ns)
    scale = apps.read_namespaced_deployment_scale("web", ns)
    assert scale.kind == "Scale" and scale.spec.replicas == 2
    assert scale.status.selector == "app=web"

    scaled = apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 5}})
    assert scaled.spec.replicas == 5
    after = apps.read_namespaced_deployment("web", ns)
    assert after.spec.replicas == 5
    assert after.metadata.generation == dep.metadata.generation + 1

    scale = apps.read_namespaced_deployment_scale("web", ns)
    scale.spec.replicas = 1
    assert apps.replace_namespaced_deployment_scale("web", ns, scale).spec.replicas == 1
    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": -1}})
    assert err.value.status == 422
    assert status_of(err.value)["details"]["causes"][0]["field"] == "spec.replicas"


def _pod(core: client.CoreV1Api, ns: str, name: str, node: str | None = None, **meta: Any) -> Any:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "nginx"}]}
    if node:
        spec["nodeName"] = node
    return core.create_namespaced_pod(ns, {"metadata": {"name": name, **meta}, "spec": spec})


def test_pod_status_subresource(core: client.CoreV1Api, ns: str) -> None:
    pod = _pod(core, ns, "p")
    assert pod.status.phase == "Pending"
    pod.status.phase = "Running"
    pod.status.pod_ip = "10.244.0.9"
    pod.spec.active_deadline_seconds = 99  # the status endpoint ignores spec changes
    updated = core.replace_namespaced_pod_status("p", ns, pod)
    assert updated.status.phase == "Running" and updated.status.pod_ip == "10.244.0.9"
    assert updated.spec.active_deadline_seconds is None

    # ... and the main endpoint ignores status changes.
    updated.status.phase = "Failed"
    updated.metadata.labels = {"x": "y"}
    again = core.replace_namespaced_pod("p", ns, updated)
    assert again.status.phase == "Running" and again.metadata.labels == {"x": "y"}


def test_binding(core: client.CoreV1Api, ns: str) -> None:
    _pod(core, ns, "a")
    _pod(core, ns, "b")
    binding = {"metadata": {"name": "a"}, "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}}
    # The server answers a binding with a Status, which the client cannot read as a V1Binding.
    resp = core.create_namespaced_binding(ns, binding, _preload_content=False)
    assert resp.status == 201
    assert json.loads(resp.data)["status"] == "Success"
    pod = core.read_namespaced_pod("a", ns)
    assert pod.spec.node_name == "node-1"
    assert [c.status for c in pod.status.conditions if c.type == "PodScheduled"] == ["True"]

    # Without _preload_content the Status surfaces as a ValueError after the write went through.
    with pytest.raises(ValueError):
        core.create_namespaced_pod_binding("b", ns, {**binding, "metadata": {"name": "b"}})
    assert core.read_namespaced_pod("b", ns).spec.node_name == "node-1"

    with pytest.raises(ApiException) as err:
        core.create_namespaced_binding(ns, binding, _preload_content=False)
    assert err.value.status == 409
    assert "already assigned" in status_of(err.value)["message"]


def test_selectors_and_pagination(core: client.CoreV1Api, ns: str) -> None:
    for i in range(25):
        core.create_namespaced_config_map(
            ns,
            {
                "metadata": {
                    "name": f"cm-{i:02d}",
                    "labels": {"parity": "even" if i % 2 == 0 else "odd", "tier": "a" if i < 5 else "b"},
                }
            },
        )
    even = core.list_namespaced_config_map(ns, label_selector="parity=even")
    assert len(even.items) == 13
    assert len(core.list_namespaced_config_map(ns, label_selector="parity=odd,tier in (a)").items) == 2
    assert len(core.list_namespaced_config_map(ns, label_selector="tier!=b,!missing").items) == 5
    by_name = core.list_namespaced_config_map(ns, field_selector="metadata.name=cm-07")
    assert [c.metadata.name for c in by_name.items] == ["cm-07"]
    assert len(core.list_namespaced_config_map(ns, field_selector="metadata.name!=cm-07").items) == 24
    across = core.list_config_map_for_all_namespaces(field_selector=f"metadata.namespace={ns}")
    assert len(across.items) == 25

    names: list[str] = []
    pages: list[int] = []
    remaining: list[int | None] = []
    token = None
    rv = None
    while True:
        page = core.list_namespaced_config_map(ns, limit=10, _continue=token)
        names += [c.metadata.name for c in page.items]
        pages.append(len(page.items))
        remaining.append(page.metadata.remaining_item_count)
        rv = rv or page.metadata.resource_version
        assert page.metadata.resource_version == rv  # every page is read at the first page's revision
        token = page.metadata._continue
        if not token:
            break
        # A change between pages must not show up in the pages still to come.
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"late-{len(pages)}"}})
    assert pages == [10, 10, 5]
    assert remaining == [15, 5, None]
    assert names == [f"cm-{i:02d}" for i in range(25)]


def test_watch_resumes_after_a_list(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, {"metadata": {"name": "before"}})
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, {"metadata": {"name": "w"}, "data": {"a": "1"}})
    core.patch_namespaced_config_map("w", ns, {"data": {"a": "2"}})
    core.delete_namespaced_config_map("w", ns)

    watch = kubernetes.watch.Watch()
    seen: list[tuple[str, str, str | None, str]] = []
    for event in watch.stream(core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=10):
        obj = event["object"]
        seen.append(
            (event["type"], obj.metadata.name, (obj.data or {}).get("a"), obj.metadata.resource_version)
        )
        if len(seen) == 3:
            watch.stop()
    assert [(t, n, a) for t, n, a, _ in seen] == [
        ("ADDED", "w", "1"),
        ("MODIFIED", "w", "2"),
        ("DELETED", "w", "2"),
    ]
    rvs = [int(r) for *_, r in seen]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3 and rvs[0] > int(rv)


def test_stale_update_conflicts(core: client.CoreV1Api, ns: str) -> None:
    old = core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"v": "1"}})
    fresh = core.read_namespaced_config_map("c", ns)
    fresh.data = {"v": "2"}
    core.replace_namespaced_config_map("c", ns, fresh)
    old.data = {"v": "3"}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("c", ns, old)
    assert err.value.status == 409
    status = status_of(err.value)
    assert status["reason"] == "Conflict"
    assert "the object has been modified" in status["message"]
    assert core.read_namespaced_config_map("c", ns).data == {"v": "2"}


def _service(core: client.CoreV1Api, ns: str, name: str, **spec: Any) -> Any:
    body = {
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}], **spec},
    }
    return core.create_namespaced_service(ns, body)


def test_service_allocations(core: client.CoreV1Api, ns: str) -> None:
    cidr = ipaddress.ip_network("10.96.0.0/12")
    svc = _service(core, ns, "plain")
    assert ipaddress.ip_address(svc.spec.cluster_ip) in cidr
    assert svc.spec.cluster_ips == [svc.spec.cluster_ip]

    auto = _service(core, ns, "auto", type="NodePort")
    assert 30000 <= auto.spec.ports[0].node_port <= 32767
    assert auto.spec.cluster_ip != svc.spec.cluster_ip

    port = 30000 + uuid.uuid4().int % 2767
    if port == auto.spec.ports[0].node_port:
        port += 1
    fixed = {"type": "NodePort", "ports": [{"port": 80, "nodePort": port}]}
    _service(core, ns, "fixed", **fixed)
    with pytest.raises(ApiException) as err:
        _service(core, ns, "fixed-again", **fixed)
    assert err.value.status == 422
    assert status_of(err.value)["details"]["causes"][0]["field"] == "spec.ports[0].nodePort"

    # Deleting releases both the port and the address for the next Service.
    core.delete_namespaced_service("fixed", ns)
    again = _service(core, ns, "fixed-again", **fixed)
    assert again.spec.ports[0].node_port == port

    ip = again.spec.cluster_ip
    with pytest.raises(ApiException) as err:
        _service(core, ns, "same-ip", clusterIP=ip)
    assert err.value.status == 422
    core.delete_namespaced_service("fixed-again", ns)
    assert _service(core, ns, "same-ip", clusterIP=ip).spec.cluster_ip == ip

    with pytest.raises(ApiException) as err:
        _service(core, ns, "outside", clusterIP="192.168.1.1")
    assert err.value.status == 422


def test_generation_and_observed_generation(apps: client.AppsV1Api, ns: str) -> None:
    dep = _deployment(apps, ns)
    assert dep.metadata.generation == 1
    dep = apps.patch_namespaced_deployment("web", ns, {"spec": {"replicas": 3}})
    assert dep.metadata.generation == 2
    dep = apps.patch_namespaced_deployment("web", ns, {"metadata": {"labels": {"only": "metadata"}}})
    assert dep.metadata.generation == 2

    dep.status = client.V1DeploymentStatus(observed_generation=2, replicas=3, ready_replicas=1)
    dep = apps.replace_namespaced_deployment_status("web", ns, dep)
    assert dep.metadata.generation == 2
    assert dep.status.observed_generation == 2 and dep.status.ready_replicas == 1

    # A status write through the main endpoint is dropped; a spec change there bumps generation.
    dep.status.ready_replicas = 3
    dep.spec.template.metadata.labels["rev"] = "2"
    dep = apps.replace_namespaced_deployment("web", ns, dep)
    assert dep.metadata.generation == 3 and dep.status.ready_replicas == 1


def test_graceful_pod_deletion(core: client.CoreV1Api, ns: str) -> None:
    _pod(core, ns, "running", node="node-1")
    core.delete_namespaced_pod("running", ns)
    pod = core.read_namespaced_pod("running", ns)
    assert pod.metadata.deletion_timestamp is not None
    assert pod.metadata.deletion_grace_period_seconds == 30

    core.delete_namespaced_pod("running", ns, grace_period_seconds=0)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod("running", ns)
    assert err.value.status == 404

    _pod(core, ns, "pending")
    core.delete_namespaced_pod("pending", ns)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod("pending", ns)
    assert err.value.status == 404


def test_finalizers_hold_deletion(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    core.delete_namespaced_config_map("held", ns)
    held = core.read_namespaced_config_map("held", ns)
    assert held.metadata.deletion_timestamp is not None
    assert held.metadata.finalizers == ["example.com/hold"]

    # Other writes still work while the finalizer holds the object; the uid stays.
    held = core.patch_namespaced_config_map("held", ns, {"data": {"still": "here"}})
    assert held.data == {"still": "here"}
    held.metadata.finalizers = []
    core.replace_namespaced_config_map("held", ns, held)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("held", ns)
    assert err.value.status == 404


@pytest.mark.parametrize("policy,finalizer", [("Orphan", "orphan"), ("Foreground", "foregroundDeletion")])
def test_propagation_policy_recorded(apps: client.AppsV1Api, ns: str, policy: str, finalizer: str) -> None:
    _deployment(apps, ns)
    apps.delete_namespaced_deployment("web", ns, propagation_policy=policy)
    dep = apps.read_namespaced_deployment("web", ns)
    assert dep.metadata.finalizers == [finalizer]
    assert dep.metadata.deletion_timestamp is not None
    # The garbage collector would remove the finalizer; here the test plays its part.
    apps.patch_namespaced_deployment("web", ns, [{"op": "remove", "path": "/metadata/finalizers"}])
    with pytest.raises(ApiException) as err:
        apps.read_namespaced_deployment("web", ns)
    assert err.value.status == 404


def test_delete_collection_with_selector(core: client.CoreV1Api, ns: str) -> None:
    for i in range(5):
        core.create_namespaced_config_map(
            ns, {"metadata": {"name": f"c{i}", "labels": {"group": "a" if i < 3 else "b"}}}
        )
    core.delete_collection_namespaced_config_map(ns, label_selector="group=a")
    left = core.list_namespaced_config_map(ns)
    assert sorted(c.metadata.name for c in left.items) == ["c3", "c4"]


def test_namespace_termination_forbids_new_content(core: client.CoreV1Api) -> None:
    name = f"term-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_config_map(name, {"metadata": {"name": "inside"}})
    core.delete_namespace(name)
    ns = core.read_namespace(name)
    assert ns.status.phase == "Terminating"
    assert ns.metadata.deletion_timestamp is not None
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(name, {"metadata": {"name": "late"}})
    assert err.value.status == 403
    status = status_of(err.value)
    assert status["reason"] == "Forbidden"
    assert "being terminated" in status["message"]
    # What was there before stays readable (the namespace controller would remove it).
    assert core.read_namespaced_config_map("inside", name).metadata.name == "inside"

    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(f"missing-{name}", {"metadata": {"name": "x"}})
    assert err.value.status == 404
