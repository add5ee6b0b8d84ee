#!/usr/bin/env bash
# Make an ext4 filesystem image (label RASPIROOT) from a root filesystem directory without loop
# devices; /boot/firmware's content belongs to the FAT partition and is left out.
# Usage: make-ext4.sh ROOTFS_DIR OUT.img [EXTRA_MIB]
set -euo pipefail

rootfs=$(realpath "${1:?usage: make-ext4.sh ROOTFS_DIR OUT.img [EXTRA_MIB]}")
out=${2:?usage: make-ext4.sh ROOTFS_DIR OUT.img [EXTRA_MIB]}
extra=${3:-512}

fw="$rootfs/boot/firmware"
aside=""
restore() { if [ -n "$aside" ]; then rmdir "$fw" && mv "$aside" "$fw"; fi; }
trap restore EXIT
if [ -n "$(ls -A "$fw" 2>/dev/null)" ]; then
  aside="$rootfs/boot/.firmware-aside"
  mv "$fw" "$aside"
  mkdir "$fw"
fi

used=$(du -smx "$rootfs" | cut -f1)
size=$(( used * 13 / 10 + extra ))
rm -f "$out"
truncate -s "${size}M" "$out"
mkfs.ext4 -q -F -L RASPIROOT -E root_owner=0:0 -d "$rootfs" "$out"
echo "make-ext4.sh: $out ${size} MiB (${used} MiB used)"
