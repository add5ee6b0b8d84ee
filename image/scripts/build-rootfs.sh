#!/usr/bin/env bash
# Build a Debian trixie root filesystem directory for the appliance with mmdebstrap.
# Usage: build-rootfs.sh ARCH ROOTFS_DIR CACHE_DIR
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

mkdir -p "$cache" "$(dirname "$rootfs")"
rm -rf "$rootfs"
include=$(IFS=,; echo "${packages[*]}")

# mmdebstrap keeps daemons from starting with its own policy-rc.d while it installs.
# raspi-firmware's hooks write the boot files to /boot/firmware and refuse to run without it;
# /etc/default/raspi-firmware must exist before the package is configured.
mmdebstrap --variant=minbase --arch="$arch" \
  --components=main,non-free-firmware \
  --include="$include" \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt=force-confold --dpkgopt=force-confdef \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --skip=download/empty --skip=essential/unlink \
  --setup-hook='mkdir -p "$1/var/cache/apt/archives" "$1/boot/firmware" "$1/etc/default"' \
  --setup-hook="sync-in '$cache' /var/cache/apt/archives/" \
  --setup-hook="upload '$here/../files/raspi-firmware.default' /etc/default/raspi-firmware" \
  --customize-hook="sync-out /var/cache/apt/archives '$cache'" \
  --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*_Packages' \
  "$suite" "$rootfs" "$mirror"
