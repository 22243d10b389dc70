"""The ``minikube-py`` command. Each sub-command lives in its own module under ``minikube_py.cli``
and exposes ``register(subparsers)``; the chosen one's ``run(args)`` returns the exit code.

Errors a user can cause end as one line on stderr and exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Sub-command modules, in the order ``--help`` lists them.
COMMAND_MODULES: list[str] = [
    "minikube_py.cli.up_cmd",
    "minikube_py.cli.lab_cmd",
    "minikube_py.cli.apiserver_cmd",
    "minikube_py.cli.scheduler_cmd",
    "minikube_py.cli.controller_manager_cmd",
    "minikube_py.cli.kubelet_cmd",
    "minikube_py.cli.runtime_cmd",
    "minikube_py.cli.proxy_cmd",
    "minikube_py.cli.fake_nodes_cmd",
    "minikube_py.cli.image_cmd",
    "minikube_py.cli.pki_cmd",
    "minikube_py.cli.store_cmd",
]


class UserError(Exception):
    """A mistake the user can fix; printed as one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minikube-py",
        description="The Kubernetes architecture as real programs: control plane, nodes and the lab.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except UserError as e:
        print(f"minikube-py {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
