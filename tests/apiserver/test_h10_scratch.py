import logging
import pytest
from .conftest import kubectl_param, start_apiserver, stop_apiserver, Kubectl, KUBECTLS
from .test_logs_exec import POD, run, kubelet, _create, _node, _pod, NS, NODE  # noqa: F401
from .fake_kubelet import FakeKubelet

def test_many():
    import shutil, pathlib; tmp_path = pathlib.Path("/tmp/h10/scr"); shutil.rmtree(tmp_path, ignore_errors=True); tmp_path.mkdir()
    logging.basicConfig(level=logging.DEBUG, filename=str(tmp_path / "kl.log"))
    srv = start_apiserver(tmp_path / "data", "-v")
    fake = FakeKubelet(); port = fake.start()
    try:
        _create(srv, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        _create(srv, "/api/v1/nodes", _node(NODE, port))
        _create(srv, f"/api/v1/namespaces/{NS}/pods", _pod(POD, NODE))
        k = Kubectl(KUBECTLS["pypi"], srv.kubeconfig, tmp_path / "cache")
        fails = []
        for i in range(80):
            res = run(k, "exec", POD, "--", "echo", "hello", "world")
            if res.returncode != 0:
                fails.append(res.stderr[-300:])
                break
        print("LOG", tmp_path)
        assert not fails, (len(fails), fails[:2])
    finally:
        fake.stop(); stop_apiserver(srv)
