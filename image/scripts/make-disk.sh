#!/usr/bin/env bash
# Assemble a Raspberry Pi SD-card image from a root filesystem directory without loop devices:
# MBR with a FAT32 firmware partition (label RASPIFIRM, /boot/firmware's content, filled with
# mtools) and an ext4 root partition (label RASPIROOT, made with mkfs.ext4 -d), copied in with dd.
# Usage: make-disk.sh ROOTFS_DIR OUT.img
set -euo pipefail

rootfs=$(realpath "${1:?usage: make-disk.sh ROOTFS_DIR OUT.img}")
out=${2:?usage: make-disk.sh ROOTFS_DIR OUT.img}
here=$(cd "$(dirname "$0")" && pwd)
fat_mib=${MEDTLS_FAT_MIB:-512}
fw="$rootfs/boot/firmware"
start_mib=4

work=$(mktemp -d "$(dirname "$out")/.disk.XXXXXX")
trap 'rm -rf "$work"' EXIT

if [ "$(chroot "$rootfs" dpkg --print-architecture)" = arm64 ] && [ ! -f "$fw/config.txt" ]; then
  echo "make-disk.sh: $fw has no config.txt (raspi-firmware missing?)" >&2; exit 2
fi
truncate -s "${fat_mib}M" "$work/fat.img"
mkfs.vfat -F 32 -n RASPIFIRM "$work/fat.img" >/dev/null
if [ -n "$(ls -A "$fw")" ]; then mcopy -s -p -i "$work/fat.img" "$fw"/* ::/; fi

"$here/make-ext4.sh" "$rootfs" "$work/root.img"
root_mib=$(( $(stat -c %s "$work/root.img") / 1048576 ))

rm -f "$out"
truncate -s "$(( start_mib + fat_mib + root_mib ))M" "$out"
sfdisk --quiet "$out" <<SFDISK
label: dos
label-id: 0x6d656474
start=${start_mib}MiB, size=${fat_mib}MiB, type=c
start=$(( start_mib + fat_mib ))MiB, size=${root_mib}MiB, type=83
SFDISK
dd if="$work/fat.img" of="$out" bs=1M seek="$start_mib" conv=notrunc,sparse status=none
dd if="$work/root.img" of="$out" bs=1M seek="$(( start_mib + fat_mib ))" conv=notrunc,sparse status=none
echo "make-disk.sh: $out $(( start_mib + fat_mib + root_mib )) MiB"
