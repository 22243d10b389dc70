"""The provisioned lab works end to end: nodes Ready, a demo/web Deployment on the workers, its Service by
ClusterIP from every worker and by NodePort on every worker's address, kubectl logs/exec from the master,
and a deleted pod replaced.

kubectl runs on the first master with /etc/minikube-py/admin.conf; HTTP checks run on the machines with
their python3 (the box has no curl). Everything lives in a namespace of its own, deleted at the end.
"""

from __future__ import annotations

import json
import secrets
import shlex
from collections.abc import Iterator
from typing import Any

import pytest

from tests.lab.conftest import wait_for

KUBECONFIG = "/etc/minikube-py/admin.conf"
DOWNWARD_ENV = [
    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
]
FETCH = ("import sys, urllib.request; "
         "print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())")


class Kubectl:
    """kubectl on a master, in one namespace."""

    def __init__(self, host: Any, namespace: str) -> None:
        self.host = host
        self.namespace = namespace

    def run(self, *args: str, check: bool = True, stdin: str | None = None) -> Any:
        cmd = f"KUBECONFIG={KUBECONFIG} kubectl -n {self.namespace} " + " ".join(shlex.quote(a) for a in args)
        if stdin is not None:
            cmd = f"printf %s {shlex.quote(stdin)} | {cmd}"
        result = self.host.run(cmd)
        if check:
            assert result.rc == 0, f"kubectl {' '.join(args)}: rc={result.rc} {result.stderr.strip()}"
        return result

    def get(self, *args: str) -> dict[str, Any]:
        return json.loads(self.run("get", *args, "-o", "json").stdout)  # type: ignore[no-any-return]

    def apply(self, *objects: dict[str, Any]) -> None:
        self.run("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))


def fetch(host: Any, url: str) -> str:
    result = host.run(f"python3 -c {shlex.quote(FETCH)} {shlex.quote(url)}")
    assert result.rc == 0, f"{url}: {result.stderr.strip().splitlines()[-1:] or result.rc}"
    return str(result.stdout)


def web_app(name: str, replicas: int, service_type: str = "ClusterIP") -> tuple[dict[str, Any], dict[str, Any]]:
    """A demo/web Deployment (pods answer with their name, IP and node) and its Service on port 80."""
    labels = {"app": name}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"terminationGracePeriodSeconds": 2,
                                       "containers": [{"name": "web", "image": "demo/web",
                                                       "ports": [{"containerPort": 8080}], "env": DOWNWARD_ENV}]}}}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
               "spec": {"type": service_type, "selector": labels,
                        "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}
    return deployment, service


@pytest.fixture(scope="module")
def kubectl(lab_groups: dict[str, list[str]], lab_host: Any) -> Iterator[Kubectl]:
    namespace = f"smoke-{secrets.token_hex(3)}"
    k = Kubectl(lab_host(lab_groups["masters"][0]), namespace)
    k.run("create", "namespace", namespace)
    try:
        yield k
    finally:
        k.run("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def web(kubectl: Kubectl, lab_groups: dict[str, list[str]]) -> dict[str, Any]:
    """A demo/web Deployment (two pods per worker) and its NodePort Service; returns the Deployment once
    every replica is available."""
    replicas = 2 * len(lab_groups["workers"])
    kubectl.apply(*web_app("web", replicas, service_type="NodePort"))

    def available() -> dict[str, Any] | None:
        dep = kubectl.get("deployment", "web")
        return dep if dep.get("status", {}).get("availableReplicas") == replicas else None

    return wait_for(f"{replicas} available web replicas", available, timeout=180)


def running_pods(kubectl: Kubectl) -> list[dict[str, Any]]:
    return [p for p in kubectl.get("pods", "-l", "app=web")["items"]
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


def test_every_worker_is_a_ready_node_and_no_master_is(kubectl: Kubectl, lab_groups: dict[str, list[str]],
                                                      lab_addresses: dict[str, str]) -> None:
    def ready_nodes() -> dict[str, Any] | None:
        nodes = {n["metadata"]["name"]: n for n in kubectl.get("nodes")["items"]}
        ready = all(c["status"] == "True" for n in nodes.values()
                    for c in n["status"].get("conditions", []) if c["type"] == "Ready")
        return nodes if ready and set(nodes) == set(lab_groups["workers"]) else None

    nodes = wait_for("every worker Ready", ready_nodes, timeout=60)
    for name, node in nodes.items():
        addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
        assert addresses["InternalIP"] == lab_addresses[name]
        assert node["spec"].get("podCIDR", "").startswith("10.244.")


def test_web_runs_on_workers_only(kubectl: Kubectl, web: dict[str, Any], lab_groups: dict[str, list[str]]) -> None:
    pods = running_pods(kubectl)
    assert len(pods) == web["spec"]["replicas"]
    assert {p["spec"]["nodeName"] for p in pods} <= set(lab_groups["workers"])


def test_cluster_ip_answers_from_every_worker(kubectl: Kubectl, web: dict[str, Any],
                                              lab_groups: dict[str, list[str]], lab_host: Any) -> None:
    cluster_ip = kubectl.get("service", "web")["spec"]["clusterIP"]
    for worker in lab_groups["workers"]:
        body = wait_for(f"http://{cluster_ip}/ from {worker}",
                        lambda w=worker: fetch(lab_host(w), f"http://{cluster_ip}/"), timeout=60)
        assert body.startswith("demo/web 1.0: pod=web-"), (worker, body)


def test_node_port_answers_on_every_worker(kubectl: Kubectl, web: dict[str, Any], lab_groups: dict[str, list[str]],
                                           lab_addresses: dict[str, str], lab_host: Any) -> None:
    port = kubectl.get("service", "web")["spec"]["ports"][0]["nodePort"]
    master = lab_host(lab_groups["masters"][0])
    for worker in lab_groups["workers"]:
        url = f"http://{lab_addresses[worker]}:{port}/"
        body = wait_for(f"{url} from the master", lambda u=url: fetch(master, u), timeout=60)
        assert body.startswith("demo/web 1.0: pod=web-"), (worker, body)


def test_logs_and_exec_from_the_master(kubectl: Kubectl, web: dict[str, Any]) -> None:
    pod = running_pods(kubectl)[0]["metadata"]["name"]
    logs = kubectl.run("logs", pod).stdout
    assert "demo/web 1.0 listening on port 8080" in logs
    assert kubectl.run("exec", pod, "--", "echo", "exec-works").stdout.strip() == "exec-works"
    env = kubectl.run("exec", pod, "--", "sh", "-c", "echo $POD_NAME").stdout.strip()
    assert env == pod


def test_deleted_pod_is_replaced(kubectl: Kubectl, web: dict[str, Any], lab_groups: dict[str, list[str]]) -> None:
    replicas = web["spec"]["replicas"]
    victim = running_pods(kubectl)[0]["metadata"]["name"]
    kubectl.run("delete", "pod", victim, "--wait=false")

    def replaced() -> list[dict[str, Any]] | None:
        pods = running_pods(kubectl)
        names = {p["metadata"]["name"] for p in pods}
        return pods if len(pods) == replicas and victim not in names else None

    pods = wait_for(f"{victim} replaced", replaced, timeout=120)
    assert {p["spec"]["nodeName"] for p in pods} <= set(lab_groups["workers"])
