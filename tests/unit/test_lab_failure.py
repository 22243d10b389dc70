"""Reading a failed provisioning run (minikube_py.lab.failure): each failed task named with its machine,
its cause and the fix, from ansible-playbook's output or its log file, also when the free strategy
interleaves the machines' tasks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from minikube_py.lab.failure import RERUN, TaskFailure, ansible_failures, failure_summary, main

REPO = Path(__file__).resolve().parent.parent.parent


def role_file(tmp_path: Path) -> Path:
    tasks = tmp_path / "roles" / "kubelet" / "tasks"
    tasks.mkdir(parents=True)
    path = tasks / "service.yml"
    path.write_text("---\n- name: Install the kubelet unit.\n  ansible.builtin.template: {}\n\n"
                    "- name: Wait for kubelet to report healthy.\n  ansible.builtin.uri: {}\n")
    return path


def test_the_origin_names_the_task_when_the_free_strategy_interleaves_banners(tmp_path: Path) -> None:
    path = role_file(tmp_path)
    # worker1's failure arrives after master1's next banner: the banner would name the wrong task.
    output = f"""\
TASK [kubelet : Wait for kubelet to report healthy.] ***************************
TASK [kube_scheduler : Install the kube-scheduler unit.] ***********************
changed: [master1]
[ERROR]: Task failed: Action failed: Status code was -1 and not [200]
Origin: {path}:5:3

3 ...

fatal: [worker1]: FAILED! =>
    changed: false
    msg: 'Status code was -1 and not [200]: Request failed: <urlopen error [Errno 111]
        Connection refused>'

PLAY RECAP *********************************************************************
"""
    failures = ansible_failures(output.splitlines())
    assert failures == [TaskFailure(host="worker1", task="kubelet : Wait for kubelet to report healthy.",
                                    msg="Status code was -1 and not [200]: Request failed: <urlopen error "
                                        "[Errno 111] Connection refused>")]
    line = failures[0].line()
    assert line.startswith("provisioning failed: kubelet : Wait for kubelet to report healthy. on worker1: ")
    assert line.endswith(f"Fix the cause, then {RERUN}")


def test_without_an_origin_the_last_banner_names_the_task() -> None:
    output = """\
TASK [kube_proxy : Install the kube-proxy unit.] *******************************
fatal: [worker2]: FAILED! =>
    changed: false
    msg: 'Task failed: ''kube_proxy_service_cidr'' is undefined'
"""
    assert failure_summary(output.splitlines()) == (
        "kube_proxy : Install the kube-proxy unit. on worker2: Task failed: 'kube_proxy_service_cidr' is undefined")


def test_the_log_file_prefixes_are_read_through_and_each_host_is_named(tmp_path: Path) -> None:
    prefix = "2026-11-23 22:18:45,097 p=5983 u=root n=ansible INFO| "
    log = tmp_path / "ansible.log"
    log.write_text(
        # Rescued by the role (the failure below names the cause), and one ignored: neither counts.
        f"{prefix}TASK [kubelet : Wait for kubelet to report healthy.] ****\n"
        f"{prefix}fatal: [worker1]: FAILED! => \n"
        "    msg: 'Status code was -1 and not [200]: Connection failure: timed out'\n"
        f"{prefix}TASK [common : Probe something.] ****\n"
        f"{prefix}fatal: [master1]: FAILED! => \n"
        "    msg: 'not there'\n"
        f"{prefix}...ignoring\n"
        f"{prefix}TASK [common : Stop this machine's run, naming the cause and the fix.] ****\n"
        f"{prefix}fatal: [worker1]: FAILED! => \n"
        "    changed: false\n"
        "    msg: 'kubelet did not become healthy on worker1 (activating/auto-restart, 4 restarts);\n"
        "        its journal ends: address already in use. Fix the cause, then provision again\n"
        "        (''make provision''): the rerun picks up where this one stopped.'\n"
        "\n"
        f"{prefix}fatal: [worker2]: UNREACHABLE! => \n"
        "    changed: false\n"
        "    msg: 'Failed to connect to the host via ssh: Connection timed out'\n"
        "    unreachable: true\n"
        f"{prefix}PLAY RECAP *********************************************************************\n")
    failures = ansible_failures(log.read_text().splitlines())
    assert [(f.host, f.unreachable) for f in failures] == [("worker1", False), ("worker2", True)]
    # The role's own message already says how to go on: it is not said twice.
    assert failures[0].line().count("again") == 1
    assert "'make provision'" in failures[0].line()
    assert failures[1].line() == (
        "worker2 is unreachable (Failed to connect to the host via ssh: Connection timed out): check it with "
        f"'vagrant status' ('make lab-up' starts a stopped machine), then {RERUN}")

    proc = subprocess.run([sys.executable, "-m", "minikube_py.lab.failure", str(log)], cwd=REPO,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("minikube-py lab: ") for line in lines)
    assert "worker1" in lines[0] and "address already in use" in lines[0]


def test_a_run_that_failed_before_any_task_still_says_what_to_do(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "ansible.log"
    log.write_text("ERROR! the playbook: playbooks/site.yml could not be found\n")
    assert main([str(log)]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("minikube-py lab: provisioning failed before any task did") and RERUN in out


def test_an_unreadable_log_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "missing.log")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("minikube-py lab: cannot read ") and "\n" not in err


def test_a_script_line_wins_over_ansible_output() -> None:
    lines = ["fatal: [w1]: FAILED! =>", "    msg: boom",
             "minikube-py lab: no inventory/lab.ini: run 'make lab-up' first"]
    assert failure_summary(lines) == "no inventory/lab.ini: run 'make lab-up' first"
