#!/usr/bin/env bash
# Tears the lab of this checkout down: its machines, any stale container with its prefix, the
# bridge, and the local state (.lab/, inventory/lab.ini, .vagrant/).
set -euo pipefail
source "$(dirname "$0")/common.sh"

require_root lab-down
cd "$LAB_ROOT"

if [ -f "$LAB_STATE_DIR/ssh-config" ]; then
  # End the shared ssh connections before their machines vanish.
  for host in $(awk '$1 == "Host" { print $2 }' "$LAB_STATE_DIR/ssh-config"); do
    ssh -F "$LAB_STATE_DIR/ssh-config" -O exit "$host" >/dev/null 2>&1 || true
  done
fi

start=$(date +%s)
# Kill the machines at once, in parallel: there is nothing in them to shut down gracefully, and
# Vagrant would stop them one after another.
for name in $(our_containers); do
  lxc-stop -k -n "$name" >/dev/null 2>&1 &
done
wait
if command -v vagrant >/dev/null && [ -d .vagrant/machines ]; then
  vagrant destroy -f || echo "minikube-py lab: vagrant destroy failed; removing the containers directly" >&2
fi
for name in $(our_containers); do
  echo "removing container $name"
  lxc-stop -k -n "$name" >/dev/null 2>&1 || true
  lxc-destroy -n "$name" >/dev/null
done
"$LAB_DIR/bridge.sh" down
rm -rf "$LAB_STATE_DIR" .vagrant
rm -f "$LAB_ROOT/inventory/lab.ini"
echo "lab down in $(($(date +%s) - start)) s"
