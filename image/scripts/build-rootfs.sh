#!/usr/bin/env bash
# Build a Debian trixie root filesystem directory for the appliance with mmdebstrap.
# Usage: build-rootfs.sh ARCH ROOTFS_DIR CACHE_DIR   (environment: MEDTLS_NATIVE_ROOT, see below)
#   ARCH: arm64 (Raspberry Pi 3/4 image: raspi-firmware + linux-image-arm64) or amd64 (boot test).
# Downloaded .debs are kept in CACHE_DIR so rebuilds fetch only the index files.
# mmdebstrap expands "$1" in hooks itself, so they are single-quoted on purpose.
# shellcheck disable=SC2016
set -euo pipefail

arch=${1:?usage: build-rootfs.sh ARCH ROOTFS_DIR CACHE_DIR}
rootfs=${2:?usage: build-rootfs.sh ARCH ROOTFS_DIR CACHE_DIR}
cache=${3:?usage: build-rootfs.sh ARCH ROOTFS_DIR CACHE_DIR}
mirror=${MEDTLS_MIRROR:-http://deb.debian.org/debian}
suite=${MEDTLS_SUITE:-trixie}
here=$(cd "$(dirname "$0")" && pwd)

# Everything the playbook's roles use is preinstalled from image/packages/*.list, so the image-context
# play needs no apt run under emulation.
case "$arch" in
  arm64|amd64) ;;
  *) echo "build-rootfs.sh: unsupported ARCH '$arch' (arm64 or amd64)" >&2; exit 2 ;;
esac
packages=()
for list in "$here"/../packages/*.list; do
  case "$(basename "$list")" in
    arch-"$arch".list) ;;
    arch-*) continue ;;
  esac
  while read -r package _; do
    case "$package" in ''|'#'*) continue ;; esac
    packages+=("$package")
  done < "$list"
done

if [ "$arch" != "$(dpkg --print-architecture)" ]; then
  "$here/binfmt.sh" "$arch"
fi

# MEDTLS_NATIVE_ROOT (build-native-python.sh): packages' maintainer scripts byte-compile Python
# (the stdlib, py3compile for every python3-* package): minutes under qemu-user, seconds natively.
# While packages install, the image's python3.X is diverted to a wrapper that runs the build
# host's python3 of the same version (identical .pyc files: byte code is architecture-free), and
# ucf's scripts run with the host's shell and tools (native-tools.sh: aide-common's ~240 snippets).
native_setup=()
native_teardown=()
native_before_initramfs=()
initramfs_env=""
native_mnt=/var/lib/medtls-native
umount_native() { if mountpoint -q "$rootfs$native_mnt"; then umount -l "$rootfs$native_mnt"; fi; }
if [ -n "${MEDTLS_NATIVE_ROOT:-}" ]; then
  native=$(realpath "$MEDTLS_NATIVE_ROOT")
  py=$(basename "$(readlink -f "$native/usr/bin/python3")")
  case "$py" in python3.[0-9]*) ;; *) echo "build-rootfs.sh: no python3.X in $native" >&2; exit 2 ;; esac
  wrapper=$(mktemp)
  NATIVE_PYTHON_IMAGE_SITE=1 "$here/native-python.sh" "$native_mnt" > "$wrapper"
  trap 'umount_native; rm -f "$wrapper"' EXIT
  native_setup=(
    --essential-hook="mkdir -p \"\$1$native_mnt\" && mount --bind '$native' \"\$1$native_mnt\" && mount -o remount,bind,ro \"\$1$native_mnt\""
    --essential-hook="chroot \"\$1\" dpkg-divert --quiet --local --rename --divert /usr/bin/$py.medtls-build --add /usr/bin/$py"
    --essential-hook="install -m 0755 '$wrapper' \"\$1/usr/bin/$py\""
    --essential-hook="'$here/native-tools.sh' add \"\$1\" $native_mnt"
  )
  # after the initramfs (customize hooks run in order)
  native_teardown=(
    --customize-hook="'$here/native-tools.sh' remove \"\$1\" $native_mnt"
    --customize-hook="rm \"\$1/usr/bin/$py\" && chroot \"\$1\" dpkg-divert --quiet --local --rename --remove /usr/bin/$py"
    --customize-hook="umount \"\$1$native_mnt\" && rmdir \"\$1$native_mnt\""
  )
  initramfs_env="env PATH=/var/lib/medtls-native-bin:/usr/sbin:/usr/bin LD_LIBRARY_PATH=$("$here/native-tools.sh" libdir "$native_mnt")"
  native_before_initramfs=(--customize-hook="'$here/native-tools.sh' unlink-libs \"\$1\" $native_mnt")
fi

mkdir -p "$cache" "$(dirname "$rootfs")"
umount_native
rm -rf "$rootfs"
include=$(IFS=,; echo "${packages[*]}")

# mmdebstrap keeps daemons from starting with its own policy-rc.d while it installs.
# raspi-firmware's hooks write the boot files to /boot/firmware and refuse to run without it;
# /etc/default/raspi-firmware must exist before the package is configured.
# Work that is slow under qemu-user and would be thrown away is skipped:
# - the initramfs: every package that touches it (kernel, udev, kmod, busybox, ...) would rebuild
#   it; update-initramfs is diverted to a no-op while packages are installed, then run once.
# - SSH host keys: an image ships none (configure-rootfs.sh, made per box at first boot); empty
#   placeholders keep openssh-server's postinst from generating RSA/ECDSA/Ed25519 keys.
# - fsync: dpkg's force-unsafe-io during the build only (the image keeps dpkg's safe default).
# The initramfs gets medtls-machine-id (the box's machine-id from the data partition, see
# image/files/medtls-machine-id.initramfs) before its one build.
mmdebstrap --variant=minbase --arch="$arch" \
  --components=main,non-free-firmware \
  --include="$include" \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt=force-confold --dpkgopt=force-confdef --dpkgopt=force-unsafe-io \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --skip=download/empty --skip=essential/unlink \
  --setup-hook='mkdir -p "$1/var/cache/apt/archives" "$1/boot/firmware" "$1/etc/default" "$1/etc/ssh"' \
  --setup-hook='for t in rsa ecdsa ed25519; do : > "$1/etc/ssh/ssh_host_${t}_key"; done' \
  --setup-hook="sync-in '$cache' /var/cache/apt/archives/" \
  --setup-hook="upload '$here/../files/raspi-firmware.default' /etc/default/raspi-firmware" \
  "${native_setup[@]}" \
  --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --divert /usr/sbin/update-initramfs.medtls-build --add /usr/sbin/update-initramfs' \
  --essential-hook='printf "#!/bin/sh\nexit 0\n" > "$1/usr/sbin/update-initramfs" && chmod 0755 "$1/usr/sbin/update-initramfs"' \
  --customize-hook='rm "$1/usr/sbin/update-initramfs" && chroot "$1" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs' \
  "${native_before_initramfs[@]}" \
  --customize-hook="install -D -m 0755 '$here/../files/medtls-machine-id.initramfs' \"\$1/etc/initramfs-tools/scripts/local-bottom/medtls-machine-id\"" \
  --customize-hook="if [ -x \"\$1/usr/sbin/update-initramfs\" ]; then chroot \"\$1\" $initramfs_env update-initramfs -c -k all; fi" \
  "${native_teardown[@]}" \
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*_key' \
  --customize-hook='sed -i "/^force-unsafe-io$/d" "$1/etc/dpkg/dpkg.cfg.d/99mmdebstrap"' \
  --customize-hook="sync-out /var/cache/apt/archives '$cache'" \
  --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*_Packages' \
  "$suite" "$rootfs" "$mirror"
leftover=$(find "$rootfs" -xdev \( -lname '*medtls-native*' -o -name 'medtls-native*' \) -print -quit)
[ -z "$leftover" ] || { echo "build-rootfs.sh: build-only native tools left in the image: $leftover" >&2; exit 1; }
[ -n "$(find "$rootfs/boot" -maxdepth 1 -name 'initrd.img-*' -print -quit)" ] ||
  { echo "build-rootfs.sh: no initramfs in $rootfs/boot" >&2; exit 1; }
