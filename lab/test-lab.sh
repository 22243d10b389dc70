#!/usr/bin/env bash
# The lab end to end, as `make test` runs it: pytest over tests/lab/ with the lab fixtures in charge
# (bring-up, provisioning, placement, smoke, idempotence, reset, destroy), then lab-down whatever
# happened, so that no run, failed or interrupted, leaves a lab behind.
#
#   lab/test-lab.sh [pytest args]     MASTERS/WORKERS default to 1 and 2
set -euo pipefail
source "$(dirname "$0")/common.sh"

cd "$LAB_ROOT"
# Said before pytest starts: a host that cannot run the lab fails here with the reason, never skips.
require_root test-lab
require_host_packages
require_box

# The CI clone must not be blocked by a lab another checkout left up (the session's own, say): any
# minikube-py lab recorded in the registry is ours by construction and is removed (bridge.sh says so).
export MINIKUBE_PY_LAB_RECLAIM=1
# The fixtures bring the lab up and destroy it; without this they expect a lab `make lab` made.
export MINIKUBE_PY_LAB_E2E=1
export MASTERS=${MASTERS:-1} WORKERS=${WORKERS:-2}

teardown() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$(our_containers)" ] || ip link show dev "$LAB_BRIDGE" >/dev/null 2>&1 || [ -e "$LAB_STATE_DIR" ]; then
    echo "minikube-py lab: tearing down what the tests left"
    "$LAB_DIR/lab-down.sh" || rc=1
  fi
  exit "$rc"
}
trap teardown EXIT

# pytest runs in a process group of its own, waited for in the background: a signal then reaches this
# script at once (bash defers traps while a foreground command runs), which stops pytest and whatever
# it started (vagrant, ansible-playbook) before the teardown.
start=$(date +%s)
rc=0
setsid "$LAB_ROOT/.venv/bin/pytest" -q -p no:cacheprovider -rfE tests/lab "$@" &
pytest_pid=$!
stop() {
  echo "minikube-py lab: interrupted: stopping the tests" >&2
  kill -TERM -- "-$pytest_pid" 2>/dev/null || kill -TERM "$pytest_pid" 2>/dev/null || true
  wait "$pytest_pid" 2>/dev/null || true
  exit "$1"
}
trap 'stop 130' INT
trap 'stop 143' TERM
wait "$pytest_pid" || rc=$?
echo "lab end to end in $(($(date +%s) - start)) s (load average $(cut -d' ' -f1-3 /proc/loadavg))"
exit "$rc"
