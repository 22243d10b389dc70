"""The lab tests boot Debian machines (vagrant-lxc) and need root. ``make test`` runs them after the rest
of the suite as a second pytest run (``lab/test-lab.sh`` = ``make test-lab``); the default ``pytest``
run, which collects ``tests/``, leaves them out unless ``tests/lab`` is named.

Two modes:

- end to end (``MINIKUBE_PY_LAB_E2E=1``, set by ``lab/test-lab.sh``): the fixtures bring a lab of
  ``MASTERS``/``WORKERS`` machines up, provision it, and destroy it at the end even when a test fails.
  The files run in the order of a lab's life: substrate (bad input, then the bare machines), placement,
  smoke, security, lifecycle (second provisioning changes nothing, reset, a failure halfway and the
  rerun, destroy). ``lab/test-lab.sh`` runs test_ha.py in a second session, on a lab of 3 masters.
- against a lab ``make lab`` made (``make lab``, ``minikube-py lab verify``): placement, smoke and
  security only read it (security adds a namespace of its own and deletes it); nothing is brought up or
  torn down.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from minikube_py.lab.failure import failure_summary

LAB_TESTS = Path(__file__).resolve().parent
E2E = os.environ.get("MINIKUBE_PY_LAB_E2E") == "1"
# A lab's life, in order: a file not listed runs after these.
FILE_ORDER = ["test_substrate.py", "test_placement.py", "test_smoke.py", "test_security.py", "test_lifecycle.py"]
# Bring-up and a first provisioning run take minutes on a loaded 2-core host; the suite default is 300 s.
LAB_TEST_TIMEOUT = 900


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


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return FILE_ORDER.index(name) if name in FILE_ORDER else len(FILE_ORDER)

    items.sort(key=rank)  # stable: tests keep their order within a file
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(LAB_TEST_TIMEOUT))


T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 120.0, interval: float = 1.0) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` and the last error."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = check()
            if result:
                return result
            last = result
        except AssertionError as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {last})")
        time.sleep(interval)


# ---- timings, printed at the end of the run ---------------------------------------------------------------

PHASES: dict[str, float] = {}


def record_phase(name: str, seconds: float) -> None:
    PHASES[name] = PHASES.get(name, 0.0) + seconds


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if PHASES:
        load = Path("/proc/loadavg").read_text().split()[:3]
        parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in PHASES.items())
        terminalreporter.write_line(f"lab phases: {parts} (load average now {' '.join(load)})")


# ---- running the lab scripts ----------------------------------------------------------------------------

REPO = LAB_TESTS.parent.parent
LAB = REPO / "lab"


def run(args: list[str], timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "VAGRANT_CHECKPOINT_DISABLE": "1", **(env or {})}
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=full_env)


# Full output of the lab commands: outside the checkout's .lab/, which lab-down removes.
LOG_DIR = Path(tempfile.gettempdir()) / f"minikube-py-lab-tests-{hashlib.sha256(str(REPO).encode()).hexdigest()[:8]}"


def timed(args: list[str], what: str, env: dict[str, str] | None = None, timeout: float = 900) -> float:
    """Run a lab command that must succeed; its time goes to the phase summary, its output to LOG_DIR. A
    failure is a few lines (the cause, the log, the end of the output): a session fixture's failure is
    repeated for every test that uses it."""
    start = time.monotonic()
    proc = run(args, timeout=timeout, env=env)
    elapsed = time.monotonic() - start
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"{what.replace(' ', '-')}.log"
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        lines = (proc.stdout + proc.stderr).splitlines()
        cause = failure_summary(lines) or "see the log"
        tail = "\n".join(lines[-15:])
        pytest.fail(f"{what} failed (exit {proc.returncode}): {cause}\nfull output: {log}\n{tail}", pytrace=False)
    record_phase(what, elapsed)
    return elapsed


def host_can_run_the_lab() -> str | None:
    """Why this host cannot run the lab, or None. Checked before anything boots: a lab test never skips."""
    if os.geteuid() != 0:
        return "the lab tests need root (privileged LXC containers): run 'sudo make test' / 'sudo make test-lab'"
    for tool, package in (("vagrant", "vagrant"), ("lxc-start", "lxc"), ("lxc-ls", "lxc"), ("ip", "iproute2")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {package}): 'make box' installs the host packages"
    return None


@pytest.fixture(scope="session")
def lab_host_ready() -> None:
    reason = host_can_run_the_lab()
    if reason:
        pytest.exit(f"minikube-py lab: {reason}", returncode=1)


def planned_size() -> tuple[int, int]:
    return int(os.environ.get("MASTERS", "1")), int(os.environ.get("WORKERS", "2"))


@pytest.fixture(scope="session")
def lab_machines(lab_host_ready: None) -> Iterator[None]:
    """The machines up (``lab/lab-up.sh``, which reuses running ones). End to end, the lab is destroyed
    at the end of the session whatever happened (the lifecycle tests destroy it first and check)."""
    masters, workers = planned_size()
    try:
        timed([str(LAB / "lab-up.sh")], "up", env={"MASTERS": str(masters), "WORKERS": str(workers)})
        yield
    finally:
        if E2E:
            run([str(LAB / "lab-down.sh")], timeout=600)


@pytest.fixture(scope="session")
def provisioned_lab(request: pytest.FixtureRequest) -> None:
    """End to end: the machines up and one ``make provision``. Otherwise the lab ``make lab`` made."""
    if not E2E:
        lab_groups_or_fail()
        return
    request.getfixturevalue("lab_machines")
    timed(["make", "--no-print-directory", "provision"], "provision")


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


def planned_groups() -> dict[str, list[str]]:
    """The groups the lab will have (end to end, before it exists), or the inventory's."""
    if not E2E:
        return lab_groups_or_fail()
    masters, workers = planned_size()
    names = [f"master{i}" for i in range(1, masters + 1)]
    return {"masters": names, "workers": [f"worker{i}" for i in range(1, workers + 1)], "etcd": names}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test taking ``lab_machine`` runs once per lab machine, ``lab_worker`` once per worker, ``lab_master``
    once per master, ``lab_etcd`` once per etcd member."""
    for fixture, group in (("lab_machine", "all"), ("lab_worker", "workers"), ("lab_master", "masters"),
                           ("lab_etcd", "etcd")):
        if fixture in metafunc.fixturenames:
            groups = planned_groups()
            names = list(dict.fromkeys(h for g in groups.values() for h in g)) if group == "all" else groups[group]
            metafunc.parametrize(fixture, names)


@pytest.fixture(scope="session")
def lab_groups(provisioned_lab: None) -> dict[str, list[str]]:
    groups = lab_groups_or_fail()
    if E2E:
        assert groups == planned_groups(), f"{INVENTORY} does not list the planned machines"
    return groups


@pytest.fixture(scope="session")
def lab_addresses(provisioned_lab: None) -> dict[str, str]:
    lab_groups_or_fail()
    return read_inventory()[1]


@pytest.fixture(scope="session")
def lab_host(provisioned_lab: None) -> Any:
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
