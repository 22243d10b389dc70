#!/usr/bin/env bash
# The lab's names, derived in one place and printed as KEY=VALUE lines for the Makefile scripts,
# the Vagrantfile and the Python helpers. Names carry a hash of the checkout's path so that two
# clones on one machine (or a session's leftovers and the CI clone) never share a container or bridge.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
root=$(dirname "$here")
lab_id=$(printf '%s' "$root" | sha256sum | cut -c1-8)

# The box is keyed by its recipe: every file under lab/box/, in byte order of the path.
recipe_hash=$(cd "$here/box" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum \
  | sha256sum | cut -c1-16)
cache=${MINIKUBE_PY_BOX_CACHE:-/var/cache/minikube-py/boxes}

cat <<EOF
LAB_ROOT=$root
LAB_ID=$lab_id
LAB_BRIDGE=mkpy-$lab_id
LAB_CONTAINER_PREFIX=mkpy-$lab_id-
LAB_HOST_ADDRESS=192.168.56.1
LAB_PREFIX_LEN=24
LAB_STATE_DIR=$root/.lab
LAB_REGISTRY_DIR=/var/lib/minikube-py/labs
BOX_NAME=minikube-py/bookworm
BOX_HASH=$recipe_hash
BOX_VERSION=1.0.$((16#${recipe_hash:0:7}))
BOX_CACHE=$cache
BOX_FILE=$cache/$recipe_hash.box
BOX_METADATA=$cache/$recipe_hash.json
BOX_DIR=${VAGRANT_HOME:-$HOME/.vagrant.d}/boxes/minikube-py-VAGRANTSLASH-bookworm/1.0.$((16#${recipe_hash:0:7}))/lxc
EOF
