"""A real API server for the client tests (the apiserver tests' helper), a client on it, and a fresh
namespace per test so that tests never see each other's objects."""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from minikube_py.client.rest import APIClient
from tests import helpers
from tests.apiserver.conftest import LocalAPIServer, running_apiserver


@pytest.fixture(scope="session")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAPIServer]:
    with running_apiserver(tmp_path_factory.mktemp("client-apiserver") / "data") as server:
        yield server


eventually = functools.partial(helpers.eventually, interval=0.02)


@pytest.fixture
async def client(apiserver: LocalAPIServer) -> AsyncIterator[APIClient]:
    c = apiserver.api_client()
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def ns(client: APIClient) -> str:
    name = f"client-{uuid.uuid4().hex[:8]}"
    await client.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def configmap(name: str, namespace: str | None = None, **data: str) -> dict[str, object]:
    meta: dict[str, object] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}
