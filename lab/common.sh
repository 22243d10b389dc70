# Shared by the lab scripts (sourced, not run). Loads the lab's names from labenv.sh and holds the
# checks every entry point makes before touching LXC, so bad input ends in one line naming the fix.

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
while IFS='=' read -r _key _value; do
  printf -v "$_key" '%s' "$_value"
  export "${_key?}"
done < <("$LAB_DIR/labenv.sh")
unset _key _value

# Vagrant phones HashiCorp (version checkpoint, box updates) unless told not to; the lab talks to
# nothing but its own bridge.
export VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_BOX_UPDATE_CHECK_DISABLE=1
export VAGRANT_DEFAULT_PROVIDER=${VAGRANT_DEFAULT_PROVIDER:-lxc}

HOST_PACKAGES=${MINIKUBE_PY_LAB_HOST_PACKAGES:-"vagrant vagrant-lxc lxc lxc-templates debootstrap bridge-utils sudo"}

die() {
  echo "minikube-py lab: $*" >&2
  exit 1
}

require_root() {
  [ "$(id -u)" = 0 ] || die "needs root (the LXC machines are privileged containers): run it as root, e.g. 'sudo make $1'"
}

missing_host_packages() {
  local p missing=""
  for p in $HOST_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
  done
  echo "${missing# }"
}

install_host_packages() {
  local missing
  missing=$(missing_host_packages)
  [ -z "$missing" ] && return 0
  echo "Installing Debian packages: $missing"
  apt-get update -qq
  # Recommends would pull in qemu, libvirt and a kernel (~460 packages).
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

require_host_packages() {
  local missing
  missing=$(missing_host_packages)
  [ -z "$missing" ] || die "Debian packages missing: $missing: run 'make box' (it installs them)"
}

# Vagrant holds the whole box: an interrupted `vagrant box add` or a deleted file leaves it in part.
box_added_whole() {
  [ -f "$BOX_DIR/metadata.json" ] && [ -f "$BOX_DIR/lxc-config" ] && [ -x "$BOX_DIR/lxc-template" ] \
    && [ -s "$BOX_DIR/rootfs.tar.gz" ]
}

require_box() {
  [ -d "$BOX_DIR" ] || die "box $BOX_NAME $BOX_VERSION (recipe $BOX_HASH) is not built: run 'make box'"
  box_added_whole \
    || die "box $BOX_NAME $BOX_VERSION in $BOX_DIR is incomplete: run 'make box' (it replaces it)"
}

# Containers of this checkout, whatever their state.
our_containers() {
  lxc-ls -1 2>/dev/null | grep "^${LAB_CONTAINER_PREFIX}" || true
}
