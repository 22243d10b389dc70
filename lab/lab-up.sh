#!/usr/bin/env bash
# Brings the lab up: MASTERS (default 1) and WORKERS (default 2) machines, all started before any
# is provisioned, then the ssh config and inventory. Machines already up are reused.
set -euo pipefail
source "$(dirname "$0")/common.sh"

require_root lab-up
require_host_packages
require_box
cd "$LAB_ROOT"

# A rerun after a killed one (or a removed .vagrant/) finds containers Vagrant no longer knows:
# they carry this checkout's prefix, so they are ours to remove before their names are reused.
for name in $(our_containers); do
  grep -qsx "$name" .vagrant/machines/*/lxc/id || {
    echo "removing stale container $name"
    lxc-stop -k -n "$name" >/dev/null 2>&1 || true
    lxc-destroy -n "$name" >/dev/null
  }
done

"$LAB_DIR/bridge.sh" up  # here rather than only in the Vagrantfile trigger: a busy address ends in one line

mkdir -p "$LAB_STATE_DIR"
saved() { sed -n "s/^$1=//p" "$LAB_STATE_DIR/lab.env" 2>/dev/null || true; }
masters=${MASTERS:-$(saved MASTERS)}
workers=${WORKERS:-$(saved WORKERS)}
printf 'MASTERS=%s\nWORKERS=%s\n' "${masters:-1}" "${workers:-2}" >"$LAB_STATE_DIR/lab.env"
export MASTERS=${masters:-1} WORKERS=${workers:-2}

start=$(date +%s)
vagrant up --no-provision --provider lxc
echo "machines up in $(($(date +%s) - start)) s"
"$LAB_DIR/lab-inventory.sh"
