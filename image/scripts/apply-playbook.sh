#!/usr/bin/env bash
# Apply the appliance playbook (ansible/site.yml) to a root filesystem directory from the build
# host through Ansible's community.general.chroot connection; no Ansible ends up in the image.
# Usage: apply-playbook.sh ROOTFS_DIR
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
cleanup() {
  local i
  for (( i=${#mounted[@]}-1; i>=0; i-- )); do umount -l "${mounted[$i]}" || true; done
  rm -f "$rootfs/usr/sbin/policy-rc.d"
}
trap cleanup EXIT
mnt() { mount "$@"; mounted+=("${!#}"); }

# The chroot connection mounts nothing; package scripts and some modules need these.
install -m 0755 "$repo/image/files/policy-rc.d" "$rootfs/usr/sbin/policy-rc.d"
mnt -t proc proc "$rootfs/proc"
mnt -t sysfs sysfs "$rootfs/sys"
mnt --bind /dev "$rootfs/dev"
mnt -t devpts devpts "$rootfs/dev/pts"
mnt -t tmpfs tmpfs "$rootfs/run"

playbook_cmd=ansible-playbook
if [ -x "$repo/.venv/bin/ansible-playbook" ]; then playbook_cmd=$repo/.venv/bin/ansible-playbook; fi
# Extra arguments (e.g. -e @site-vars.yml) come word-split from MEDTLS_PLAYBOOK_ARGS.
read -r -a extra <<< "${MEDTLS_PLAYBOOK_ARGS:-}"
MEDTLS_IMAGE_ROOT=$rootfs \
ANSIBLE_CONFIG=${ANSIBLE_CONFIG:-$repo/ansible/ansible.cfg} ANSIBLE_NOCOLOR=1 \
  "$playbook_cmd" -i "$inventory" -e medtls_build_context=image "${extra[@]}" "$playbook"
