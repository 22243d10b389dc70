#!/usr/bin/env bash
# What the lab machines install, built on the controller (the machines have no route out):
#
#   lab/wheelhouse.sh deps   the third-party dependencies of pyproject.toml as wheels, one archive
#                            ($DEPS_WHEELS/wheels.tar, shared by every clone): the box bakes them into
#                            /opt/minikube-py/venv; a machine without them (another provider's box)
#                            gets them from the common role. Built once per dependency list.
#   lab/wheelhouse.sh        the deps (above), then minikube-py's own wheel in .lab/wheelhouse/, rebuilt
#                            only when the source changed, and .lab/wheelhouse.sha256 (the manifest the
#                            common role compares with what a machine has installed).
set -euo pipefail
source "$(dirname "$0")/common.sh"

pip=$LAB_ROOT/.venv/bin/pip
[ -x "$pip" ] || die "no virtual environment at $LAB_ROOT/.venv: run 'make deps'"

build_deps() {
  [ -f "$DEPS_WHEELS/wheels.tar" ] && return 0
  require_root wheelhouse
  mkdir -p "$(dirname "$DEPS_WHEELS")"
  exec 7>"$DEPS_WHEELS.lock"
  flock 7  # the box build and `make wheelhouse` may ask at once
  [ -f "$DEPS_WHEELS/wheels.tar" ] && return 0
  local work
  work=$(mktemp -d "$DEPS_WHEELS.XXXXXX")
  # shellcheck disable=SC2064  # the path is fixed now
  trap "rm -rf '$work'" EXIT
  "$LAB_DIR/labenv.sh" --deps >"$work/requirements.txt"
  echo "Building the dependency wheels ($(wc -l <"$work/requirements.txt") requirements) into $DEPS_WHEELS"
  mkdir "$work/wheels"
  "$pip" wheel -q --disable-pip-version-check -w "$work/wheels" -r "$work/requirements.txt" \
    || die "building the dependency wheels failed (pip above): check the network to PyPI and rerun"
  cp "$work/requirements.txt" "$work/wheels/requirements.txt"
  tar -cf "$work/wheels.tar" -C "$work/wheels" .
  mkdir -p "$DEPS_WHEELS"
  cp "$work/requirements.txt" "$DEPS_WHEELS/requirements.txt"
  mv "$work/wheels.tar" "$DEPS_WHEELS/wheels.tar"  # last: its presence means complete
  rm -rf "$work"
  trap - EXIT
}

# The package's inputs: its source and pyproject.toml. Same inputs, same wheel (SOURCE_DATE_EPOCH):
# skipping the build keeps a rerun from spending seconds on an identical file.
source_hash() {
  (cd "$LAB_ROOT" && find minikube_py pyproject.toml -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}

build_package() {
  local house=$LAB_STATE_DIR/wheelhouse src wheel
  src=$(source_hash)
  wheel=$(ls "$house"/minikube_py-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ] || [ "$(cat "$house/source.sha256" 2>/dev/null)" != "$src" ]; then
    mkdir -p "$house"
    rm -rf "$LAB_ROOT/build" "$house"/*.whl
    (cd "$LAB_ROOT" && SOURCE_DATE_EPOCH=315532800 "$pip" wheel -q --disable-pip-version-check --no-deps \
      -w "$house" .) || die "building the minikube-py wheel failed (pip above)"
    echo "$src" >"$house/source.sha256"
    wheel=$(ls "$house"/minikube_py-*.whl)
  fi
  # What a machine must have: this wheel and this dependency list. Units carry its hash, so a new
  # package restarts them.
  { (cd "$house" && sha256sum "$(basename "$wheel")"); echo "deps $DEPS_HASH"; } >"$LAB_STATE_DIR/wheelhouse.sha256.tmp"
  mv "$LAB_STATE_DIR/wheelhouse.sha256.tmp" "$LAB_STATE_DIR/wheelhouse.sha256"
  echo "$DEPS_WHEELS/wheels.tar" >"$house/deps-archive"
}

case ${1:-all} in
  deps) build_deps ;;
  all) build_deps; build_package ;;
  *) echo "usage: $0 [deps]" >&2; exit 2 ;;
esac
