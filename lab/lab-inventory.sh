#!/usr/bin/env bash
# Writes .lab/ssh-config and inventory/lab.ini from `vagrant ssh-config` of the running machines.
set -euo pipefail
source "$(dirname "$0")/common.sh"

python=$LAB_ROOT/.venv/bin/python
[ -x "$python" ] || python=python3
cd "$LAB_ROOT"
PYTHONPATH="$LAB_ROOT${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m minikube_py.lab.inventory --root "$LAB_ROOT"
