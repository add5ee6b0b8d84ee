#!/usr/bin/env bash
# Assemble the SD-card image from a root filesystem directory without loop devices: an MBR with
# the fixed disk identifier 0x6d656474, so the partition UUIDs are the same on every box
# (PARTUUID=6d656474-01..04, docs/updates.md "Layout"):
#   p1 FAT32 RASPIFIRM  /boot/firmware's content (mtools), MEDTLS_FAT_MIB (default 512)
#   p2 root A, ext4     the root filesystem (make-ext4.sh), grown to fill the slot
#   p3 root B           same size as A, empty until the first update writes it
#   p4 data, ext4       label MEDTLS-DATA, MEDTLS_DATA_MIB (default 128), empty: the box seeds it
#                       on first boot (medtls-data-seed) and grows it to the card (medtls-growroot)
# Both root slots are MEDTLS_ROOT_SLOT_MIB (default 2048: about twice the root partition the
# single-root image had, 4-5 times its content; room for years of growth, docs/updates.md).
# Filesystems are made as files and dd'd in with conv=sparse, so the image stays sparse and
# compresses to its content.
# Usage: make-disk.sh ROOTFS_DIR OUT.img [ROOT_EXT4]
#   ROOT_EXT4: the root filesystem as make-ext4.sh made it from ROOTFS_DIR (build-image.sh keeps
#   it for update bundles, unchanged); without it, one is made here.
set -euo pipefail

rootfs=$(realpath "${1:?usage: make-disk.sh ROOTFS_DIR OUT.img}")
out=${2:?usage: make-disk.sh ROOTFS_DIR OUT.img}
here=$(cd "$(dirname "$0")" && pwd)
fat_mib=${MEDTLS_FAT_MIB:-512}
slot_mib=${MEDTLS_ROOT_SLOT_MIB:-2048}
data_mib=${MEDTLS_DATA_MIB:-128}
disk_id=0x6d656474
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

if [ -n "${3:-}" ]; then
  cp --sparse=always "$3" "$work/root.img"
else
  "$here/make-ext4.sh" "$rootfs" "$work/root.img"
fi
root_mib=$(( $(stat -c %s "$work/root.img") / 1048576 ))
if [ "$root_mib" -gt "$slot_mib" ]; then
  echo "make-disk.sh: the root filesystem needs ${root_mib} MiB (content + headroom, make-ext4.sh)," \
    "more than a root slot's MEDTLS_ROOT_SLOT_MIB=${slot_mib}: raise MEDTLS_ROOT_SLOT_MIB" \
    "(boxes in the field keep the slot size they were flashed with: docs/updates.md)" >&2
  exit 2
fi
# Root A fills its slot: the running root has the slot's room, as a root written by an update does.
resize2fs -f "$work/root.img" "${slot_mib}M" >/dev/null 2>&1 ||
  { echo "make-disk.sh: could not grow the root filesystem to ${slot_mib} MiB" >&2; exit 1; }

truncate -s "${data_mib}M" "$work/data.img"
# 4 KiB blocks: the small image size would get 1 KiB ones, poor for the card-sized partition.
mkfs.ext4 -q -F -b 4096 -L MEDTLS-DATA -E root_owner=0:0 "$work/data.img"

p2=$(( start_mib + fat_mib ))
p3=$(( p2 + slot_mib ))
p4=$(( p3 + slot_mib ))
total=$(( p4 + data_mib ))
rm -f "$out"
truncate -s "${total}M" "$out"
sfdisk --quiet "$out" <<SFDISK
label: dos
label-id: ${disk_id}
start=${start_mib}MiB, size=${fat_mib}MiB, type=c
start=${p2}MiB, size=${slot_mib}MiB, type=83
start=${p3}MiB, size=${slot_mib}MiB, type=83
start=${p4}MiB, size=${data_mib}MiB, type=83
SFDISK
dd if="$work/fat.img" of="$out" bs=1M seek="$start_mib" conv=notrunc,sparse status=none
dd if="$work/root.img" of="$out" bs=1M seek="$p2" conv=notrunc,sparse status=none
dd if="$work/data.img" of="$out" bs=1M seek="$p4" conv=notrunc,sparse status=none
echo "make-disk.sh: $out ${total} MiB (root slots ${slot_mib} MiB each, root ${root_mib} MiB, data ${data_mib} MiB)"
