"""A real API server for the scheduler's integration tests, and a scheduler running against it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from minikube_py.client import APIClient, ApiStatusError
from minikube_py.scheduler.scheduler import Scheduler
from tests.apiserver.conftest import LocalAPIServer, running_apiserver
from tests.helpers import eventually

REPO = Path(__file__).resolve().parents[2]
_names = itertools.count()


@pytest.fixture(scope="module")
def sched_apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAPIServer]:
    with running_apiserver(tmp_path_factory.mktemp("sched-apiserver") / "data") as server:
        yield server


@dataclass
class Cluster:
    client: APIClient
    scheduler: Scheduler
    namespace: str
    server: LocalAPIServer

    async def add_node(self, manifest: dict[str, Any]) -> None:
        """Register a node as a kubelet does: POST it, then PUT its status (a POST keeps none)."""
        created = await self.client.create("nodes", manifest)
        created["status"] = manifest["status"]
        await self.client.update_status("nodes", created)

    async def add_pod(self, manifest: dict[str, Any]) -> dict[str, Any]:
        manifest["metadata"]["namespace"] = self.namespace
        manifest["metadata"].pop("uid", None)
        return await self.client.create("pods", manifest, self.namespace)

    async def pod(self, name: str) -> dict[str, Any]:
        return await self.client.get("pods", name, self.namespace)

    async def wait_for(self, check: Callable[[], Any], within: float = 20.0, what: str = "condition") -> Any:
        """Poll ``check`` (sync or async) until it returns something truthy."""
        return await eventually(check, what, timeout=within, interval=0.05)

    async def bound(self, *names: str, within: float = 20.0) -> dict[str, str]:
        """Wait until every named pod has a node; returns pod -> node."""

        async def check() -> dict[str, str] | None:
            pods, _ = await self.client.list_all("pods", self.namespace)
            placed = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in pods}
            if all(placed.get(n) for n in names):
                return {n: placed[n] for n in names}
            return None

        return await self.wait_for(check, within, f"pods {names} to be bound")

    async def events(self, pod: str, reason: str | None = None) -> list[dict[str, Any]]:
        items, _ = await self.client.list_all("events", self.namespace)
        return [
            e
            for e in items
            if e["involvedObject"]["name"] == pod and (reason is None or e["reason"] == reason)
        ]


@pytest.fixture
async def cluster(sched_apiserver: LocalAPIServer) -> AsyncIterator[Cluster]:
    """A scheduler (in this process, fast back-off) and a fresh namespace; the test's pods and every node
    are deleted afterwards so that the next test starts from an empty cluster."""
    client = sched_apiserver.api_client()
    namespace = f"sched-{next(_names)}"
    await client.create(
        "namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    )
    scheduler = Scheduler(client, initial_backoff=0.05, max_backoff=0.2, seed=7)
    task = asyncio.create_task(scheduler.run())
    try:
        await scheduler.nodes.wait_synced(10)
        yield Cluster(client, scheduler, namespace, sched_apiserver)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await scheduler.stop()
        pods, _ = await client.list_all("pods", namespace)
        for p in pods:
            with contextlib.suppress(ApiStatusError):
                await client.delete("pods", p["metadata"]["name"], namespace, grace_period_seconds=0)
        nodes, _ = await client.list_all("nodes")
        for n in nodes:
            with contextlib.suppress(ApiStatusError):
                await client.delete("nodes", n["metadata"]["name"])
        await client.close()
