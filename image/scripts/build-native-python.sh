#!/usr/bin/env bash
# A small root filesystem of the build host's architecture with Debian's python3 and python3-apt
# (and cpio, zstd for native-tools.sh), from the same suite as the image. apply-playbook.sh mounts it read-only inside a
# foreign-architecture image root and runs Ansible's modules with it: a module call then costs a
# fraction of a second instead of ~10 s of Python under qemu-user. Commands the modules start
# (systemctl, useradd, sshd -G, validate:) are still the image's own binaries.
# Usage: build-native-python.sh DIR CACHE_DIR   (reuses DIR when it was built with the same settings)
# shellcheck disable=SC2016
set -euo pipefail

dir=${1:?usage: build-native-python.sh DIR CACHE_DIR}
cache=${2:?usage: build-native-python.sh DIR CACHE_DIR}
mirror=${MEDTLS_MIRROR:-http://deb.debian.org/debian}
suite=${MEDTLS_SUITE:-trixie}
arch=$(dpkg --print-architecture)
stamp="$suite $arch $mirror python3 python3-apt cpio zstd"

if [ -f "$dir/.medtls-native" ] && [ "$(cat "$dir/.medtls-native")" = "$stamp" ]; then
  echo "build-native-python.sh: reusing $dir"
  exit 0
fi
mkdir -p "$cache" "$(dirname "$dir")"
rm -rf "$dir"
mmdebstrap --variant=minbase --arch="$arch" --include=python3,python3-apt,cpio,zstd \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --skip=download/empty \
  --setup-hook='mkdir -p "$1/var/cache/apt/archives"' \
  --setup-hook="sync-in '$cache' /var/cache/apt/archives/" \
  --customize-hook="sync-out /var/cache/apt/archives '$cache'" \
  --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*_Packages' \
  "$suite" "$dir" "$mirror"
echo "$stamp" > "$dir/.medtls-native"
