from tests.controllers.workload_fixtures import *  # noqa

async def test_smoke(cluster):
    c = cluster
    await c.client.create("deployments.apps", c.deployment("web", 3))
    d = await eventually(lambda: c.rollout_done("web"), timeout=20, what="rollout")
    print(d["status"])
    rs, _ = await c.client.list_all("replicasets.apps", c.ns)
    print([ (r["metadata"]["name"], r["metadata"].get("annotations")) for r in rs])
