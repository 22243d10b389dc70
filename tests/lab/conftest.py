"""The lab tests boot Debian machines (vagrant-lxc) and need root: they run with ``make test-lab``
(``pytest tests/lab``), not as part of the default ``pytest`` run, which collects ``tests/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


# ---- the provisioned lab, as testinfra hosts (test_placement.py, test_smoke.py) ----------------------

REPO = LAB_TESTS.parent.parent
INVENTORY = REPO / "inventory" / "lab.ini"
SSH_CONFIG = REPO / ".lab" / "ssh-config"
NOT_UP = "no lab inventory at {}: run `make lab-up` and `make provision` first"


def read_inventory(path: Path = INVENTORY) -> tuple[dict[str, list[str]], dict[str, str]]:
    """(group -> host names in file order, host name -> ansible_host) from an Ansible INI inventory."""
    groups: dict[str, list[str]] = {}
    addresses: dict[str, str] = {}
    section: str | None = None
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith("[") and line.endswith("]"):
            name = line[1:-1]
            section = None if ":" in name else name  # [all:vars], [x:children] hold no hosts here
            if section is not None:
                groups.setdefault(section, [])
            continue
        if section is None:
            continue
        host, *settings = line.split()
        groups[section].append(host)
        for setting in settings:
            key, _, value = setting.partition("=")
            if key == "ansible_host":
                addresses[host] = value
    return groups, addresses


def lab_groups_or_fail() -> dict[str, list[str]]:
    if not INVENTORY.exists():
        raise pytest.UsageError(NOT_UP.format(INVENTORY))
    groups, _ = read_inventory()
    for group in ("masters", "workers", "etcd"):
        if not groups.get(group):
            raise pytest.UsageError(f"{INVENTORY} has no hosts in group {group!r}")
    return groups


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test taking ``lab_machine`` runs once per lab machine, ``lab_worker`` once per worker, ``lab_master``
    once per master."""
    for fixture, group in (("lab_machine", "all"), ("lab_worker", "workers"), ("lab_master", "masters")):
        if fixture in metafunc.fixturenames:
            groups = lab_groups_or_fail()
            names = list(dict.fromkeys(h for g in groups.values() for h in g)) if group == "all" else groups[group]
            metafunc.parametrize(fixture, names)


@pytest.fixture(scope="session")
def lab_groups() -> dict[str, list[str]]:
    return lab_groups_or_fail()


@pytest.fixture(scope="session")
def lab_addresses() -> dict[str, str]:
    lab_groups_or_fail()
    return read_inventory()[1]


@pytest.fixture(scope="session")
def lab_host() -> Any:
    """name -> testinfra host over ssh with .lab/ssh-config (ControlPersist keeps it fast), as root."""
    import testinfra

    if not SSH_CONFIG.exists():
        raise pytest.UsageError(NOT_UP.format(SSH_CONFIG))
    cache: dict[str, Any] = {}

    def get(name: str) -> Any:
        if name not in cache:
            cache[name] = testinfra.get_host(f"ssh://{name}", ssh_config=str(SSH_CONFIG), sudo=True)
        return cache[name]

    return get
