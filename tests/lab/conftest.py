"""The lab tests boot Debian machines (vagrant-lxc) and need root: they run with ``make test-lab``
(``pytest tests/lab``), not as part of the default ``pytest`` run, which collects ``tests/``."""

from __future__ import annotations

from pathlib import Path

import pytest

LAB_TESTS = Path(__file__).resolve().parent


def _named_explicitly(config: pytest.Config) -> bool:
    for arg in config.args:
        path = Path(str(arg).split("::", 1)[0]).resolve()
        if path == LAB_TESTS or LAB_TESTS in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.resolve() != LAB_TESTS and not _named_explicitly(config):
        return True
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab: boots the Vagrant lab (make test-lab)")
