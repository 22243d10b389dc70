#!/usr/bin/env bash
# The lab's host bridge: one per checkout (mkpy-<id>), host side 192.168.56.1/24, never routed.
#
#   lab/bridge.sh up      create it if missing (idempotent; parallel `vagrant up`s call it at once)
#   lab/bridge.sh down    remove it once no container of this checkout is left
#   lab/bridge.sh check   fail (one line) if another interface holds the lab's addresses
set -euo pipefail
source "$(dirname "$0")/common.sh"

require_root "lab-${1:-up}"
mkdir -p /run/lock "$LAB_REGISTRY_DIR"
exec 8>"/run/lock/$LAB_BRIDGE.lock"
flock 8

bridge_exists() { ip link show dev "$1" >/dev/null 2>&1; }

# Interfaces other than ours with an IPv4 address in 192.168.56.0/24 (vboxnet0, another clone's
# bridge, ...): two would make the host's route to the lab ambiguous.
foreign_holders() {
  ip -4 -o addr show | awk -v ours="$LAB_BRIDGE" '$2 != ours && $4 ~ /^192\.168\.56\./ { print $2 }' | sort -u
}

# A bridge of another minikube-py checkout whose directory is gone is an orphan of ours (a deleted
# clone, a killed CI run): its containers and bridge go. A live checkout's lab is left alone, unless
# MINIKUBE_PY_LAB_RECLAIM=1 (`make test`: the CI clone runs right after a session that may have left
# its lab up). Either way only a lab the registry records is touched: one `make lab-up` made.
reclaim_orphan() {
  local dev=$1 other_id owner name why
  case $dev in mkpy-????????) other_id=${dev#mkpy-} ;; *) return 1 ;; esac
  owner=$(cat "$LAB_REGISTRY_DIR/$other_id" 2>/dev/null || true)
  [ -n "$owner" ] || return 1
  if [ ! -e "$owner/Vagrantfile" ]; then
    why="its checkout is gone"
  elif [ "${MINIKUBE_PY_LAB_RECLAIM:-}" = 1 ]; then
    why="MINIKUBE_PY_LAB_RECLAIM=1: 'make test' replaces any other minikube-py lab"
  else
    return 1
  fi
  if [ "$why" = "its checkout is gone" ]; then
    echo "minikube-py lab: removing the orphaned lab of $owner ($why)" >&2
  else
    echo "minikube-py lab: removing the lab of $owner ($why)" >&2
  fi
  for name in $(lxc-ls -1 2>/dev/null | grep "^mkpy-$other_id-" || true); do
    lxc-stop -k -n "$name" >/dev/null 2>&1 || true
    lxc-destroy -n "$name" >/dev/null
  done
  ip link del dev "$dev"
  rm -f "$LAB_REGISTRY_DIR/$other_id"
}

check_free() {
  local dev owner
  for dev in $(foreign_holders); do
    reclaim_orphan "$dev" && continue
    owner=$(cat "$LAB_REGISTRY_DIR/${dev#mkpy-}" 2>/dev/null || true)
    if [ -n "$owner" ]; then
      die "192.168.56.0/24 is in use by $dev, the lab of $owner: run 'make lab-down' there first"
    fi
    die "192.168.56.0/24 is in use by interface $dev: remove it ('ip link del $dev') or free that address range"
  done
}

case ${1:-} in
  check)
    check_free
    ;;
  up)
    check_free
    bridge_exists "$LAB_BRIDGE" || ip link add name "$LAB_BRIDGE" type bridge
    addrs=$(ip -4 -o addr show dev "$LAB_BRIDGE")
    [[ $addrs == *" $LAB_HOST_ADDRESS/$LAB_PREFIX_LEN "* ]] \
      || ip addr add "$LAB_HOST_ADDRESS/$LAB_PREFIX_LEN" dev "$LAB_BRIDGE"
    # The host forwards globally (ip_forward=1); off on this bridge, nothing from the lab leaves it.
    sysctl -qw "net.ipv4.conf.$LAB_BRIDGE.forwarding=0"
    sysctl -qw "net.ipv6.conf.$LAB_BRIDGE.disable_ipv6=1"
    ip link set dev "$LAB_BRIDGE" up
    echo "$LAB_ROOT" >"$LAB_REGISTRY_DIR/$LAB_ID"
    ;;
  down)
    if [ -n "$(our_containers)" ]; then
      exit 0  # another machine of this lab still uses it
    fi
    if bridge_exists "$LAB_BRIDGE"; then
      ip link del dev "$LAB_BRIDGE"
    fi
    rm -f "$LAB_REGISTRY_DIR/$LAB_ID"
    ;;
  *)
    echo "usage: $0 up|down|check" >&2
    exit 2
    ;;
esac
