#!/usr/bin/env bash
# The lab end to end, as `make test` runs it: pytest over tests/lab/ with the lab fixtures in charge
# (bring-up, provisioning, placement, smoke, idempotence, reset, destroy) on the default lab, then a
# second lab of 3 masters and 2 workers for HA (placement, and tests/lab/test_ha.py: one master
# stopped, the cluster keeps working, the master rejoins), then lab-down whatever happened, so that no
# run, failed or interrupted, leaves a lab behind.
#
#   lab/test-lab.sh [pytest args]     MASTERS/WORKERS default to 1 and 2 for the first lab;
#                                     MINIKUBE_PY_LAB_HA=0 skips the HA lab
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
masters=${MASTERS:-1} workers=${WORKERS:-2}

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
pytest_pid=""
stop() {
  echo "minikube-py lab: interrupted: stopping the tests" >&2
  if [ -n "$pytest_pid" ]; then
    kill -TERM -- "-$pytest_pid" 2>/dev/null || kill -TERM "$pytest_pid" 2>/dev/null || true
    wait "$pytest_pid" 2>/dev/null || true
  fi
  exit "$1"
}
trap 'stop 130' INT
trap 'stop 143' TERM

# One lab's session: its fixtures bring the lab up and destroy it at the end.
session() {
  local what=$1 m=$2 w=$3 start rc=0
  shift 3
  start=$(date +%s)
  MASTERS=$m WORKERS=$w setsid "$LAB_ROOT/.venv/bin/pytest" -q -p no:cacheprovider -rfE "$@" &
  pytest_pid=$!
  wait "$pytest_pid" || rc=$?
  pytest_pid=""
  echo "$what ($m master(s), $w worker(s)) end to end in $(($(date +%s) - start)) s (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  return "$rc"
}

# Each session starts from no machines (the substrate tests check bare ones, and the sessions share
# the addresses): a lab this checkout has up, from `make lab` or the session before, is replaced.
clear_lab() {
  [ -z "$(our_containers)" ] && return 0
  echo "minikube-py lab: replacing this checkout's lab: the tests bring up their own"
  "$LAB_DIR/lab-down.sh"
}

clear_lab

rc=0
session "lab" "$masters" "$workers" tests/lab --ignore=tests/lab/test_ha.py "$@" || rc=$?
if [ "${MINIKUBE_PY_LAB_HA:-1}" != 0 ]; then
  clear_lab || rc=1
  session "HA lab" 3 2 tests/lab/test_placement.py tests/lab/test_ha.py "$@" || rc=$?
fi
exit "$rc"
