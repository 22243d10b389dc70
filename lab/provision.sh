#!/usr/bin/env bash
# One Ansible run over the lab machines (`make provision`): playbooks/site.yml with the inventory
# `make lab-up` wrote. Ansible's own output stays as it is; its log goes to .lab/logs/ansible.log, and
# when the run fails the last lines name each failed task with its machine, the cause and the fix.
# Every step is idempotent, so a rerun picks up where a failed one stopped.
#
#   lab/provision.sh [ansible-playbook args]      e.g. -e kubelet_health_retries=5, --limit worker1
set -euo pipefail
source "$(dirname "$0")/common.sh"

cd "$LAB_ROOT"
[ -f inventory/lab.ini ] || die "no inventory/lab.ini: run 'make lab-up' first"
mkdir -p "$LAB_STATE_DIR/logs"
log=$LAB_STATE_DIR/logs/ansible.log
rm -f "$log"
rc=0
ANSIBLE_LOG_PATH=$log "$LAB_ROOT/.venv/bin/ansible-playbook" playbooks/site.yml "$@" || rc=$?
if [ "$rc" != 0 ]; then
  "$LAB_ROOT/.venv/bin/python" -m minikube_py.lab.failure "$log" >&2 || true
fi
exit "$rc"
