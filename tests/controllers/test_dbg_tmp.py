import asyncio, json
from tests.controllers.test_workloads import _kubectl, _sets
from tests.controllers.workload_fixtures import *  # noqa
from minikube_py.controllers import podutil

async def test_dbg(cluster, tmp_path):
    c = cluster
    kubectl = _kubectl(c, tmp_path)
    async def run(*args):
        res = await asyncio.to_thread(kubectl.run, "-n", c.ns, *args, timeout=60)
        return res.stdout + res.stderr
    await run("create", "deployment", "web", "--image=demo/web:1", "--replicas=2")
    await run("rollout", "status", "deployment/web", "--timeout=30s")
    sets1 = await _sets(c, "web")
    d1 = await c.client.get("deployments.apps", "web", c.ns)
    await run("set", "image", "deployment/web", "web=demo/web:2")
    await run("rollout", "status", "deployment/web", "--timeout=30s")
    await run("rollout", "undo", "deployment/web")
    await run("rollout", "status", "deployment/web", "--timeout=30s")
    d = await c.client.get("deployments.apps", "web", c.ns)
    for rs in await _sets(c, "web"):
        print(rs["metadata"]["name"], rs["spec"]["replicas"], json.dumps(rs["spec"]["template"], sort_keys=True))
    print("D1", json.dumps(d1["spec"]["template"], sort_keys=True))
    print("D ", json.dumps(d["spec"]["template"], sort_keys=True))
