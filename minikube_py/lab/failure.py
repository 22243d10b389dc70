"""What went wrong in a lab command, in one line per cause: the line a lab script printed
(``minikube-py lab: ...``), or the failed Ansible tasks of a provisioning run with their hosts and
messages.

Under the free strategy the TASK banners of different machines interleave, so the banner before a
``fatal:`` line may belong to another machine's task. Ansible (2.19+) prints each failure's origin
(``Origin: <file>:<line>``) just before its result; the task is named from that line of the role's file,
and from the last banner only when there is no origin.

    python -m minikube_py.lab.failure LOG   prints a failed provisioning run's lines (lab/provision.sh)
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

ERROR_PREFIX = "minikube-py lab: "
RERUN = "run 'make provision' again: it picks up where it stopped"

# ANSIBLE_LOG_PATH prefixes every record: "2026-11-23 22:18:45,097 p=5983 u=root n=ansible INFO| ".
_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ p=\d+ u=\S+ n=\S+ \w+\| ")
_RESULT = re.compile(r"^(?:fatal|failed): \[([^\]]+)\](?: \(item=.*\))?: (FAILED|UNREACHABLE)! =>(.*)$")
_ORIGIN = re.compile(r"^Origin: (.+):(\d+):\d+$")
_TASK_NAME = re.compile(r"^\s*-\s*name:\s*(.+?)\s*$")


@dataclass(frozen=True)
class TaskFailure:
    host: str
    task: str
    msg: str
    unreachable: bool = False

    def line(self) -> str:
        """The failure for a user: what failed where, the cause Ansible gave, and what to do next."""
        if self.unreachable:
            return (f"{self.host} is unreachable ({self.msg}): check it with 'vagrant status' ('make lab-up' "
                    f"starts a stopped machine), then {RERUN}")
        cause = self.msg.rstrip(". ")
        fix = "" if "again" in cause else f". Fix the cause, then {RERUN}"
        return f"provisioning failed: {self.task} on {self.host}: {cause}{fix}"


def error_line(lines: Iterable[str]) -> str | None:
    """The last one-line error a lab script printed ('minikube-py lab: ...'), without the prefix."""
    found = None
    for line in lines:
        if line.startswith(ERROR_PREFIX):
            found = line[len(ERROR_PREFIX):].strip()
    return found


def _task_at(path: str, lineno: int) -> str | None:
    """'role : name' of the task whose '- name:' is at ``path``:``lineno``, as Ansible's banner has it."""
    try:
        text = Path(path).read_text().splitlines()
    except OSError:
        return None
    if not 0 < lineno <= len(text) or not (m := _TASK_NAME.match(text[lineno - 1])):
        return None
    name = m.group(1).strip("'\"")
    parts = Path(path).parts
    if "roles" in parts and parts.index("roles") + 1 < len(parts):
        return f"{parts[parts.index('roles') + 1]} : {name}"
    return name


def _result_msg(first: str, following: Sequence[str]) -> str:
    """The ``msg`` of a result printed in the yaml result format (indented lines after the '=>')."""
    try:
        data = yaml.safe_load("\n".join(following)) if following else None
    except yaml.YAMLError:
        data = None
    if isinstance(data, dict) and data.get("msg"):
        return " ".join(str(data["msg"]).split())
    # Older formats: "=> {json}" or "=> changed=false msg=..." on the line itself.
    m = re.search(r"""["']?msg["']?\s*[:=]\s*["']?(.+?)["']?\s*[,}]?\s*$""", first)
    return " ".join(m.group(1).split()) if m else "failed"


def _indented(line: str) -> bool:
    return line[:1] in (" ", "\t") and bool(line.strip())


def ansible_failures(lines: Sequence[str]) -> list[TaskFailure]:
    """The failed task that stopped each machine, in an ansible-playbook run's output or log file."""
    clean = [_LOG_PREFIX.sub("", line.rstrip("\n")) for line in lines]
    failures: list[TaskFailure] = []
    banner, origin = "", None
    i = 0
    while i < len(clean):
        line = clean[i]
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            banner = line.split("[", 1)[1].split("]", 1)[0]
        elif m := _ORIGIN.match(line):
            origin = _task_at(m.group(1), int(m.group(2)))
        elif m := _RESULT.match(line):
            j = i + 1
            while j < len(clean) and (_indented(clean[j]) or (
                    not clean[j].strip() and j + 1 < len(clean) and _indented(clean[j + 1]))):
                j += 1
            following = clean[i + 1:j]
            ignored = j < len(clean) and clean[j].strip() == "...ignoring"
            if not ignored:
                failure = TaskFailure(host=m.group(1), task=origin or banner or "a task",
                                      msg=_result_msg(m.group(3), following), unreachable=m.group(2) == "UNREACHABLE")
                # A machine's run ends at its first failure that nothing rescued: an earlier one of the same
                # machine was rescued (a role's rescue that names the cause, say), so the last one counts.
                failures = [f for f in failures if f.host != failure.host] + [failure]
            origin = None
            i = j
            continue
        i += 1
    return failures


def first_ansible_failure(lines: Sequence[str]) -> str | None:
    """'task on host: msg' of the first machine an Ansible run stopped, or None."""
    failures = ansible_failures(list(lines))
    return f"{failures[0].task} on {failures[0].host}: {failures[0].msg}" if failures else None


def failure_summary(lines: Sequence[str]) -> str | None:
    """One line for a failed lab command: the script's own error line, else the first failed Ansible task."""
    line = error_line(lines)
    return line if line is not None else first_ansible_failure(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m minikube_py.lab.failure ANSIBLE_LOG", file=sys.stderr)
        return 2
    try:
        lines = Path(args[0]).read_text(errors="replace").splitlines()
    except OSError as e:
        print(f"{ERROR_PREFIX}cannot read {args[0]}: {e.strerror}", file=sys.stderr)
        return 2
    failures = ansible_failures(lines)
    for failure in failures:
        print(ERROR_PREFIX + failure.line())
    if not failures:
        print(f"{ERROR_PREFIX}provisioning failed before any task did (the output above says why); "
              f"fix that, then {RERUN}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
