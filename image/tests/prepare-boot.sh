#!/usr/bin/env bash
# Prepare a published image (deploy/*.img.xz) for the QEMU boot test without changing it: a copy
# as MEDTLS_IMAGE_DIR (disk.img, plus vmlinuz and initrd.img taken from the image's own FAT
# partition) with the test-only boot report unit written into the copy's root filesystem by
# debugfs (no mount, no loop device). Like the test builds, the copy does not wait for NTP:
# the lab has no time server.
# Usage: prepare-boot.sh IMAGE.img[.xz] OUT_DIR
set -euo pipefail

img=${1:?usage: prepare-boot.sh IMAGE.img.xz OUT_DIR}
out=${2:?usage: prepare-boot.sh IMAGE.img.xz OUT_DIR}
guest=$(cd "$(dirname "$0")/guest" && pwd)
[ -f "$img" ] || { echo "prepare-boot.sh: $img does not exist" >&2; exit 2; }

mkdir -p "$out"
rm -f "$out/disk.img" "$out/vmlinuz" "$out/initrd.img" "$out/sbom.cdx.json"
# The SBOM published next to the image (publish.sh); the boot test validates it.
sbom="${img%.xz}"
sbom="${sbom%.img}.sbom.cdx.json"
if [ -f "$sbom" ]; then cp "$sbom" "$out/sbom.cdx.json"; fi
case "$img" in
  *.xz) xz -dc "$img" | dd of="$out/disk.img" bs=1M conv=sparse status=none ;;
  *) cp --sparse=always "$img" "$out/disk.img" ;;
esac

parts=$(sfdisk --json "$out/disk.img")
part_start() { python3 -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"]["partitions"][int(sys.argv[1])]["start"] * 512)' "$1" <<< "$parts"; }
fat="$out/disk.img@@$(part_start 0)"
# Partition 2: root slot A (make-disk.sh), the slot a fresh image boots.
root="$out/disk.img?offset=$(part_start 1)"

newest() { mdir -b -i "$fat" ::/ | sed -n "s|^::/\\($1-.*\\)|\\1|p" | sort -V | tail -n 1; }
kernel=$(newest vmlinuz)
initrd=$(newest initrd.img)
if [ -z "$kernel" ] || [ -z "$initrd" ]; then
  echo "prepare-boot.sh: no vmlinuz-*/initrd.img-* on the FAT partition of $img" >&2; exit 1
fi
mcopy -i "$fat" "::/$kernel" "$out/vmlinuz"
mcopy -i "$fat" "::/$initrd" "$out/initrd.img"

wait_sync=/etc/systemd/system/sysinit.target.wants/systemd-time-wait-sync.service
cmds=$(mktemp)
trap 'rm -f "$cmds"' EXIT
exists() { debugfs -R "stat $1" "$root" 2>/dev/null | grep -q '^Inode:'; }
if exists /etc/systemd/system/medtls-boot-report.service; then
  echo "prepare-boot.sh: $img is a test build (it has the report unit already)" >&2; exit 2
fi
{
  echo "write $guest/medtls-boot-report /usr/local/sbin/medtls-boot-report"
  echo "set_inode_field /usr/local/sbin/medtls-boot-report mode 0100755"
  echo "write $guest/medtls-boot-report.service /etc/systemd/system/medtls-boot-report.service"
  echo "set_inode_field /etc/systemd/system/medtls-boot-report.service mode 0100644"
  for f in /usr/local/sbin/medtls-boot-report /etc/systemd/system/medtls-boot-report.service; do
    echo "set_inode_field $f uid 0"
    echo "set_inode_field $f gid 0"
  done
  echo "symlink /etc/systemd/system/multi-user.target.wants/medtls-boot-report.service /etc/systemd/system/medtls-boot-report.service"
  if exists "$wait_sync"; then echo "rm $wait_sync"; fi
} > "$cmds"
debugfs -w -f "$cmds" "$root" >/dev/null
# debugfs reports errors but always exits 0: check the result.
debugfs -R "stat /etc/systemd/system/multi-user.target.wants/medtls-boot-report.service" "$root" 2>/dev/null |
  grep -q 'Type: symlink' || { echo "prepare-boot.sh: could not add the report unit to $root" >&2; exit 1; }
e2fsck -fn "$root" >/dev/null || { echo "prepare-boot.sh: the root filesystem of the copy does not check clean" >&2; exit 1; }
echo "prepare-boot.sh: $out ready (kernel $kernel)"
