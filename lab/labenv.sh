#!/usr/bin/env bash
# The lab's names, derived in one place and printed as KEY=VALUE lines for the Makefile scripts,
# the Vagrantfile and the Python helpers. Names carry a hash of the checkout's path so that two
# clones on one machine (or a session's leftovers and the CI clone) never share a container or bridge.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
root=$(dirname "$here")
lab_id=$(printf '%s' "$root" | sha256sum | cut -c1-8)

# minikube-py's third-party dependencies as pyproject.toml declares them, one per line, sorted: the
# box bakes them into /opt/minikube-py/venv, so they are part of its recipe.
deps=$(python3 -c 'import sys, tomllib; print("\n".join(sorted(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"])))' \
  "$root/pyproject.toml")
if [ "${1:-}" = --deps ]; then  # the list itself, for lab/wheelhouse.sh
  printf '%s\n' "$deps"
  exit 0
fi
deps_hash=$(printf '%s\n' "$deps" | sha256sum | cut -c1-16)

# The box is keyed by its recipe: every file under lab/box/, in byte order of the path, and the
# dependency list.
recipe_hash=$( (cd "$here/box" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum; \
  echo "deps $deps_hash") | sha256sum | cut -c1-16)
cache=${MINIKUBE_PY_BOX_CACHE:-/var/cache/minikube-py/boxes}
wheels=${MINIKUBE_PY_WHEEL_CACHE:-/var/cache/minikube-py/wheels}

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
DEPS_HASH=$deps_hash
DEPS_WHEELS=$wheels/$deps_hash
BOX_DIR=${VAGRANT_HOME:-$HOME/.vagrant.d}/boxes/minikube-py-VAGRANTSLASH-bookworm/1.0.$((16#${recipe_hash:0:7}))/lxc
EOF
