#!/usr/bin/env bash
# Build the offline appliance image: root filesystem (mmdebstrap), image settings, the appliance
# playbook through the chroot connection, then a partitioned disk image.
# Usage: build-image.sh ARCH OUT_DIR
#   Writes OUT_DIR/disk.img, OUT_DIR/rootfs.ext4 (its root filesystem, the payload of
#   `make bundle`), OUT_DIR/vmlinuz, OUT_DIR/initrd.img, OUT_DIR/sbom.cdx.json (CycloneDX
#   1.5: the installed packages plus medtls, see sbom.py) and OUT_DIR/timings.txt.
# Environment: MEDTLS_CACHE_DIR (.deb cache), MEDTLS_PLAYBOOK_ARGS (extra ansible-playbook args),
#   MEDTLS_TEST_GUEST=1 adds the boot test's report unit (test builds only),
#   MEDTLS_NATIVE_PYTHON=0 runs the play's modules with the image's python3 under qemu-user even
#   for a foreign architecture (default: the build host's python3, see build-native-python.sh),
#   plus what configure-rootfs.sh, apply-playbook.sh and install-rauc-keyring.sh
#   (MEDTLS_RAUC_KEYRING: the CA update bundles must be signed under) read.
set -euo pipefail

arch=${1:?usage: build-image.sh ARCH OUT_DIR}
out=${2:?usage: build-image.sh ARCH OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
cache=${MEDTLS_CACHE_DIR:-$(dirname "$out")/cache/$arch}
host_arch=$(dpkg --print-architecture)
rootfs="$out/rootfs"
mkdir -p "$out"
# A failed build must not leave an older image behind for a test to boot.
rm -f "$out/disk.img" "$out/rootfs.ext4" "$out/vmlinuz" "$out/initrd.img" "$out/sbom.cdx.json"
: > "$out/timings.txt"

step() {
  local name=$1 start
  shift
  start=$(date +%s)
  echo "=== image step $name"
  "$@"
  echo "$name $(( $(date +%s) - start ))s" | tee -a "$out/timings.txt"
}

add_test_guest() {
  install -m 0755 "$here/../tests/guest/medtls-boot-report" "$rootfs/usr/local/sbin/"
  install -m 0644 "$here/../tests/guest/medtls-boot-report.service" "$rootfs/etc/systemd/system/"
  chroot "$rootfs" systemctl enable medtls-boot-report.service
}

# A foreign-architecture build runs Python natively (maintainer scripts, Ansible modules).
if [ "$arch" != "$host_arch" ] && [ "${MEDTLS_NATIVE_PYTHON:-1}" = 1 ]; then
  native="$(dirname "$out")/native-$host_arch"
  step native-python "$here/build-native-python.sh" "$native" "${MEDTLS_NATIVE_CACHE_DIR:-$(dirname "$out")/cache/$host_arch}"
  export MEDTLS_NATIVE_ROOT=$native
fi

# MEDTLS_REUSE_ROOTFS=1 (development only) keeps an existing root filesystem instead of rebuilding.
if [ "${MEDTLS_REUSE_ROOTFS:-0}" = 1 ] && [ -x "$rootfs/usr/bin/systemctl" ]; then
  echo "=== image step mmdebstrap skipped: reusing $rootfs"
else
  step mmdebstrap "$here/build-rootfs.sh" "$arch" "$rootfs" "$cache"
fi
step configure "$here/configure-rootfs.sh" "$rootfs"
step boot "$here/configure-boot.sh" "$rootfs"
step playbook "$here/apply-playbook.sh" "$rootfs"
# The A/B image commits or falls back after an update (docs/updates.md "Health gate"); the package
# ships the unit disabled and roles never enable it (ansible/tests/image-context.sh).
step update-gate chroot "$rootfs" systemctl enable medtls-update-gate.service
if [ "${MEDTLS_TEST_GUEST:-0}" = 1 ]; then step test-guest add_test_guest; fi
step rauc-keyring "$here/install-rauc-keyring.sh" "$rootfs"
step finalize "$here/finalize-rootfs.sh" "$rootfs"
# The SBOM describes the package set as shipped (after finalize, before the disk is made).
step sbom python3 "$here/sbom.py" --rootfs "$rootfs" --name "${MEDTLS_IMAGE_NAME:-medtls-debian-$arch}" \
  --output "$out/sbom.cdx.json"
cp "$(find "$rootfs/boot" -maxdepth 1 -name "vmlinuz-*" | sort -V | tail -n1)" "$out/vmlinuz"
cp "$(find "$rootfs/boot" -maxdepth 1 -name "initrd.img-*" | sort -V | tail -n1)" "$out/initrd.img"
# One root filesystem image for the disk's root slot and for update bundles (make-bundle.sh).
step rootfs-ext4 "$here/make-ext4.sh" "$rootfs" "$out/rootfs.ext4"
step disk "$here/make-disk.sh" "$rootfs" "$out/disk.img" "$out/rootfs.ext4"
