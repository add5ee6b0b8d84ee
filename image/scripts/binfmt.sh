#!/usr/bin/env bash
# Make foreign-architecture binaries runnable (qemu-user-static via binfmt_misc) for chroot builds.
set -euo pipefail
arch=${1:?usage: binfmt.sh ARCH}
case "$arch" in
  arm64) name=qemu-aarch64 ;;
  armhf) name=qemu-arm ;;
  *) echo "binfmt.sh: no qemu-user mapping for '$arch'" >&2; exit 2 ;;
esac
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if ! grep -qx enabled "/proc/sys/fs/binfmt_misc/$name" 2>/dev/null; then
  update-binfmts --enable "$name"
fi
grep -q '^flags: .*F' "/proc/sys/fs/binfmt_misc/$name" || {
  echo "binfmt.sh: $name is registered without the F flag; install qemu-user-static" >&2; exit 1; }
