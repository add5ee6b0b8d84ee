#!/usr/bin/env bash
# Apply the appliance playbook (ansible/site.yml) to a root filesystem directory from the build
# host through Ansible's community.general.chroot connection; no Ansible ends up in the image.
# Usage: apply-playbook.sh ROOTFS_DIR
# MEDTLS_NATIVE_ROOT: a build-native-python.sh root of the build host's architecture. When set,
#   Ansible's modules run with its python3 (mounted read-only inside the image root, under the
#   build-only /run) instead of the image's own python3 under qemu-user; see docs/image.md.
set -euo pipefail

rootfs=$(realpath "${1:?usage: apply-playbook.sh ROOTFS_DIR}")
repo=$(cd "$(dirname "$0")/../.." && pwd)
playbook=${MEDTLS_PLAYBOOK:-$repo/ansible/site.yml}
inventory=${MEDTLS_INVENTORY:-$repo/ansible/inventories/image}

[ -x "$rootfs/usr/bin/python3" ] || { echo "apply-playbook.sh: $rootfs has no python3" >&2; exit 2; }
if [ ! -f "$playbook" ]; then
  echo "apply-playbook.sh: $playbook not found; the root filesystem stays without the appliance roles" >&2
  exit "${MEDTLS_REQUIRE_PLAYBOOK:-1}"
fi

mounted=()
machine_id=$rootfs/etc/machine-id
machine_id_saved=""
cleanup() {
  local i
  for (( i=${#mounted[@]}-1; i>=0; i-- )); do umount -l "${mounted[$i]}" || true; done
  rm -f "$rootfs/usr/sbin/policy-rc.d"
  if [ -n "$machine_id_saved" ]; then cp -p "$machine_id_saved" "$machine_id"; rm -f "$machine_id_saved"; fi
}
trap cleanup EXIT
mnt() { mount "$@"; mounted+=("${!#}"); }

# An image has no machine-id (each box makes its own at first boot), but tools the play runs
# may ask for one (`systemd-id128 machine-id` in AIDE's configuration check): a throwaway id
# during the play, the image's (empty) file back afterwards.
if [ -f "$machine_id" ] && ! grep -Eqx '[0-9a-f]{32}' "$machine_id"; then
  machine_id_saved=$(mktemp)
  cp -p "$machine_id" "$machine_id_saved"
  tr -d '-' < /proc/sys/kernel/random/uuid > "$machine_id"
fi

# The chroot connection mounts nothing; package scripts and some modules need these.
install -m 0755 "$repo/image/files/policy-rc.d" "$rootfs/usr/sbin/policy-rc.d"
mnt -t proc proc "$rootfs/proc"
mnt -t sysfs sysfs "$rootfs/sys"
mnt --bind /dev "$rootfs/dev"
mnt -t devpts devpts "$rootfs/dev/pts"
mnt -t tmpfs tmpfs "$rootfs/run"

image_python=""
if [ -n "${MEDTLS_NATIVE_ROOT:-}" ]; then
  native=$(realpath "$MEDTLS_NATIVE_ROOT")
  [ -x "$native/usr/bin/python3" ] || { echo "apply-playbook.sh: $native has no python3" >&2; exit 2; }
  target_arch=$(chroot "$rootfs" dpkg --print-architecture)
  mkdir "$rootfs/run/medtls-native"
  mnt --bind "$native" "$rootfs/run/medtls-native"
  mount -o remount,bind,ro "$rootfs/run/medtls-native"
  # python3-apt of the build host's architecture reads the image's dpkg database: it must take
  # the image's architecture as the native one, or package_facts reports "python3:arm64".
  printf 'APT::Architecture "%s";\nAPT::Architectures { "%s"; };\n' "$target_arch" "$target_arch" \
    > "$rootfs/run/medtls-native.apt.conf"
  "$repo/image/scripts/native-python.sh" /run/medtls-native "$target_arch" > "$rootfs/run/medtls-python3"
  chmod 0755 "$rootfs/run/medtls-python3"
  image_python=/run/medtls-python3
  echo "apply-playbook.sh: modules run with the build host's python3 from $native (${target_arch} image)"
fi

playbook_cmd=ansible-playbook
if [ -x "$repo/.venv/bin/ansible-playbook" ]; then playbook_cmd=$repo/.venv/bin/ansible-playbook; fi
# Extra arguments (e.g. -e @site-vars.yml) come word-split from MEDTLS_PLAYBOOK_ARGS.
read -r -a extra <<< "${MEDTLS_PLAYBOOK_ARGS:-}"
MEDTLS_IMAGE_ROOT=$rootfs MEDTLS_IMAGE_PYTHON=$image_python \
ANSIBLE_CONFIG=${ANSIBLE_CONFIG:-$repo/ansible/ansible.cfg} ANSIBLE_NOCOLOR=1 \
  "$playbook_cmd" -i "$inventory" -e medtls_build_context=image "${extra[@]}" "$playbook"
