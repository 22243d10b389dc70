"""Fixtures for the store contract suite: every test runs against both backends."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from minikube_py.store import Store

from .etcd_harness import EtcdCluster, etcd_available

# Small enough that the slow-watcher tests overflow it quickly; both backends honour it.
TEST_WATCH_BUFFER = 64


def _watch_buffer(request: pytest.FixtureRequest) -> int:
    """``@pytest.mark.watch_buffer(N)`` for tests about ordering rather than dropping: on a loaded
    machine one etcd watch response can carry more than 64 events, which is a legitimate drop."""
    marker = request.node.get_closest_marker("watch_buffer")
    return int(marker.args[0]) if marker else TEST_WATCH_BUFFER


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    if not etcd_available():
        pytest.skip("etcd is not installed (Debian package etcd-server; `make test` installs it)")
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"), members=1)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "etcd"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if backend == "sqlite":
        from minikube_py.store.sqlite import SqliteStore

        s: Store = await SqliteStore.open(str(tmp_path / "store.db"), watch_buffer=_watch_buffer(request))
    else:
        from minikube_py.store.etcd import EtcdStore

        cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
        s = await EtcdStore.open(cluster.endpoints, watch_buffer=_watch_buffer(request))
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own: the etcd member is shared across the session."""
    return f"/test/{uuid.uuid4().hex[:12]}/"
