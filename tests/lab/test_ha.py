"""HA (``MASTERS=3``): three etcd members, an API server on every master, one leader each for the
scheduler and the controller-manager; with any one master stopped, kubelets, kube-proxies and kubectl keep
working; restarted, the master rejoins.

The master stopped is the one whose controller-manager leads, so a new leader must take over before the
new Deployment gets pods. kubectl runs on a surviving master with its admin.conf (its own API server);
the host's `.lab/admin.kubeconfig` names the first master, and reaches another with ``--server``. Workers
reach the API through their fail-over listener (127.0.0.1:6443), which skips a master that refuses.

`lab/test-lab.sh` runs this file on a second lab of 3 masters and 2 workers, with the placement tests.
"""

from __future__ import annotations

import json
import secrets
import shlex
import time
from typing import Any

import pytest

from tests.lab.conftest import E2E, LAB, REPO, record_phase, run, timed, wait_for
from tests.lab.test_smoke import Kubectl, fetch, web_app

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not E2E, reason="stops and restarts a master: end to end only (make test-lab)"),
]

ETCDCTL = ("ETCDCTL_API=3 etcdctl --cacert /etc/minikube-py/pki/etcd/ca.crt "
           "--cert /etc/minikube-py/pki/etcd/healthcheck-client.crt "
           "--key /etc/minikube-py/pki/etcd/healthcheck-client.key")


@pytest.fixture(scope="module")
def masters(lab_groups: dict[str, list[str]]) -> list[str]:
    if len(lab_groups["masters"]) < 3:
        pytest.skip("needs a lab of 3 masters (MASTERS=3); make test-lab brings one up for this file")
    return lab_groups["masters"]


def etcd_health(host: Any, addresses: list[str]) -> dict[str, bool]:
    endpoints = ",".join(f"https://{a}:2379" for a in addresses)
    result = host.run(f"{ETCDCTL} --endpoints {endpoints} endpoint health -w json")
    try:
        return {e["endpoint"]: bool(e.get("health")) for e in json.loads(result.stdout or "[]")}
    except ValueError:
        return {}


def leader(system: Kubectl, lease: str) -> str:
    """The machine whose component holds a lease of ``system``'s namespace (holderIdentity is '<host>_<id>')."""
    holder = system.run("get", "lease", lease, "-o", "jsonpath={.spec.holderIdentity}").stdout
    return str(holder).split("_", 1)[0]


def test_every_master_is_an_etcd_member_and_all_are_healthy(masters: list[str], lab_host: Any,
                                                            lab_addresses: dict[str, str]) -> None:
    host = lab_host(masters[0])
    members = host.run(f"{ETCDCTL} --endpoints https://127.0.0.1:2379 member list -w json")
    assert members.rc == 0, members.stderr
    names = sorted(m["name"] for m in json.loads(members.stdout)["members"])
    assert names == sorted(masters)
    health = etcd_health(host, [lab_addresses[m] for m in masters])
    assert len(health) == 3 and all(health.values()), health


def test_one_scheduler_and_one_controller_manager_lead(masters: list[str], lab_host: Any) -> None:
    kubectl = Kubectl(lab_host(masters[0]), "kube-system")
    for lease in ("kube-scheduler", "kube-controller-manager"):
        assert leader(kubectl, lease) in masters, lease


def test_the_cluster_keeps_working_with_one_master_stopped(masters: list[str], lab_groups: dict[str, list[str]],
                                                           lab_host: Any, lab_addresses: dict[str, str]) -> None:
    probe = Kubectl(lab_host(masters[0]), "kube-system")
    victim = leader(probe, "kube-controller-manager")
    survivor = next(m for m in masters if m != victim)
    system = Kubectl(lab_host(survivor), "kube-system")
    kubectl = Kubectl(lab_host(survivor), f"ha-{secrets.token_hex(3)}")
    workers = lab_groups["workers"]
    renewed_before = {w: kubectl.run("-n", "kube-node-lease", "get", "lease", w,
                                     "-o", "jsonpath={.spec.renewTime}").stdout for w in workers}

    timed(["vagrant", "halt", victim], f"halt {victim}", timeout=300)
    try:
        stopped_at = time.monotonic()
        # kubectl on a surviving master; the host's kubectl, pointed at that master.
        kubectl.run("create", "namespace", kubectl.namespace)
        host_kubectl = run([str(REPO / ".venv" / "bin" / "kubectl"), "--kubeconfig",
                            str(REPO / ".lab" / "admin.kubeconfig"), "--server",
                            f"https://{lab_addresses[survivor]}:6443", "get", "namespace", kubectl.namespace])
        assert host_kubectl.returncode == 0, host_kubectl.stderr

        # Leader election: the leases move to the masters that are left.
        for lease in ("kube-controller-manager", "kube-scheduler"):
            wait_for(f"a new {lease} leader", lambda lease=lease: leader(system, lease) not in ("", victim) or None,
                     timeout=90)

        # A new Deployment and Service: the controller-manager makes pods, the scheduler places them,
        # kubelets run them and report through their fail-over listener, kube-proxies program the Service.
        kubectl.apply(*web_app("ha-web", len(workers)))
        wait_for("the ha-web replicas available",
                 lambda: kubectl.get("deployment", "ha-web").get("status", {}).get("availableReplicas")
                 == len(workers) or None, timeout=180)
        cluster_ip = kubectl.get("service", "ha-web")["spec"]["clusterIP"]
        for worker in workers:
            body = wait_for(f"http://{cluster_ip}/ from {worker}",
                            lambda w=worker: fetch(lab_host(w), f"http://{cluster_ip}/"), timeout=60)
            assert body.startswith("demo/web 1.0: pod=ha-web-"), (worker, body)

        # The kubelets keep their node leases renewed, and the nodes stay Ready.
        for worker in workers:
            wait_for(f"{worker}'s node lease renewed", lambda w=worker: kubectl.run(
                "-n", "kube-node-lease", "get", "lease", w, "-o", "jsonpath={.spec.renewTime}").stdout
                != renewed_before[w] or None, timeout=60)
        nodes = kubectl.get("nodes")["items"]
        ready = {n["metadata"]["name"]: any(c["type"] == "Ready" and c["status"] == "True"
                                            for c in n["status"]["conditions"]) for n in nodes}
        assert ready == {w: True for w in workers}, ready
        record_phase(f"working without {victim}", time.monotonic() - stopped_at)
    finally:
        # Back up (vagrant up starts the halted machine; its units are enabled) for the next tests.
        timed([str(LAB / "lab-up.sh")], f"restart {victim}", timeout=600)
        kubectl.run("delete", "namespace", kubectl.namespace, "--wait=false", check=False)


READYZ = ("import ssl, urllib.request; print(urllib.request.urlopen('https://127.0.0.1:6443/readyz', "
          "context=ssl._create_unverified_context(), timeout=5).read().decode())")


def test_the_stopped_master_rejoins(masters: list[str], lab_host: Any, lab_addresses: dict[str, str]) -> None:
    host = lab_host(masters[0])
    addresses = [lab_addresses[m] for m in masters]

    def all_members_healthy() -> dict[str, bool] | None:
        health = etcd_health(host, addresses)
        return health if len(health) == 3 and all(health.values()) else None

    wait_for("all three etcd members healthy", all_members_healthy, timeout=120)
    for master in masters:
        def ready(m: str = master) -> str | None:
            result = lab_host(m).run(f"python3 -c {shlex.quote(READYZ)}")
            return str(result.stdout).strip() if result.rc == 0 else None

        assert wait_for(f"{master}'s API server ready", ready, timeout=120) == "ok"
