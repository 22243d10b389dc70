#!/usr/bin/env bash
# Builds the lab's vagrant-lxc box (Debian bookworm from Debian packages, with everything the roles
# need baked in) and adds it to Vagrant as minikube-py/bookworm at the version derived from this
# recipe (this script, packages.txt and pyproject's dependency list). The box lives outside the
# clone, so later runs and other clones skip the build; a changed recipe gives a new version. A cached
# box that fails its checksum, or one Vagrant holds only in part, is replaced rather than used.
#
# Usage: lab/box/build-box.sh          (MINIKUBE_PY_DEBIAN_MIRROR overrides the mirror)
#        lab/box/build-box.sh --check  says whether the box is ready, builds nothing (exit 1 if not)
set -euo pipefail
source "$(dirname "$0")/../common.sh"

require_root box

add_box() {
  if [ -d "$BOX_DIR" ] && ! box_added_whole; then
    echo "minikube-py lab: Vagrant's copy of $BOX_NAME $BOX_VERSION is incomplete ($BOX_DIR): replacing it" >&2
    vagrant box remove --force --provider lxc --box-version "$BOX_VERSION" "$BOX_NAME" >/dev/null 2>&1 \
      || rm -rf "$BOX_DIR"
  fi
  box_added_whole && return 0
  vagrant box add --provider lxc "$BOX_METADATA" >/dev/null
  # Machines share the box's rootfs unpacked once (lxc-template): unpacked now, `up` does not wait for it.
  "$BOX_DIR/lxc-template" --tarball "$BOX_DIR/rootfs.tar.gz" --prepare
  echo "Added $BOX_NAME $BOX_VERSION (recipe $BOX_HASH) to Vagrant"
}

# Other versions of our box in Vagrant that no container uses: each holds ~0.9 GB once its rootfs is
# unpacked (lxc-template). Their cached .box files stay, so a checkout of another recipe re-adds its
# version in seconds.
prune_old_boxes() {
  local versions dir
  versions=$(dirname "$(dirname "$BOX_DIR")")
  for dir in "$versions"/*/; do
    dir=${dir%/}
    [ "$dir" != "$(dirname "$BOX_DIR")" ] || continue
    if grep -qsF "$dir/" /var/lib/lxc/*/config; then
      continue
    fi
    rm -rf --one-file-system "$dir"
    echo "Removed the unused $BOX_NAME ${dir##*/} from Vagrant"
  done
}

# The cached box file matches the checksum recorded when it was built (a truncated copy, a disk error).
cached_box_intact() {
  [ -f "$BOX_FILE" ] && [ -f "$BOX_METADATA" ] || return 1
  local want
  want=$(sed -n 's/.*"checksum": "\([0-9a-f]\{64\}\)".*/\1/p' "$BOX_METADATA")
  [ -n "$want" ] && [ "$(sha256sum "$BOX_FILE" | cut -d' ' -f1)" = "$want" ]
}

if [ "${1:-}" = --check ]; then
  if box_added_whole; then
    echo "box $BOX_NAME $BOX_VERSION is ready ($BOX_DIR)"
  elif cached_box_intact; then
    die "box $BOX_FILE is built but not added to Vagrant: run 'make box' (it adds it)"
  elif [ -f "$BOX_FILE" ] || [ -f "$BOX_METADATA" ]; then
    die "the cached box $BOX_FILE is damaged (checksum mismatch or missing metadata): run 'make box' (it rebuilds it)"
  elif [ -d "$BOX_DIR" ]; then
    die "box $BOX_NAME $BOX_VERSION in $BOX_DIR is incomplete: run 'make box' (it replaces it)"
  else
    die "box $BOX_NAME $BOX_VERSION (recipe $BOX_HASH) is not built: run 'make box'"
  fi
  exit 0
fi

install_host_packages

# The Debian archive this machine already uses: the first bookworm entry in its apt sources.
debian_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                       if ($(i + 1) == "bookworm") { print $i; exit } }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'BEGIN { RS = ""; FS = "\n" }
         { types = uris = suites = ""; enabled = 1
           for (n = 1; n <= NF; n++) {
             if ($n ~ /^#/) continue
             split($n, kv, ":[ \t]*"); key = tolower(kv[1]); val = substr($n, length(kv[1]) + 2)
             gsub(/^[ \t]+/, "", val)
             if (key == "types") types = val; else if (key == "uris") uris = val
             else if (key == "suites") suites = val; else if (key == "enabled" && val == "no") enabled = 0
           }
           if (enabled && (" " types " ") ~ / deb / && (" " suites " ") ~ / bookworm /) {
             split(uris, u, /[ \t]+/); print u[1]; exit } }' "$f"
  done
}

mirror=${MINIKUBE_PY_DEBIAN_MIRROR:-$(debian_mirror | head -n1)}
[ -n "$mirror" ] || die "no Debian bookworm archive in /etc/apt/sources.list*: add one, or set MINIKUBE_PY_DEBIAN_MIRROR"

mkdir -p "$BOX_CACHE" /var/cache/minikube-py/debs
exec 9>"$BOX_CACHE/.build.lock"
flock 9  # a second `make box` waits for the first instead of building the same box twice

if box_added_whole && [ -f "$BOX_METADATA" ]; then
  prune_old_boxes
  echo "Box $BOX_NAME $BOX_VERSION is up to date ($BOX_FILE)"
  exit 0
fi
if cached_box_intact; then
  add_box
  prune_old_boxes
  echo "Box $BOX_NAME $BOX_VERSION is up to date ($BOX_FILE)"
  exit 0
fi
if [ -f "$BOX_FILE" ] || [ -f "$BOX_METADATA" ]; then
  echo "minikube-py lab: the cached box $BOX_FILE is damaged (checksum mismatch or missing metadata): rebuilding it" >&2
  rm -f "$BOX_FILE" "$BOX_METADATA"
fi

vagrant_key=$(ls /usr/share/rubygems-integration/all/gems/vagrant-[0-9]*/keys/vagrant.pub \
  /opt/vagrant/embedded/gems/gems/vagrant-[0-9]*/keys/vagrant.pub 2>/dev/null | head -n1 || true)
[ -n "$vagrant_key" ] || die "Vagrant's insecure public key not found: reinstall the vagrant package"

start=$(date +%s)
work=$(mktemp -d "$BOX_CACHE/.build.XXXXXX")
trap 'rm -rf --one-file-system "$work"' EXIT
rootfs=$work/rootfs

packages=$(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$LAB_DIR/box/packages.txt" | grep -v '^$')

# Mounts made while building (debootstrap's /proc and /sys, our bind of the package cache) live in
# a private mount namespace: they vanish with it, even when the build is killed halfway.
phase_start=
phase() {  # where the build's time goes, printed as it goes
  local now
  now=$(date +%s)
  [ -z "$phase_start" ] || echo "  ($((now - phase_start)) s)"
  phase_start=$now
  echo "$1"
}
phase "debootstrap bookworm from $mirror"
unshare --mount --propagation private -- \
  debootstrap --variant=minbase --cache-dir=/var/cache/minikube-py/debs bookworm "$rootfs" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }

# No daemon may start inside the build chroot.
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
chmod 755 "$rootfs/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"

phase "installing $(echo $packages | wc -w) packages"
unshare --mount --propagation private -- env ROOTFS="$rootfs" PACKAGES="$packages" bash -euo pipefail -c '
  mount -t proc proc "$ROOTFS/proc"
  mount --bind /var/cache/minikube-py/debs "$ROOTFS/var/cache/apt/archives"
  in_root() { chroot "$ROOTFS" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }
  in_root apt-get update -qq
  wanted=""
  for p in $PACKAGES; do
    case $p in
      *\?) p=${p%\?}; in_root apt-cache show "$p" >/dev/null 2>&1 || { echo "  (not in the archive: $p)"; continue; } ;;
    esac
    wanted="$wanted $p"
  done
  in_root apt-get install -y -qq --no-install-recommends $wanted
  in_root apt-get clean
' >"$work/install.log" 2>&1 || { tail -n 20 "$work/install.log" >&2; die "installing the box packages failed (log above)"; }
grep '(not in the archive' "$work/install.log" || true

# minikube-py's dependencies, baked in: provisioning then installs only minikube-py's own wheel.
# (The recipe hash covers the dependency list, so a new dependency builds a new box.)
phase "python dependencies into /opt/minikube-py/venv"
"$LAB_DIR/wheelhouse.sh" deps
mkdir -p "$rootfs/tmp/wheels"
tar -xf "$DEPS_WHEELS/wheels.tar" -C "$rootfs/tmp/wheels"
unshare --mount --propagation private -- env ROOTFS="$rootfs" DEPS_HASH="$DEPS_HASH" bash -euo pipefail -c '
  mount -t proc proc "$ROOTFS/proc"
  in_root() { chroot "$ROOTFS" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"; }
  in_root python3 -m venv /opt/minikube-py/venv
  in_root /opt/minikube-py/venv/bin/pip install -q --disable-pip-version-check --no-index --no-cache-dir \
    --find-links /tmp/wheels -r /tmp/wheels/requirements.txt
  echo "$DEPS_HASH" >"$ROOTFS/opt/minikube-py/venv/minikube-py-deps"
' >"$work/venv.log" 2>&1 || { tail -n 20 "$work/venv.log" >&2; die "installing the python dependencies into the box failed (log above)"; }
rm -rf "$rootfs/tmp/wheels"

phase "configuring"
in_root() { chroot "$rootfs" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

in_root useradd --create-home --shell /bin/bash --user-group vagrant
install -d -m 700 -o "$(in_root id -u vagrant)" -g "$(in_root id -g vagrant)" "$rootfs/home/vagrant/.ssh"
install -m 600 -o "$(in_root id -u vagrant)" -g "$(in_root id -g vagrant)" "$vagrant_key" \
  "$rootfs/home/vagrant/.ssh/authorized_keys"
echo 'vagrant ALL=(ALL) NOPASSWD:ALL' >"$rootfs/etc/sudoers.d/vagrant"
chmod 440 "$rootfs/etc/sudoers.d/vagrant"

# Every machine makes its own host keys on first boot; Debian's unit runs `sshd -t` first, which
# fails without keys, so the drop-in restates the list with the key generation in front.
rm -f "$rootfs"/etc/ssh/ssh_host_*
mkdir -p "$rootfs/etc/systemd/system/ssh.service.d"
cat >"$rootfs/etc/systemd/system/ssh.service.d/host-keys.conf" <<'EOF'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
EOF
echo 'UseDNS no' >"$rootfs/etc/ssh/sshd_config.d/lab.conf"

# systemd-networkd owns eth0 but keeps the address LXC gives it; no DHCP, no RA: the lab bridge
# has neither, and the machines need no route out.
cat >"$rootfs/etc/systemd/network/10-eth0.network" <<'EOF'
[Match]
Name=eth0

[Network]
DHCP=no
LinkLocalAddressing=no
IPv6AcceptRA=no
KeepConfiguration=yes
EOF
in_root systemctl enable systemd-networkd.service >/dev/null 2>&1
in_root systemctl disable systemd-networkd-wait-online.service >/dev/null 2>&1 || true

# The hostname arrives from LXC at start; resolving it locally keeps sudo and `hostname -f`
# (which Vagrant checks before renaming a machine) from waiting on a DNS that is not there.
cat >"$rootfs/usr/local/sbin/lab-hostname-hosts" <<'EOF'
#!/bin/sh
name=$(hostname)
grep -q "^127\.0\.1\.1[[:space:]]\+$name\$" /etc/hosts || printf '127.0.1.1\t%s\n' "$name" >>/etc/hosts
EOF
chmod 755 "$rootfs/usr/local/sbin/lab-hostname-hosts"
cat >"$rootfs/etc/systemd/system/lab-hostname-hosts.service" <<'EOF'
[Unit]
Description=Resolve this machine's hostname locally
DefaultDependencies=no
After=local-fs.target
Before=ssh.service sysinit.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/lab-hostname-hosts

[Install]
WantedBy=sysinit.target
EOF
in_root systemctl enable lab-hostname-hosts.service >/dev/null 2>&1
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$rootfs/etc/hosts"
# debootstrap copies the build host's name; without the file systemd keeps the one LXC sets.
rm -f "$rootfs/etc/hostname"

# Role daemons start where the roles enable them (placement is tested both ways), and nothing
# should poll the network that is not there.
for unit in etcd.service docker-registry.service apt-daily.timer apt-daily-upgrade.timer; do
  in_root systemctl disable "$unit" >/dev/null 2>&1 || true
done

# Per-machine identity: an empty machine-id makes systemd create one on first boot.
: >"$rootfs/etc/machine-id"
[ -L "$rootfs/var/lib/dbus/machine-id" ] || rm -f "$rootfs/var/lib/dbus/machine-id"
rm -f "$rootfs/usr/sbin/policy-rc.d"
echo '# The lab machines have no route out: names come from /etc/hosts.' >"$rootfs/etc/resolv.conf"
# Every machine copies /var/lib (see lxc-template); the package lists are of no use without a route out.
rm -rf "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log \
  "$rootfs"/var/log/apt/* "$rootfs"/tmp/*

phase "packing"
mkdir "$work/box"
printf '{"provider":"lxc","version":"1.0.0","template-opts":{}}\n' >"$work/box/metadata.json"
cat >"$work/box/lxc-config" <<'EOF'
lxc.include = /usr/share/lxc/config/debian.common.conf
lxc.arch = amd64
EOF
# --numeric-owner and xattrs keep ownership and file capabilities (ping, ...) across machines.
tar --numeric-owner --xattrs --xattrs-include='*' -czf "$work/box/rootfs.tar.gz" -C "$work" ./rootfs
install -m 755 "$LAB_DIR/box/lxc-template" "$work/box/lxc-template"
tar -cf "$work/box.tar" -C "$work/box" metadata.json lxc-config lxc-template rootfs.tar.gz
checksum=$(sha256sum "$work/box.tar" | cut -d' ' -f1)
mv "$work/box.tar" "$BOX_FILE"
cat >"$BOX_METADATA.tmp" <<EOF
{"name": "$BOX_NAME", "description": "minikube-py lab box, recipe $BOX_HASH",
 "versions": [{"version": "$BOX_VERSION", "providers": [{"name": "lxc", "url": "file://$BOX_FILE",
   "checksum_type": "sha256", "checksum": "$checksum"}]}]}
EOF
mv "$BOX_METADATA.tmp" "$BOX_METADATA"
phase "adding to Vagrant"
add_box
prune_old_boxes
echo "Built $BOX_FILE ($(du -m "$BOX_FILE" | cut -f1) MiB) in $(($(date +%s) - start)) s"
