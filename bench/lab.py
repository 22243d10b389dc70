"""Lab benchmark: how long `make lab` takes with the box cached, and a second provisioning run.

    sudo .venv/bin/python bench/lab.py [--masters 1] [--workers 2] [--keep] [--json]

In one run, from no machines (a lab already up is torn down first, untimed):

1. the box (``make box``: host packages and the box, a no-op once cached; a cold build is timed too
   but then the run says so);
2. up: ``lab/lab-up.sh`` (``vagrant up --no-provision``, ssh config, inventory);
3. provision: ``make provision`` (wheelhouse and one ``ansible-playbook playbooks/site.yml``);
4. verify: the placement tests (``tests/lab/test_placement.py``);
5. a second ``ansible-playbook playbooks/site.yml`` on the provisioned lab, which should change nothing.

It prints each phase, the total of 1-4 against the goal (<= 60 s for 1 master + 2 workers) and the
second run against its goal (<= 20 s), with the ratio to each, and how many tasks the second run
changed (0 when the roles are idempotent) and the five slowest tasks of each provisioning run (from
timestamped logs). The lab is destroyed at the end unless ``--keep``. Phase output goes to a log
directory printed at the start. Needs root, like the lab. A full run takes 2-5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _util import print_table, ratio

from minikube_py.lab import cli as lab
from minikube_py.lab.inventory import LabError, vagrant_env

REPO = Path(__file__).resolve().parent.parent
GOAL_TOTAL_S = 60.0
GOAL_SECOND_RUN_S = 20.0
_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


def changed_tasks(lines: list[str]) -> int | None:
    """Tasks ansible-playbook's PLAY RECAP reports as changed, over all hosts; None without a recap."""
    counts = [int(m.group(3)) for line in lines if (m := _RECAP.match(line.strip()))]
    return sum(counts) if counts else None


def box_was_cached(lines: list[str]) -> bool:
    return any("is up to date" in line for line in lines)


def run_verify(step: Callable[[str, list[str]], list[str]], logs: Path) -> list[str]:
    """The placement tests; a failing test is reported with the figures, not a reason to stop timing."""
    cmd = [str(REPO / ".venv" / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
           str(REPO / lab.PLACEMENT_TESTS)]
    try:
        return step("verify", cmd)
    except LabError:
        lines = (logs / "verify.log").read_text().splitlines()
        if lab.placement_summary(lines) == "no result line from pytest":
            raise
        return lines


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages: the machine is shared, so figures come with them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def count_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number from {low} to {high}")
        return int(text)

    return parse


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--masters", type=count_in(1, 3), default=1, help="master machines, 1-3 (default 1)")
    ap.add_argument("--workers", type=count_in(1, 50), default=2, help="worker machines, 1-50 (default 2)")
    ap.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = ap.parse_args(argv)

    try:
        lab.require_root("up")
    except LabError as e:
        print(f"bench/lab.py: {e}", file=sys.stderr)
        return 2
    logs = Path(tempfile.mkdtemp(prefix="minikube-py-bench-lab-"))
    env = vagrant_env()
    env.update(MASTERS=str(args.masters), WORKERS=str(args.workers))
    print(f"lab benchmark: {args.masters} master(s) + {args.workers} worker(s); phase logs in {logs}",
          flush=True)

    def step(phase: str, cmd: list[str], timeout_phase: str | None = None) -> list[str]:
        # Provisioning logs carry timestamps: the slowest tasks are printed with the figures.
        return lab.run_logged(phase, cmd, cwd=REPO, log=logs / f"{phase}.log", env=env,
                              timeout=lab.PHASE_TIMEOUTS[timeout_phase or phase],
                              stamp=phase.startswith("provision"))

    make = ["make", "-C", str(REPO), "--no-print-directory"]
    if (REPO / "inventory" / "lab.ini").exists() or (REPO / ".vagrant" / "machines").exists():
        start = time.monotonic()
        step("down", [str(REPO / "lab" / "lab-down.sh")])
        print(f"(tore down the existing lab first: {time.monotonic() - start:.1f} s, not counted)")

    load_at_start = loadavg()
    timer = lab.PhaseTimer(5)
    second: list[str] = []
    try:
        box = timer.run("box", "make box (cached)", lambda: step("box", [*make, "box"]))
        timer.run("up", "lab/lab-up.sh", lambda: step("machines", [str(REPO / "lab" / "lab-up.sh")]))
        timer.run("provision", "make provision", lambda: step("provision", [*make, "provision"]))
        verify = timer.run("verify", lab.PLACEMENT_TESTS, lambda: run_verify(step, logs))
        total = timer.total
        # The playbook alone, on the first run's wheelhouse: `make provision` would rebuild the wheel
        # when the source tree changed meanwhile (other work in the checkout), a real change to deploy.
        second = timer.run("second provision", "ansible-playbook playbooks/site.yml again",
                           lambda: step("provision2", [str(REPO / ".venv" / "bin" / "ansible-playbook"),
                                                       "playbooks/site.yml"], "provision"))
    except LabError as e:
        print(f"bench/lab.py: {e}", file=sys.stderr)
        print(timer.table())
        if not args.keep:
            _down(step)
        return 1
    seconds = dict(timer.times)
    second_s = seconds["second provision"]
    print()
    # Each phase of the first four is shown as its share of the total's goal: where the 60 s go.
    rows = [
        ["box" + ("" if box_was_cached(box) else " (BUILT, not cached)"), f"{seconds['box']:.1f}",
         f"of {GOAL_TOTAL_S:.0f}", ratio(seconds["box"], GOAL_TOTAL_S)],
        ["up", f"{seconds['up']:.1f}", f"of {GOAL_TOTAL_S:.0f}", ratio(seconds["up"], GOAL_TOTAL_S)],
        ["provision", f"{seconds['provision']:.1f}", f"of {GOAL_TOTAL_S:.0f}",
         ratio(seconds["provision"], GOAL_TOTAL_S)],
        ["verify", f"{seconds['verify']:.1f}", f"of {GOAL_TOTAL_S:.0f}", ratio(seconds["verify"], GOAL_TOTAL_S)],
        ["total (box..verify)", f"{total:.1f}", f"<= {GOAL_TOTAL_S:.0f}", ratio(total, GOAL_TOTAL_S)],
        ["second provision", f"{second_s:.1f}", f"<= {GOAL_SECOND_RUN_S:.0f}", ratio(second_s, GOAL_SECOND_RUN_S)],
    ]
    print_table(f"make lab phases, seconds ({args.masters} master + {args.workers} workers; load average "
                f"{load_at_start} at the start, {loadavg()} at the end)",
                ["phase", "seconds", "goal", "ratio"], rows)
    changed = changed_tasks(second)
    for phase, title in (("provision", "first"), ("provision2", "second")):
        slowest = lab.slowest_tasks((logs / f"{phase}.log").read_text().splitlines())
        print(f"slowest tasks, {title} provisioning run: "
              + "; ".join(f"{name} {spent:.1f} s" for name, spent in slowest))
    print(f"placement tests: {lab.placement_summary(verify)}")
    print(f"second provisioning run changed {changed if changed is not None else 'n/a (no recap)'} task(s)")
    print(f"goals: total {'met' if total <= GOAL_TOTAL_S else 'MISSED'}, "
          f"second run {'met' if second_s <= GOAL_SECOND_RUN_S else 'MISSED'}")
    if args.json:
        print(json.dumps({"masters": args.masters, "workers": args.workers, "phases": seconds, "total": total,
                          "second_run_changed": changed, "box_cached": box_was_cached(box),
                          "load_at_start": load_at_start, "load_at_end": loadavg()}))
    if not args.keep:
        _down(step)
    return 0


def _down(step: Callable[[str, list[str]], list[str]]) -> None:
    start = time.monotonic()
    try:
        step("down", [str(REPO / "lab" / "lab-down.sh")])
    except LabError as e:
        print(f"bench/lab.py: tearing the lab down failed: {e}", file=sys.stderr)
        return
    print(f"lab destroyed in {time.monotonic() - start:.1f} s (--keep leaves it up)")


if __name__ == "__main__":
    sys.exit(main())
