#!/usr/bin/env bash
# Last step before a root filesystem becomes an image: drop build-only state.
# Usage: finalize-rootfs.sh ROOTFS_DIR
set -euo pipefail
rootfs=${1:?usage: finalize-rootfs.sh ROOTFS_DIR}
rm -f "$rootfs/usr/sbin/policy-rc.d"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
rm -rf "$rootfs"/tmp/* "$rootfs"/var/tmp/* "$rootfs"/root/.ansible
find "$rootfs/var/log" -type f -exec truncate -s 0 {} +
: > "$rootfs/etc/machine-id"
