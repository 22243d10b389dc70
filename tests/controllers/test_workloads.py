"""The Deployment, ReplicaSet and DaemonSet controllers against a real API server, plus the pure pod
helpers they share. Pods are made Ready by the stand-in kubelet of workload_fixtures."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from minikube_py.client.informer import Informer
from minikube_py.controllers import podutil
from minikube_py.controllers.daemonset import node_placement
from tests.apiserver.conftest import KUBECTLS, Kubectl
from tests.controllers.workload_fixtures import (  # noqa: F401 -- fixtures
    UNREADY_LABEL,
    Cluster,
    cluster_fixture,
    eventually,
    pod_template,
    workload_apiserver,
)

DEPLOY, RS, DS = "deployments.apps", "replicasets.apps", "daemonsets.apps"


# ---- pure helpers -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "total", "up", "want"), [
    ("25%", 10, True, 3), ("25%", 10, False, 2), ("0%", 10, True, 0), (3, 10, False, 3), ("3", 7, True, 3),
    ("100%", 7, False, 7), ("1%", 1, True, 1), ("1%", 1, False, 0),
])
def test_int_or_percent_rounds_like_kubernetes(value: Any, total: int, up: bool, want: int) -> None:
    assert podutil.int_or_percent(value, total, up) == want


@pytest.mark.parametrize("bad", ["25", "x%", "-1%", "1.5", True])
def test_int_or_percent_rejects_bad_values(bad: Any) -> None:
    if bad == "25":
        assert podutil.int_or_percent(bad, 10, True) == 25  # a digit string is an int, as intstr parses it
        return
    with pytest.raises(podutil.InvalidSpec):
        podutil.int_or_percent(bad, 10, True)


def test_slow_start_batches_double() -> None:
    assert podutil.slow_start_batches(10) == [1, 2, 4, 3]
    assert podutil.slow_start_batches(0) == []
    assert sum(podutil.slow_start_batches(500)) == 500


def test_template_hash_is_stable_and_ignores_nothing_but_the_hash_label() -> None:
    a = pod_template("web", "demo/web:1")
    b = pod_template("web", "demo/web:2")
    assert podutil.template_hash(a) == podutil.template_hash(pod_template("web", "demo/web:1"))
    assert podutil.template_hash(a) != podutil.template_hash(b)
    assert podutil.template_hash(a, 1) != podutil.template_hash(a)
    assert set(podutil.template_hash(a)) <= set("bcdfghjklmnpqrstvwxz2456789")
    hashed = pod_template("web", "demo/web:1")
    hashed["metadata"]["labels"]["pod-template-hash"] = "abc"
    assert podutil.templates_equal(a, hashed)
    assert not podutil.templates_equal(a, b)
    # kubectl rollout undo sends the template back with "creationTimestamp": null (Go's zero time).
    undone = pod_template("web", "demo/web:1")
    undone["metadata"]["creationTimestamp"] = None
    undone["spec"]["volumes"] = []
    assert podutil.templates_equal(a, undone)
    assert podutil.template_hash(undone) == podutil.template_hash(a)


def _pod(name: str, *, node: str | None = None, phase: str = "Running", ready: bool = True,
         ready_since: str = "2026-01-01T00:00:00Z", created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
            "spec": {"nodeName": node} if node else {},
            "status": {"phase": phase, "conditions": [
                {"type": "Ready", "status": str(ready), "lastTransitionTime": ready_since}]}}


def test_surplus_pods_go_least_useful_first() -> None:
    pods = [
        _pod("ready-old", node="n", created="2026-01-01T00:00:00Z"),
        _pod("ready-new", node="n", created="2026-01-02T00:00:00Z", ready_since="2026-01-02T00:00:00Z"),
        _pod("not-ready", node="n", ready=False),
        _pod("pending", node="n", phase="Pending", ready=False),
        _pod("unscheduled", phase="Pending", ready=False),
    ]
    order = [p["metadata"]["name"] for p in sorted(pods, key=podutil.deletion_rank)]
    assert order == ["unscheduled", "pending", "not-ready", "ready-new", "ready-old"]


def test_availability_needs_min_ready_seconds() -> None:
    pod = _pod("p", ready_since="2026-01-01T00:00:00Z")
    since = podutil.parse_time("2026-01-01T00:00:00Z")
    assert since is not None
    assert podutil.is_available(pod, 10, now=since + 11)
    assert not podutil.is_available(pod, 10, now=since + 5)
    assert not podutil.is_available(_pod("q", ready=False), 0)


def test_expectations_wait_for_own_creations_and_deletions() -> None:
    e = podutil.Expectations()
    assert e.satisfied("ns/rs")
    e.expect_creations("ns/rs", 2)
    e.creation_observed("ns/rs")
    assert not e.satisfied("ns/rs")
    e.creation_observed("ns/rs")
    assert e.satisfied("ns/rs")
    e.expect_deletions("ns/rs", ["ns/a", "ns/b"])
    e.deletion_observed("ns/rs", "ns/a")
    assert not e.satisfied("ns/rs")
    e.deletion_observed("ns/rs", "ns/b")
    assert e.satisfied("ns/rs")
    stale = podutil.Expectations(ttl=0.0)
    stale.expect_creations("k", 5)
    time.sleep(0.01)
    assert stale.satisfied("k")  # expectations expire: a lost event cannot wedge a controller


def test_daemonset_placement_honours_selector_affinity_and_taints() -> None:
    ds = {"spec": {"template": {"spec": {"nodeSelector": {"disk": "ssd"}}}}}
    ssd = {"metadata": {"name": "a", "labels": {"disk": "ssd"}}, "spec": {}}
    hdd = {"metadata": {"name": "b", "labels": {"disk": "hdd"}}, "spec": {}}
    assert node_placement(ds, ssd) == (True, True)
    assert node_placement(ds, hdd) == (False, False)
    tainted = {"metadata": {"name": "c", "labels": {"disk": "ssd"}},
               "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}
    assert node_placement(ds, tainted) == (False, True)  # NoSchedule keeps new pods off, evicts none
    tainted["spec"]["taints"][0]["effect"] = "NoExecute"
    assert node_placement(ds, tainted) == (False, False)
    # The standard daemon tolerations: an unschedulable or not-ready node still gets its daemon.
    cordoned = {"metadata": {"name": "d", "labels": {"disk": "ssd"}},
                "spec": {"unschedulable": True, "taints": [
                    {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
                    {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]}}
    assert node_placement(ds, cordoned) == (True, True)
    affinity = {"spec": {"template": {"spec": {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd"]}]}]}}}}}}}
    assert node_placement(affinity, hdd) == (True, True)
    assert node_placement(affinity, ssd) == (False, False)


# ---- Deployment ------------------------------------------------------------------------------------

async def _sets(c: Cluster, app: str) -> list[dict[str, Any]]:
    items, _ = await c.client.list_all(RS, c.ns, label_selector=f"app={app}")
    return sorted(items, key=lambda rs: rs["metadata"]["name"])


def _revision(obj: dict[str, Any]) -> str | None:
    return (obj["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision")


async def test_deployment_reaches_ten_available(cluster: Cluster) -> None:
    c = cluster
    await c.client.create(DEPLOY, c.deployment("web", 10))
    d = await eventually(lambda: c.rollout_done("web"), what="10 available replicas")
    st = d["status"]
    assert st["availableReplicas"] == st["readyReplicas"] == 10 and st["unavailableReplicas"] == 0
    conds = {cond["type"]: cond for cond in st["conditions"]}
    assert conds["Available"]["status"] == "True"
    assert conds["Available"]["reason"] == "MinimumReplicasAvailable"
    assert conds["Progressing"]["reason"] == "NewReplicaSetAvailable"
    assert _revision(d) == "1"
    [rs] = await _sets(c, "web")
    hash_ = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"web-{hash_}"
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": hash_}
    assert rs["metadata"]["ownerReferences"][0]["uid"] == d["metadata"]["uid"]
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] == "10"
    # 25% surge of 10 rounds up: at most 13 pods.
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"] == "13"
    assert rs["status"]["availableReplicas"] == 10 and rs["status"]["fullyLabeledReplicas"] == 10
    pods = await c.pods("app=web")
    assert len(pods) == 10
    for pod in pods:
        assert pod["metadata"]["generateName"] == f"{rs['metadata']['name']}-"
        [ref] = pod["metadata"]["ownerReferences"]
        assert ref["uid"] == rs["metadata"]["uid"] and ref["controller"] and ref["blockOwnerDeletion"]
    events, _ = await c.client.list_all("events", c.ns)
    messages = [e["message"] for e in events if e["reason"] == "ScalingReplicaSet"]
    assert f"Scaled up replica set {rs['metadata']['name']} to 10" in messages


class AvailabilityMonitor:
    """Watches the pods of one app and records, after every event, how many are available (ready and
    not terminating) and how many exist (not terminating), per pod-template-hash."""

    def __init__(self, c: Cluster, app: str) -> None:
        self.informer = Informer(c.client, "pods", c.ns, label_selector=f"app={app}")
        self.min_available: int | None = None
        self.max_total = 0
        self.mixed = False  # pods of two templates alive at once
        self.recording = False
        h = lambda *_: self._observe()  # noqa: E731
        self.informer.add_handlers(h, h, h)

    def available(self) -> int:
        return sum(1 for p in self.informer.list() if podutil.is_ready(p) and not podutil.is_terminating(p))

    def _observe(self) -> None:
        if not self.recording:
            return
        alive = [p for p in self.informer.list() if (p.get("status") or {}).get("phase") not in ("Succeeded",
                                                                                                 "Failed")]
        available = self.available()
        self.min_available = available if self.min_available is None else min(self.min_available, available)
        self.max_total = max(self.max_total, sum(1 for p in alive if not podutil.is_terminating(p)))
        if len({p["metadata"]["labels"].get("pod-template-hash") for p in alive}) > 1:
            self.mixed = True

    async def __aenter__(self) -> AvailabilityMonitor:
        await self.informer.start()
        await self.informer.wait_synced(30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.informer.stop()


async def test_rolling_update_keeps_availability_then_undo_restores_old_set(cluster: Cluster) -> None:
    c = cluster
    await c.client.create(DEPLOY, c.deployment("web", 10))
    await eventually(lambda: c.rollout_done("web"), what="first rollout")
    [first] = await _sets(c, "web")
    async with AvailabilityMonitor(c, "web") as monitor:
        await eventually(lambda: monitor.available() == 10, what="monitor sees 10")
        monitor.recording = True
        assert c.kubelet is not None
        c.kubelet.ready_delay = 0.3  # new pods take a while: the controller must wait for them
        await c.client.patch(DEPLOY, "web", {"spec": {"template": {"spec": {"containers": [
            {"name": "main", "image": "demo/web:2"}]}}}}, c.ns, patch_type="strategic")
        d = await eventually(lambda: c.rollout_done("web"), what="rolling update")
        await eventually(lambda: monitor.available() == 10 and len(monitor.informer) == 10, what="old pods gone")
    # 25% of 10: maxUnavailable rounds down to 2, maxSurge up to 3.
    print(f"rolling update: min available {monitor.min_available}, max pods {monitor.max_total}")
    assert monitor.min_available is not None and monitor.min_available >= 8, monitor.min_available
    assert monitor.max_total <= 13, monitor.max_total
    sets = {rs["metadata"]["name"]: rs for rs in await _sets(c, "web")}
    new = next(rs for name, rs in sets.items() if name != first["metadata"]["name"])
    assert sets[first["metadata"]["name"]]["spec"]["replicas"] == 0
    assert new["spec"]["replicas"] == 10 and _revision(new) == "2" and _revision(d) == "2"
    pods = await c.pods("app=web")
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"demo/web:2"}
    assert {p["metadata"]["labels"]["pod-template-hash"] for p in pods} == {
        new["metadata"]["labels"]["pod-template-hash"]}

    # kubectl rollout undo: the previous ReplicaSet's template (hash label removed) patched back.
    template = podutil.without_hash_label(sets[first["metadata"]["name"]]["spec"]["template"])
    await c.client.patch(DEPLOY, "web", [{"op": "replace", "path": "/spec/template", "value": template}],
                         c.ns, patch_type="json")
    d = await eventually(lambda: c.rollout_done("web"), what="rollback")
    sets_after = {rs["metadata"]["name"]: rs for rs in await _sets(c, "web")}
    assert set(sets_after) == set(sets), "the old ReplicaSet is reused, no new one made"
    back = sets_after[first["metadata"]["name"]]
    assert back["spec"]["replicas"] == 10 and _revision(back) == "3" and _revision(d) == "3"
    assert back["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "1"
    await eventually(lambda: _all_on(c, "web", "demo/web:1", 10), what="pods back on the old template")


async def _all_on(c: Cluster, app: str, image: str, count: int) -> bool:
    pods = await c.pods(f"app={app}")
    return len(pods) == count and all(p["spec"]["containers"][0]["image"] == image for p in pods)


async def test_recreate_never_mixes_templates(cluster: Cluster) -> None:
    c = cluster
    await c.client.create(DEPLOY, c.deployment("db", 3, strategy={"type": "Recreate"}))
    await eventually(lambda: c.rollout_done("db"), what="first rollout")
    async with AvailabilityMonitor(c, "db") as monitor:
        monitor.recording = True
        await c.client.patch(DEPLOY, "db", {"spec": {"template": {"spec": {"containers": [
            {"name": "main", "image": "demo/web:2"}]}}}}, c.ns, patch_type="strategic")
        await eventually(lambda: c.rollout_done("db"), what="recreate rollout")
        await eventually(lambda: _all_on(c, "db", "demo/web:2", 3), what="new pods only")
    assert not monitor.mixed, "Recreate started new pods while old ones were still there"
    assert monitor.min_available == 0  # Recreate takes everything down first
    assert len(await _sets(c, "db")) == 2


async def test_scale_up_and_down(cluster: Cluster) -> None:
    c = cluster
    await c.client.create(DEPLOY, c.deployment("api", 2))
    await eventually(lambda: c.rollout_done("api"), what="2 replicas")
    await c.client.patch(DEPLOY, "api", {"spec": {"replicas": 5}}, c.ns, subresource="scale")
    await eventually(lambda: c.rollout_done("api"), what="scaled to 5")
    assert len(await c.pods("app=api")) == 5
    await c.client.patch(DEPLOY, "api", {"spec": {"replicas": 1}}, c.ns)
    d = await eventually(lambda: c.rollout_done("api"), what="scaled to 1")
    await eventually(lambda: _all_on(c, "api", "demo/web:1", 1), what="one pod left")
    [rs] = await _sets(c, "api")
    assert rs["spec"]["replicas"] == 1
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] == "1"
    assert _revision(d) == "1"
    events, _ = await c.client.list_all("events", c.ns)
    want = f"Scaled down replica set {rs['metadata']['name']} to 1 from 5"
    assert any(e["message"] == want for e in events), [e["message"] for e in events]


async def test_pause_holds_the_rollout_and_resume_finishes_it(cluster: Cluster) -> None:
    c = cluster
    await c.client.create(DEPLOY, c.deployment("web", 2))
    await eventually(lambda: c.rollout_done("web"), what="first rollout")
    await c.client.patch(DEPLOY, "web", {"spec": {"paused": True}}, c.ns, patch_type="strategic")
    d = await c.client.patch(DEPLOY, "web", {"spec": {"template": {"spec": {"containers": [
        {"name": "main", "image": "demo/web:2"}]}}}}, c.ns, patch_type="strategic")

    async def paused_observed() -> dict[str, Any] | None:
        cur = await c.client.get(DEPLOY, "web", c.ns)
        st = cur.get("status") or {}
        progressing = {x["type"]: x for x in st.get("conditions") or []}.get("Progressing") or {}
        ok = st.get("observedGeneration", 0) >= d["metadata"]["generation"] and \
            progressing.get("reason") == "DeploymentPaused"
        return cur if ok else None

    await eventually(paused_observed, what="paused generation observed")
    await asyncio.sleep(0.3)  # give a wrongly progressing controller a chance to show itself
    assert len(await _sets(c, "web")) == 1, "a paused Deployment must not start a rollout"
    assert await _all_on(c, "web", "demo/web:1", 2)
    await c.client.patch(DEPLOY, "web", {"spec": {"paused": None}}, c.ns, patch_type="strategic")
    await eventually(lambda: c.rollout_done("web"), what="rollout after resume")
    await eventually(lambda: _all_on(c, "web", "demo/web:2", 2), what="new pods")


async def test_revision_history_limit_deletes_oldest_sets(cluster: Cluster) -> None:
    c = cluster
    await c.client.create(DEPLOY, c.deployment("hist", 1, revisionHistoryLimit=1))
    for version in (2, 3, 4):
        await eventually(lambda: c.rollout_done("hist"), what=f"rollout before v{version}")
        await c.client.patch(DEPLOY, "hist", {"spec": {"template": {"spec": {"containers": [
            {"name": "main", "image": f"demo/web:{version}"}]}}}}, c.ns, patch_type="strategic")
    await eventually(lambda: c.rollout_done("hist"), what="last rollout")

    async def trimmed() -> list[str] | None:
        revs = sorted(_revision(rs) or "" for rs in await _sets(c, "hist"))
        return revs if revs == ["3", "4"] else None

    await eventually(trimmed, what="only the newest old ReplicaSet kept")


async def test_progress_deadline_exceeded(cluster: Cluster) -> None:
    c = cluster
    dep = c.deployment("stuck", 1, progressDeadlineSeconds=1)
    dep["spec"]["template"]["metadata"]["labels"][UNREADY_LABEL] = "true"
    await c.client.create(DEPLOY, dep)

    async def timed_out() -> bool:
        d = await c.client.get(DEPLOY, "stuck", c.ns)
        conds = {x["type"]: x for x in (d.get("status") or {}).get("conditions") or []}
        p = conds.get("Progressing") or {}
        return p.get("reason") == "ProgressDeadlineExceeded" and p.get("status") == "False" and \
            conds.get("Available", {}).get("status") == "False"

    await eventually(timed_out, timeout=30, what="ProgressDeadlineExceeded")


# ---- kubectl rollout ---------------------------------------------------------------------------------

def _kubectl(c: Cluster, tmp_path: Any) -> Kubectl | None:
    for version in ("1.33", "pypi", "1.27"):
        if version in KUBECTLS:
            return Kubectl(KUBECTLS[version], c.server.kubeconfig, tmp_path / "kubectl-cache")
    return None


async def test_kubectl_rollout_commands(cluster: Cluster, tmp_path: Any) -> None:
    c = cluster
    kubectl = _kubectl(c, tmp_path)
    if kubectl is None:
        pytest.skip("no kubectl binary on this machine")

    async def run(*args: str, check: bool = True) -> str:
        res = await asyncio.to_thread(kubectl.run, "-n", c.ns, *args, check=check, timeout=60)
        return res.stdout + res.stderr

    await run("create", "deployment", "web", "--image=demo/web:1", "--replicas=2")
    out = await run("rollout", "status", "deployment/web", "--timeout=30s")
    assert 'deployment "web" successfully rolled out' in out
    await run("set", "image", "deployment/web", "web=demo/web:2")
    assert "successfully rolled out" in await run("rollout", "status", "deployment/web", "--timeout=30s")
    history = await run("rollout", "history", "deployment/web")
    revisions = {line.split()[0] for line in history.splitlines()[1:] if line.strip()[:1].isdigit()}
    assert "REVISION" in history and revisions == {"1", "2"}, history
    assert "demo/web:1" in await run("rollout", "history", "deployment/web", "--revision=1")
    assert "rolled back" in await run("rollout", "undo", "deployment/web")
    assert "successfully rolled out" in await run("rollout", "status", "deployment/web", "--timeout=30s")
    await eventually(lambda: _all_on(c, "web", "demo/web:1", 2), what="undo back on demo/web:1")
    sets = await _sets(c, "web")
    assert len(sets) == 2, "undo reuses the first ReplicaSet"
    assert {(_revision(rs), rs["spec"]["replicas"]) for rs in sets} == {("2", 0), ("3", 2)}
    assert "paused" in await run("rollout", "pause", "deployment/web")
    assert "resumed" in await run("rollout", "resume", "deployment/web")
    assert "restarted" in await run("rollout", "restart", "deployment/web")
    assert "successfully rolled out" in await run("rollout", "status", "deployment/web", "--timeout=30s")
    pods = await c.pods("app=web")
    assert len(pods) == 2
    assert all("kubectl.kubernetes.io/restartedAt" in (p["metadata"].get("annotations") or {}) for p in pods)


# ---- ReplicaSet --------------------------------------------------------------------------------------

def _orphan(c: Cluster, name: str, app: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": c.ns, "labels": {"app": app, **labels}},
            "spec": {"containers": [{"name": "main", "image": "demo/web:1"}]}}


async def test_replicaset_adopts_orphans_deletes_surplus_and_releases(cluster: Cluster) -> None:
    c = cluster
    for i in range(2):
        await c.client.create("pods", _orphan(c, f"ready-{i}", "cache"))
    await c.client.create("pods", _orphan(c, "unready", "cache", **{UNREADY_LABEL: "true"}))
    await eventually(lambda: _count_ready(c, "app=cache", 2), what="orphans ready")
    rs = await c.client.create(RS, {
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "cache", "namespace": c.ns},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "cache"}},
                 "template": pod_template("cache", "demo/web:1")}})

    async def settled() -> list[dict[str, Any]] | None:
        pods = await c.pods("app=cache")
        owned = [p for p in pods if (p["metadata"].get("ownerReferences") or [{}])[0].get("uid")
                 == rs["metadata"]["uid"]]
        return pods if len(pods) == 2 and len(owned) == 2 else None

    pods = await eventually(settled, what="2 adopted pods")
    assert sorted(p["metadata"]["name"] for p in pods) == ["ready-0", "ready-1"], "the unready pod goes first"
    ref = pods[0]["metadata"]["ownerReferences"][0]
    assert ref["controller"] is True and ref["kind"] == "ReplicaSet" and ref["name"] == "cache"

    # A pod relabelled out of the selector is released, and replaced.
    await c.client.patch("pods", "ready-0", {"metadata": {"labels": {"app": "other"}}}, c.ns)

    async def released() -> bool:
        pod = await c.client.get("pods", "ready-0", c.ns)
        return not pod["metadata"].get("ownerReferences") and len(await c.pods("app=cache")) == 2

    await eventually(released, what="release and replacement")

    async def status_ok() -> bool:
        cur = await c.client.get(RS, "cache", c.ns)
        st = cur.get("status") or {}
        return (st.get("replicas") == 2 and st.get("readyReplicas") == 2 and st.get("availableReplicas") == 2
                and st.get("observedGeneration") == cur["metadata"]["generation"])

    await eventually(status_ok, what="ReplicaSet status")


async def _count_ready(c: Cluster, selector: str, want: int) -> bool:
    return sum(1 for p in await c.pods(selector) if podutil.is_ready(p)) == want


async def test_replicaset_reports_create_failures(cluster: Cluster) -> None:
    c = cluster
    # Pods cannot be created in a namespace being deleted (NamespaceLifecycle): every create fails.
    ns = f"{c.ns}-doomed"
    await c.client.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    await c.client.create(RS, {
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "doomed", "namespace": ns},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "doomed"}},
                 "template": pod_template("doomed", "demo/web:1")}})
    try:
        await c.client.delete("namespaces", ns)
        await c.client.patch(RS, "doomed", {"spec": {"replicas": 3}}, ns)

        async def failed() -> dict[str, Any] | None:
            st = (await c.client.get(RS, "doomed", ns)).get("status") or {}
            return next((x for x in st.get("conditions") or [] if x["type"] == "ReplicaFailure"), None)

        cond = await eventually(failed, what="ReplicaFailure condition")
        assert cond["status"] == "True" and cond["reason"] == "FailedCreate"
        assert "being terminated" in cond["message"]
    finally:
        await c.client.delete(RS, "doomed", ns)


# ---- DaemonSet ---------------------------------------------------------------------------------------

async def test_daemonset_one_pod_per_node_and_node_selector(cluster: Cluster) -> None:
    c = cluster
    names = [f"{c.ns}-n{i}" for i in range(3)]
    await c.create_node(names[0], {"disk": "ssd"})
    await c.create_node(names[1], {"disk": "ssd"})
    await c.create_node(names[2], {"disk": "hdd"})
    template = pod_template("agent", "demo/busybox:1")
    await c.client.create(DS, {"apiVersion": "apps/v1", "kind": "DaemonSet",
                               "metadata": {"name": "agent", "namespace": c.ns},
                               "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": template}})
    ssd_template = pod_template("ssd-agent", "demo/busybox:1")
    ssd_template["spec"]["nodeSelector"] = {"disk": "ssd"}
    await c.client.create(DS, {"apiVersion": "apps/v1", "kind": "DaemonSet",
                               "metadata": {"name": "ssd-agent", "namespace": c.ns},
                               "spec": {"selector": {"matchLabels": {"app": "ssd-agent"}},
                                        "template": ssd_template}})

    async def placed(app: str, nodes: list[str]) -> bool:
        pods = await c.pods(f"app={app}")
        # Only this test's nodes: nodes other tests left behind could be in the cluster too.
        mine = sorted(p["spec"].get("nodeName") for p in pods if p["spec"].get("nodeName") in names)
        return mine == sorted(nodes) and all(podutil.is_ready(p) for p in pods)

    await eventually(lambda: placed("agent", names), what="one agent per node")
    await eventually(lambda: placed("ssd-agent", names[:2]), what="agents on ssd nodes only")
    pod = (await c.pods("app=agent"))[0]
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"
    tolerations = {(t.get("key"), t.get("effect")) for t in pod["spec"]["tolerations"]}
    assert ("node.kubernetes.io/unschedulable", "NoSchedule") in tolerations
    assert pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"][0]["matchFields"][0]["values"] == [pod["spec"]["nodeName"]]

    async def status(name: str, **want: int) -> bool:
        st = (await c.client.get(DS, name, c.ns)).get("status") or {}
        return all(st.get(k) == v for k, v in want.items())

    await eventually(lambda: status("ssd-agent", desiredNumberScheduled=2, currentNumberScheduled=2,
                                    numberReady=2, numberAvailable=2, updatedNumberScheduled=2,
                                    numberMisscheduled=0), what="ssd-agent status")

    # Relabel the hdd node: the ssd daemon follows; a NoExecute taint drives the plain agent off a node.
    await c.client.patch("nodes", names[2], {"metadata": {"labels": {"disk": "ssd"}}})
    await eventually(lambda: placed("ssd-agent", names), what="ssd agent on the relabelled node")
    await c.client.patch("nodes", names[0], {"spec": {"taints": [
        {"key": "maintenance", "value": "yes", "effect": "NoExecute"}]}})
    await eventually(lambda: placed("agent", names[1:]), what="agent evicted from the tainted node")

    # A rolling update replaces every daemon pod with the new template.
    await c.client.patch(DS, "ssd-agent", {"spec": {"template": {"spec": {"containers": [
        {"name": "main", "image": "demo/busybox:2"}]}}}}, c.ns, patch_type="strategic")

    async def rolled() -> bool:
        pods = await c.pods("app=ssd-agent")
        return (len(pods) == 2 and all(p["spec"]["containers"][0]["image"] == "demo/busybox:2" for p in pods)
                and await status("ssd-agent", updatedNumberScheduled=2, numberAvailable=2,
                                 desiredNumberScheduled=2))

    # The tainted node is off limits for ssd-agent as well (NoExecute), so two nodes remain.
    await eventually(rolled, what="daemon rolling update")
