"""The lab commands' parts that need no machines: reading the inventory, the summary, phase timing, and
the one-line errors (a script's own, a hang, not root, no inventory, no vagrant)."""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import pytest

from minikube_py.cli.main import main
from minikube_py.lab import cli as lab
from minikube_py.lab.inventory import LabError, parse_ssh_config, render_inventory

SSH_CONFIG = """\
Host master1
  HostName 192.168.56.10
  User vagrant
  Port 22
  IdentityFile /root/.vagrant.d/insecure_private_key
Host worker1
  HostName 192.168.56.21
  User vagrant
  Port 22
  IdentityFile /root/.vagrant.d/insecure_private_key
Host worker2
  HostName 192.168.56.22
  User vagrant
  Port 22
  IdentityFile /root/.vagrant.d/insecure_private_key
"""

ALL_ACTIVE = {unit: "active" for unit in lab.UNITS}
ALL_INACTIVE = {unit: "inactive" for unit in lab.UNITS}


def generated_inventory() -> str:
    # The inventory exactly as `make lab-up` writes it, so the summary reads the real format.
    return render_inventory(parse_ssh_config(SSH_CONFIG), Path("/x/.lab/ssh-config"))


def lab_checkout(tmp_path: Path, *, kubeconfig: bool = True) -> Path:
    (tmp_path / "Vagrantfile").write_text("# test\n")
    (tmp_path / "inventory").mkdir()
    (tmp_path / "inventory" / "lab.ini").write_text(generated_inventory())
    if kubeconfig:
        (tmp_path / ".lab").mkdir()
        (tmp_path / ".lab" / "admin.kubeconfig").write_text("apiVersion: v1\n")
    return tmp_path


def placement(machine: lab.Machine) -> dict[str, str]:
    """Unit states of a correctly provisioned machine."""
    return {u: "active" if u in machine.expected_units else "inactive" for u in lab.UNITS}


# ---- inventory -------------------------------------------------------------------------------------------

def test_inventory_gives_each_machine_its_address_and_groups() -> None:
    machines = lab.parse_inventory(generated_inventory())
    assert [(m.name, m.address, m.groups) for m in machines] == [
        ("master1", "192.168.56.10", ("masters", "etcd")),
        ("worker1", "192.168.56.21", ("workers",)),
        ("worker2", "192.168.56.22", ("workers",)),
    ]
    assert machines[0].expected_units == (
        "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "docker-registry")
    assert machines[1].expected_units == (
        "minikube-py-apiserver-proxy", "minikube-py-runtime", "kubelet", "kube-proxy")


def test_inventory_ignores_vars_sections_and_comments() -> None:
    text = "[masters]\nm1 ansible_host=10.0.0.1  # first\n[masters:vars]\nfoo=bar\n[workers]\n; note\nw1\n"
    machines = lab.parse_inventory(text)
    assert [(m.name, m.address, m.groups) for m in machines] == [
        ("m1", "10.0.0.1", ("masters",)), ("w1", "w1", ("workers",))]


def test_bad_section_line_is_an_error() -> None:
    with pytest.raises(LabError, match="bad inventory section"):
        lab.parse_inventory("[masters\nm1\n")


def test_missing_inventory_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(LabError, match=r"no lab inventory .*minikube-py lab up"):
        lab.read_inventory(tmp_path)


def test_is_active_output_maps_to_units_in_order() -> None:
    assert lab.parse_is_active("active\ninactive\n", ["a", "b"]) == {"a": "active", "b": "inactive"}
    # A truncated answer cannot be lined up with the units: nothing is claimed.
    assert lab.parse_is_active("active\n", ["a", "b"]) == {"a": "unknown", "b": "unknown"}


# ---- summary ---------------------------------------------------------------------------------------------

def test_summary_lists_machines_components_kubeconfig_and_kubectl_line(tmp_path: Path) -> None:
    root = lab_checkout(tmp_path)
    machines = lab.read_inventory(root)
    text = lab.render_summary(machines, root=root, units={m.name: placement(m) for m in machines})
    lines = text.splitlines()
    assert lines[0] == f"lab: 1 master, 2 workers ({root})"
    master = next(line for line in lines if line.strip().startswith("master1"))
    assert "192.168.56.10" in master
    assert master.split()[-5:] == [
        "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "registry"]
    worker2 = next(line for line in lines if line.strip().startswith("worker2"))
    assert "192.168.56.22" in worker2
    assert worker2.split()[-4:] == ["apiserver-proxy", "runtime", "kubelet", "kube-proxy"]
    assert "etcd" not in worker2 and "(unexpected)" not in text
    assert f"kubeconfig: {root / '.lab/admin.kubeconfig'}" in lines
    assert lines[-1] == "try:        .venv/bin/kubectl --kubeconfig .lab/admin.kubeconfig get nodes -o wide"


def test_summary_flags_a_failed_and_a_misplaced_component(tmp_path: Path) -> None:
    root = lab_checkout(tmp_path)
    machines = lab.read_inventory(root)
    units = {m.name: placement(m) for m in machines}
    units["worker1"]["kubelet"] = "failed"
    units["worker2"]["etcd"] = "active"
    lines = lab.render_summary(machines, root=root, units=units).splitlines()
    assert "kubelet(failed)" in next(line for line in lines if "worker1" in line)
    assert "etcd(unexpected)" in next(line for line in lines if "worker2" in line)


def test_summary_falls_back_to_groups_when_ssh_fails(tmp_path: Path) -> None:
    root = lab_checkout(tmp_path)
    machines = lab.read_inventory(root)
    text = lab.render_summary(
        machines, root=root, units={m.name: None for m in machines},
        unreachable={"worker1": "Connection refused"}, states={"master1": "running", "worker1": "stopped"},
    )
    worker1 = next(line for line in text.splitlines() if "worker1" in line)
    assert "stopped" in worker1
    assert "kubelet kube-proxy (from the inventory groups) [ssh: Connection refused]" in worker1
    worker2 = next(line for line in text.splitlines() if "worker2" in line)
    assert "?" in worker2  # Vagrant did not report it


def test_summary_says_when_the_kubeconfig_is_missing(tmp_path: Path) -> None:
    root = lab_checkout(tmp_path, kubeconfig=False)
    text = lab.render_summary(lab.read_inventory(root), root=root)
    assert "admin.kubeconfig is missing" in text and "make provision" in text
    assert "kubectl" not in text


def test_all_inactive_machine_shows_each_expected_component_down(tmp_path: Path) -> None:
    root = lab_checkout(tmp_path)
    machines = lab.read_inventory(root)
    text = lab.render_summary(machines, root=root, units={m.name: ALL_INACTIVE for m in machines})
    assert "etcd(inactive) kube-apiserver(inactive)" in text
    assert "kubelet(inactive) kube-proxy(inactive)" in text


def test_unit_states_without_ssh_config_reports_why(tmp_path: Path) -> None:
    machines = lab.parse_inventory(generated_inventory())
    units, errors = lab.unit_states(tmp_path, machines)
    assert units == {"master1": None, "worker1": None, "worker2": None}
    assert set(errors.values()) == {"no .lab/ssh-config"}


# ---- phases ----------------------------------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_phase_timer_records_each_phase_and_the_total() -> None:
    clock, printed = FakeClock(), []
    timer = lab.PhaseTimer(2, out=printed.append, clock=clock)

    def work(seconds: float, value: str) -> str:
        clock.now += seconds
        return value

    assert timer.run("box", "the box", lambda: work(1.5, "a")) == "a"
    assert timer.run("machines", "up", lambda: work(10.25, "b")) == "b"
    assert timer.times == [("box", 1.5), ("machines", 10.25)]
    assert timer.total == pytest.approx(11.75)
    assert printed == ["[1/2] box: the box", "      box done in 1.5 s", "[2/2] machines: up",
                       "      machines done in 10.2 s"]
    assert timer.table().splitlines()[-1].split() == ["total", "11.8", "s"]


def test_phase_timer_reports_a_failed_phase_with_its_time() -> None:
    clock, printed = FakeClock(), []
    timer = lab.PhaseTimer(1, out=printed.append, clock=clock)

    def fail() -> None:
        clock.now += 3
        raise LabError("boom")

    with pytest.raises(LabError, match="boom"):
        timer.run("provision", "ansible", fail)
    assert printed[-1] == "      provision failed after 3.0 s"
    assert timer.times == [("provision", 3.0)] and timer.failed == ["provision"]
    assert timer.table().splitlines()[0].split() == ["provision", "3.0", "s", "(failed)"]


def test_placement_summary_picks_pytests_result_line() -> None:
    lines = ["....", "", "======= 64 passed in 9.12s ======="]
    assert lab.placement_summary(lines) == "64 passed in 9.12s"
    assert lab.placement_summary(["x"]) == "no result line from pytest"


# ---- running the scripts ---------------------------------------------------------------------------------

def script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "phase.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return [str(path)]


def test_run_logged_keeps_output_in_the_log_and_echoes_it(tmp_path: Path) -> None:
    echo = io.StringIO()
    log = tmp_path / "logs" / "box.log"
    lines = lab.run_logged("box", script(tmp_path, "echo one; echo two >&2\n"), cwd=tmp_path, log=log,
                           timeout=30, echo=echo)
    assert lines == ["one", "two"]
    assert log.read_text() == "one\ntwo\n" == echo.getvalue()


def test_a_scripts_one_line_error_becomes_the_error(tmp_path: Path) -> None:
    cmd = script(tmp_path, "echo 'Bringing machine up'\n"
                 "echo 'minikube-py lab: 192.168.56.0/24 is in use by interface vboxnet0: remove it' >&2\n"
                 "exit 1\n")
    with pytest.raises(LabError) as err:
        lab.run_logged("machines", cmd, cwd=tmp_path, log=tmp_path / "m.log", timeout=30)
    assert str(err.value) == "192.168.56.0/24 is in use by interface vboxnet0: remove it"


def test_a_failure_without_a_lab_error_names_the_last_line_and_the_log(tmp_path: Path) -> None:
    log = tmp_path / "p.log"
    cmd = script(tmp_path, "echo 'Building wheels'\necho 'ERROR: no space left on device'\necho\nexit 2\n")
    with pytest.raises(LabError) as err:
        lab.run_logged("provision", cmd, cwd=tmp_path, log=log, timeout=30)
    assert str(err.value) == f"provision failed (exit 2): ERROR: no space left on device (output in {log})"


def test_a_hung_phase_is_killed_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    cmd = script(tmp_path, f"sleep 300 &\necho $! > {pid_file}\nwait\n")
    start = time.monotonic()
    with pytest.raises(LabError, match=r"box did not finish in 1 s \(output in "):
        lab.run_logged("box", cmd, cwd=tmp_path, log=tmp_path / "b.log", timeout=1)
    assert time.monotonic() - start < 60
    child = int(pid_file.read_text())
    for _ in range(100):  # the kill is delivered at once; reaping by init may lag a little
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the phase's child {child} survived the timeout")


def test_not_root_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    root = lab_checkout(tmp_path)
    for action in ("up", "status", "verify", "down"):
        assert main(["lab", "--root", str(root), action]) == 2
        err = capsys.readouterr().err
        assert err == (f"minikube-py lab: needs root (the LXC machines are privileged containers): run it "
                       f"as root, e.g. 'sudo minikube-py lab {action}'\n")


def test_verify_without_a_lab_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    (tmp_path / "Vagrantfile").write_text("")
    assert main(["lab", "--root", str(tmp_path), "verify"]) == 2
    assert capsys.readouterr().err == (
        "minikube-py lab: no lab inventory (inventory/lab.ini): run 'minikube-py lab up' or 'make lab-up'\n")


def test_status_without_vagrant_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    root = lab_checkout(tmp_path)
    assert main(["lab", "--root", str(root), "status"]) == 2
    assert capsys.readouterr().err == (
        "minikube-py lab: vagrant is not installed: run 'make box' (it installs the host packages)\n")


def test_root_must_be_a_checkout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "--root", str(tmp_path), "status"]) == 2
    assert "has no Vagrantfile" in capsys.readouterr().err


def test_machine_counts_are_checked_before_anything_runs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["lab", "up", "--masters", "4"])
    assert "4 is not from 1 to 3" in capsys.readouterr().err


def test_this_checkout_is_found() -> None:
    root = lab.repo_root()
    assert (root / "Vagrantfile").is_file() and (root / "lab" / "lab-up.sh").is_file()
    assert Path(sys.modules[lab.__name__].__file__ or "").is_relative_to(root)


# ---- bench/lab.py's reading of ansible's output ----------------------------------------------------------

def load_bench() -> object:
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "bench" / "lab.py"
    spec = importlib.util.spec_from_file_location("bench_lab", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_counts_changed_tasks_from_the_play_recap() -> None:
    bench = load_bench()
    recap = [
        "PLAY RECAP *********************************************************************",
        "master1                    : ok=61   changed=0    unreachable=0    failed=0    skipped=9",
        "worker1                    : ok=70   changed=2    unreachable=0    failed=0    skipped=9",
        "worker2                    : ok=70   changed=1    unreachable=0    failed=0    skipped=9",
    ]
    assert bench.changed_tasks(recap) == 3  # type: ignore[attr-defined]
    assert bench.changed_tasks(["no recap here"]) is None  # type: ignore[attr-defined]
    assert bench.box_was_cached(["Box minikube-py/bookworm 1.0.1 is up to date (/x.box)"])  # type: ignore[attr-defined]
    assert not bench.box_was_cached(["Building the box"])  # type: ignore[attr-defined]


# ---- the commands over a stand-in checkout (make targets and scripts that only echo) ------------------------

FAKE_MAKEFILE = """\
box:
\t@echo "Box minikube-py/bookworm 1.0.1 is up to date"
provision:
\t@test -f inventory/lab.ini || { echo "minikube-py lab: no inventory/lab.ini: run 'make lab-up' first" >&2; exit 1; }
\t@echo "PLAY RECAP"; $(FAIL_PROVISION)
"""


def fake_checkout(tmp_path: Path, *, test_body: str = "assert True", fail_provision: str = "") -> Path:
    root = tmp_path / "checkout"
    (root / "lab").mkdir(parents=True)
    (root / "Vagrantfile").write_text("")
    (root / "Makefile").write_text(FAKE_MAKEFILE.replace("$(FAIL_PROVISION)", fail_provision or "true"))
    up_script = root / "lab" / "lab-up.sh"
    inventory = generated_inventory().replace("\n", "\\n")
    up_script.write_text(f"#!/bin/sh\necho \"MASTERS=$MASTERS\"\nmkdir -p inventory\n"
                         f"printf '{inventory}' > inventory/lab.ini\n")
    up_script.chmod(0o755)
    (root / "tests" / "lab").mkdir(parents=True)
    (root / "tests" / "lab" / "test_placement.py").write_text(f"def test_placed():\n    {test_body}\n")
    return root


def test_up_runs_the_phases_in_order_and_ends_in_the_summary(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    root = fake_checkout(tmp_path)
    printed: list[str] = []
    result = lab.up(root, masters=1, workers=2, out=printed.append)
    assert [name for name, _ in result.timer.times] == ["box", "machines", "provision", "verify"]
    assert all(seconds >= 0 for _, seconds in result.timer.times)
    assert result.verified and result.verify.startswith("1 passed")
    assert [line for line in printed if line.startswith("[")] == [
        "[1/4] box: host packages and the box (built once, then cached)",
        "[2/4] machines: vagrant up --no-provision, ssh config and inventory",
        "[3/4] provision: make provision (wheelhouse, ansible-playbook playbooks/site.yml)",
        "[4/4] verify: tests/lab/test_placement.py",
    ]
    assert (root / ".lab" / "logs" / "machines.log").read_text() == "MASTERS=1\n"
    assert result.summary.startswith("lab: 1 master, 2 workers")
    assert "kubelet kube-proxy (from the inventory groups) [ssh: no .lab/ssh-config]" in result.summary


def test_up_stops_at_the_failing_phase_with_its_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    root = fake_checkout(tmp_path, fail_provision="echo 'minikube-py lab: etcd did not start on master1' >&2; exit 2")
    assert main(["lab", "--root", str(root), "up"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "minikube-py lab: etcd did not start on master1\n"
    assert "provision failed after" in captured.out and "[4/4]" not in captured.out


def test_up_prints_the_summary_when_placement_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    root = fake_checkout(tmp_path, test_body="assert False, 'kubelet not running'")
    assert main(["lab", "--root", str(root), "up"]) == 1
    captured = capsys.readouterr()
    assert "lab: 1 master, 2 workers" in captured.out and "total" in captured.out
    assert any(line.split()[:1] == ["verify"] and line.endswith("(failed)") for line in captured.out.splitlines())
    assert captured.err.startswith("minikube-py lab: placement tests failed (1 failed in ")


def test_status_marks_machines_vagrant_reports_down(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    root = lab_checkout(tmp_path)
    monkeypatch.setattr(lab, "vagrant_states",
                        lambda _root: {"master1": "running", "worker1": "stopped", "worker2": "running"})
    monkeypatch.setattr(lab, "unit_states", lambda _root, machines: (
        {m.name: placement(m) for m in machines}, {}))
    lines = lab.status(root).splitlines()
    worker1 = next(line for line in lines if "worker1" in line)
    assert "stopped" in worker1 and "[ssh: machine is stopped]" in worker1 and "(from the inventory" in worker1
    master1 = next(line for line in lines if "master1" in line)
    assert "running" in master1 and master1.endswith("kube-scheduler registry")


def test_a_failed_ansible_task_is_named_with_its_host_and_message(tmp_path: Path) -> None:
    output = """\
TASK [common : Install minikube-py] ********************************************
ok: [master1]

TASK [kube_proxy : Install the kube-proxy unit.] *******************************
fatal: [worker2]: FAILED! =>
    changed: false
    msg: 'Task failed: ''kube_proxy_service_cidr'' is undefined'
fatal: [worker1]: FAILED! =>
    msg: 'something else'

PLAY RECAP *********************************************************************
make: *** [Makefile:84: provision] Error 2
"""
    (tmp_path / "out.txt").write_text(output)
    log = tmp_path / "provision.log"
    with pytest.raises(LabError) as err:
        lab.run_logged("provision", script(tmp_path, f"cat {tmp_path / 'out.txt'}\nexit 2\n"), cwd=tmp_path,
                       log=log, timeout=30)
    assert str(err.value) == ("provision failed: kube_proxy : Install the kube-proxy unit. on worker2: Task "
                              f"failed: 'kube_proxy_service_cidr' is undefined (output in {log})")


def test_stamped_log_gives_the_slowest_tasks(tmp_path: Path) -> None:
    log = tmp_path / "p.log"
    cmd = script(tmp_path, "echo 'TASK [common : Copy]'\nsleep 0.3\necho 'ok: [m1]'\n"
                 "echo 'TASK [etcd : Start]'\necho 'PLAY RECAP'\n")
    lab.run_logged("provision", cmd, cwd=tmp_path, log=log, timeout=30, stamp=True)
    stamped = log.read_text().splitlines()
    assert all(line.startswith("[") and "] " in line for line in stamped)
    assert stamped[1].endswith("] ok: [m1]")
    slowest = lab.slowest_tasks(stamped)
    assert [name for name, _ in slowest] == ["common : Copy", "etcd : Start"]
    assert slowest[0][1] >= 0.2  # the sleep sits inside the first task


def test_slowest_tasks_adds_up_a_task_run_by_several_plays() -> None:
    stamped = ["[   0.0] TASK [common : Copy]", "[   5.0] TASK [etcd : Start]", "[   6.0] TASK [common : Copy]",
               "[   9.5] RUNNING HANDLER [etcd : Restart]", "[  10.0] PLAY RECAP ****"]
    assert lab.slowest_tasks(stamped, 2) == [("common : Copy", 8.5), ("etcd : Start", 1.0)]
