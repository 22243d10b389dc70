"""Services and namespaces on the whole local cluster: Endpoints and EndpointSlices list exactly the
ready pods and follow them; deleting a namespace empties it and then removes it."""

from __future__ import annotations

import uuid
from typing import Any

from minikube_py.client import APIClient
from tests.integration.conftest import (
    UpCluster,
    condition,
    deployment_manifest,
    eventually,
    needs_kubectl,
    pod_ready,
    pods_of,
    wait_available,
)

GATE = "example.com/serving"


def endpoints_ips(ep: dict[str, Any]) -> tuple[set[str], set[str], set[int]]:
    ready, not_ready, ports = set(), set(), set()
    for subset in ep.get("subsets") or ():
        ready |= {a["ip"] for a in subset.get("addresses") or ()}
        not_ready |= {a["ip"] for a in subset.get("notReadyAddresses") or ()}
        ports |= {p["port"] for p in subset.get("ports") or ()}
    return ready, not_ready, ports


def slice_ips(slices: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
    ready, not_ready = set(), set()
    for s in slices:
        for e in s.get("endpoints") or ():
            (ready if (e.get("conditions") or {}).get("ready") else not_ready).update(e["addresses"])
    return ready, not_ready


async def test_endpoints_list_exactly_the_ready_pods(api: APIClient, namespace: str) -> None:
    await api.create("deployments.apps", deployment_manifest("backend", 3), namespace)
    # A pod the service selects that runs but is not Ready: its readiness gate is not True yet.
    gated = {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": "gated", "labels": {"app": "backend"}},
             "spec": {"readinessGates": [{"conditionType": GATE}],
                      "containers": [{"name": "web", "image": "demo/web:v1",
                                      "ports": [{"name": "http", "containerPort": 8080}]}]}}
    await api.create("pods", gated, namespace)
    await api.create("services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "backend"},
        "spec": {"selector": {"app": "backend"}, "ports": [{"port": 80, "targetPort": "http"}]}}, namespace)
    await wait_available(api, namespace, "backend", 3)

    async def consistent(expect_ready: int, expect_unready: int) -> tuple[Any, ...] | None:
        pods = await pods_of(api, namespace, "backend")
        ready_ips = {p["status"]["podIP"] for p in pods if pod_ready(p)}
        unready_ips = {p["status"]["podIP"] for p in pods if not pod_ready(p) and p["status"].get("podIP")
                       and not p["metadata"].get("deletionTimestamp")}
        ep = await api.get_or_none("endpoints", "backend", namespace) or {}
        ep_ready, ep_not_ready, ports = endpoints_ips(ep)
        slices, _ = await api.list_all("endpointslices.discovery.k8s.io", namespace,
                                       label_selector="kubernetes.io/service-name=backend")
        sl_ready, sl_not_ready = slice_ips(slices)
        ok = (len(ready_ips) == expect_ready and len(unready_ips) == expect_unready
              and ep_ready == ready_ips == sl_ready and ep_not_ready == unready_ips == sl_not_ready
              and ports == {8080})
        return (ready_ips, unready_ips, slices) if ok else None

    _, _, slices = await eventually(lambda: consistent(3, 1), "endpoints = the 3 ready pods, 1 not ready")
    for s in slices:
        assert s["addressType"] == "IPv4"
        assert s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == \
            "endpointslice-controller.k8s.io"
        assert s["metadata"]["ownerReferences"][0]["kind"] == "Service"
        assert all(e["targetRef"]["kind"] == "Pod" and e.get("nodeName") for e in s["endpoints"])

    # The gate turns True: the fake kubelet reports the pod Ready and it joins the ready addresses.
    pod = await api.get("pods", "gated", namespace)
    pod["status"]["conditions"].append({"type": GATE, "status": "True"})
    await api.update_status("pods", pod)
    await eventually(lambda: consistent(4, 0), "endpoints to include the now ready pod")
    assert condition(await api.get("pods", "gated", namespace), "Ready") == "True"

    # Scale down: removed pods leave the endpoints.
    await api.patch("deployments.apps", "backend", {"spec": {"replicas": 1}}, namespace)
    await eventually(lambda: consistent(2, 0), "endpoints to follow the scale-down")


@needs_kubectl
async def test_deleting_a_namespace_empties_then_removes_it(local_cluster: UpCluster, api: APIClient) -> None:
    ns = f"it-doomed-{uuid.uuid4().hex[:6]}"
    await api.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    await api.create("deployments.apps", deployment_manifest("app", 3), ns)
    await api.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                                    "data": {"k": "v"}}, ns)
    await api.create("services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "app"},
                                  "spec": {"selector": {"app": "app"}, "ports": [{"port": 80}]}}, ns)
    await wait_available(api, ns, "app", 3)

    local_cluster.kubectl("delete", "namespace", ns, "--wait=false")
    got = await api.get("namespaces", ns)
    assert got["status"]["phase"] == "Terminating"

    async def gone() -> bool:
        return await api.get_or_none("namespaces", ns) is None

    await eventually(gone, f"namespace {ns} to be removed", timeout=90)
    for kind in ("pods", "deployments.apps", "replicasets.apps", "configmaps", "services", "endpoints",
                 "serviceaccounts"):
        items, _ = await api.list_all(kind, ns)
        assert items == [], f"{kind} left in the deleted namespace: {[i['metadata']['name'] for i in items]}"
