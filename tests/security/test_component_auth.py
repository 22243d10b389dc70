"""The controller-manager's (10257) and the scheduler's (10259) secure ports as the real processes serve
them: /healthz, /readyz, /livez to anyone; /metrics only to callers the API server vouches for (a
client certificate of the cluster CA or a token, via TokenReview) and RBAC allows (``get /metrics``,
e.g. ``system:monitoring``), with kube-apiserver's 401/403 Status bodies."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.apiserver.conftest import REPO, LocalAPIServer
from tests.helpers import stop_process

from .conftest import USERS
from .delegated_harness import bind_cluster_role, client_context, client_pair, delegating_apiserver

COMPONENTS = {
    "controller-manager": (["controller-manager", "--controllers", "serviceaccount-controller"],
                           r"serving health on port (\d+)"),
    "scheduler": (["scheduler"], r"serving health and metrics on port (\d+)"),
}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAPIServer]:
    with delegating_apiserver(tmp_path_factory.mktemp("component-auth") / "data") as server:
        bind_cluster_role(server, "erin-monitoring", "system:monitoring", "User", "erin")
        yield server


@pytest.fixture(scope="module", params=sorted(COMPONENTS))
def component(request: pytest.FixtureRequest, api: LocalAPIServer, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[str]:
    """The component's https://127.0.0.1:PORT, started with the cluster CA as its client CA."""
    args, ready = COMPONENTS[request.param]
    log_path = tmp_path_factory.mktemp(request.param) / "component.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "minikube_py", *args, "--kubeconfig", str(api.kubeconfig),
                                 "--secure-port", "0", "--client-ca-file", str(api.ca_file)],
                                stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(ready, line)
        assert match, f"{request.param} did not start: {line!r}; log: {log_path.read_text()[-3000:]}"
        yield f"https://127.0.0.1:{match.group(1)}"
    finally:
        stop_process(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def fetch(url: str, api: LocalAPIServer, *, token: str | None = None,
          cert: tuple[Path, Path] | None = None) -> httpx.Response:
    # The components serve a self-signed certificate of their own, as kube-scheduler does.
    ctx = client_context(api, cert, verify=False)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(verify=ctx, timeout=30.0, headers=headers) as c:
        return c.get(url)


def test_health_is_open_to_anyone(component: str, api: LocalAPIServer) -> None:
    for path in ("/healthz", "/livez", "/readyz"):
        r = fetch(component + path, api)
        assert (r.status_code, r.text) == (200, "ok"), path


def test_anonymous_metrics_get_401(component: str, api: LocalAPIServer) -> None:
    r = fetch(component + "/metrics", api)
    assert r.status_code == 401
    assert r.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    assert fetch(component + "/healthz/ping", api).status_code == 401  # only the listed paths are open
    assert fetch(component + "/metrics", api, token="forged-token").status_code == 401


def test_a_user_without_rbac_gets_403(component: str, api: LocalAPIServer) -> None:
    r = fetch(component + "/metrics", api, token=USERS["bob"])
    assert r.status_code == 403
    status = r.json()
    assert status["reason"] == "Forbidden" and status["code"] == 403 and status["details"] == {}
    assert status["message"] == 'forbidden: User "bob" cannot get path "/metrics"'


def test_system_monitoring_may_scrape(component: str, api: LocalAPIServer, tmp_path: Path) -> None:
    r = fetch(component + "/metrics", api, token=USERS["erin"])
    assert r.status_code == 200 and "# TYPE" in r.text
    # The same by client certificate: the group system:monitoring is bound to the role.
    scraper = client_pair(api, tmp_path, "scraper", "prometheus", ("system:monitoring",))
    r = fetch(component + "/metrics", api, cert=scraper)
    assert r.status_code == 200 and "# TYPE" in r.text
    nobody = client_pair(api, tmp_path, "nobody", "nobody")
    r = fetch(component + "/metrics", api, cert=nobody)
    assert r.status_code == 403 and r.json()["message"] == 'forbidden: User "nobody" cannot get path "/metrics"'


def test_admin_may_scrape(component: str, api: LocalAPIServer) -> None:
    assert fetch(component + "/metrics", api, token=api.token).status_code == 200


def test_bad_auth_flags_are_one_line_errors(api: LocalAPIServer, tmp_path: Path) -> None:
    for args in COMPONENTS.values():
        res = subprocess.run([sys.executable, "-m", "minikube_py", *args[0], "--kubeconfig", str(api.kubeconfig),
                              "--client-ca-file", str(tmp_path / "missing.crt")],
                             capture_output=True, text=True, cwd=REPO, timeout=60)
        assert res.returncode == 2 and res.stderr.strip().endswith(
            f"--client-ca-file {tmp_path / 'missing.crt'}: no such file"), res.stderr
        res = subprocess.run([sys.executable, "-m", "minikube_py", *args[0], "--kubeconfig", str(api.kubeconfig),
                              "--authorization-always-allow-paths", "healthz"],
                             capture_output=True, text=True, cwd=REPO, timeout=60)
        assert res.returncode == 2 and "always-allow path 'healthz' must start with /" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr
