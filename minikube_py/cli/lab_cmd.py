"""``minikube-py lab up|status|verify|down``: the Vagrant lab of issue #6, as ``make lab`` runs it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from minikube_py.cli.main import UserError
from minikube_py.lab import cli as lab
from minikube_py.lab.inventory import LabError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "lab",
        help="bring up, inspect, verify and tear down the Vagrant lab",
        description="The lab: Debian machines under vagrant-lxc, provisioned by the Ansible roles. "
        "Needs root (the machines are privileged containers).",
    )
    parser.add_argument("--root", type=Path, help="the checkout holding the Vagrantfile (default: this one)")
    actions = parser.add_subparsers(dest="lab_action", metavar="ACTION")
    actions.required = True

    up = actions.add_parser(
        "up",
        help="box, machines, provisioning and placement tests, then the summary",
        description="The phases of `make lab`, each timed: the box (built once, cached), `vagrant up "
        "--no-provision`, one `make provision`, the placement tests; then what runs where. Phase output "
        "goes to .lab/logs/PHASE.log.",
    )
    up.add_argument("--masters", type=_count(1, 3), help="master machines, 1-3 (default: as last time, else 1)")
    up.add_argument("--workers", type=_count(1, 50), help="worker machines, 1-50 (default: as last time, else 2)")
    up.add_argument("--no-verify", action="store_true", help="skip the placement tests")
    up.add_argument("-v", "--verbose", action="store_true", help="show every phase's output as it runs")
    up.set_defaults(run=_run_up)

    status = actions.add_parser("status", help="machines, their state and the components on each")
    status.set_defaults(run=_run_status)
    verify = actions.add_parser("verify", help="run the placement tests against the provisioned lab")
    verify.set_defaults(run=_run_verify)
    down = actions.add_parser("down", help="destroy the machines, the bridge, .lab/ and the inventory")
    down.set_defaults(run=_run_down)


def _count(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not from {low} to {high}")
        return value

    return parse


def _root(args: argparse.Namespace) -> Path:
    if args.root is None:
        return lab.repo_root()
    root = args.root.resolve()
    if not (root / "Vagrantfile").is_file():
        raise LabError(f"{root} has no Vagrantfile: --root takes the minikube-py checkout")
    return root


def _run_up(args: argparse.Namespace) -> int:
    try:
        result = lab.up(
            _root(args), masters=args.masters, workers=args.workers, verify=not args.no_verify,
            echo=sys.stdout if args.verbose else None,
        )
    except LabError as e:
        raise UserError(str(e)) from e
    print(result.timer.table())
    print(result.summary)
    if not result.verified:
        print(f"minikube-py lab: placement tests failed ({result.verify}): see .lab/logs/verify.log or run "
              "'minikube-py lab verify'", file=sys.stderr)
        return 1
    return 0


def _run_status(args: argparse.Namespace) -> int:
    try:
        print(lab.status(_root(args)))
    except LabError as e:
        raise UserError(str(e)) from e
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    try:
        return lab.verify(_root(args))
    except LabError as e:
        raise UserError(str(e)) from e


def _run_down(args: argparse.Namespace) -> int:
    try:
        lab.down(_root(args), echo=sys.stdout)
    except LabError as e:
        raise UserError(str(e)) from e
    return 0
