#!/usr/bin/env bash
# A/B boot chain of the Debian image (docs/updates.md "Boot selection"): boot.scr and the slot
# counters on the FAT partition, U-Boot and the device trees for the Pi, kernel/initramfs under
# the names boot.scr loads, fw_env.config and RAUC's system.conf. Not for pi-gen's image (its own
# firmware boot, one root). Idempotent: a reused root filesystem gets the same result.
# Usage: configure-boot.sh ROOTFS_DIR
# Environment: MEDTLS_BOOT_ATTEMPTS (default 3). The keyring: install-rauc-keyring.sh.
set -euo pipefail

rootfs=${1:?usage: configure-boot.sh ROOTFS_DIR}
here=$(cd "$(dirname "$0")" && pwd)
files=$here/../files
attempts=${MEDTLS_BOOT_ATTEMPTS:-3}
fw=$rootfs/boot/firmware
# The size fw_env.config and boot.cmd (ab_size) agree on.
env_size=0x4000

[ -x "$rootfs/usr/bin/systemctl" ] || { echo "configure-boot.sh: $rootfs is not a root filesystem" >&2; exit 2; }
for tool in mkimage mkenvimage; do
  command -v "$tool" >/dev/null || { echo "configure-boot.sh: $tool missing (apt install u-boot-tools)" >&2; exit 2; }
done
arch=$(chroot "$rootfs" dpkg --print-architecture)
kernel=$(find "$rootfs/boot" -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' | sort -V | tail -n1)
initrd=$(find "$rootfs/boot" -maxdepth 1 -name 'initrd.img-*' -printf '%f\n' | sort -V | tail -n1)
if [ -z "$kernel" ] || [ -z "$initrd" ]; then
  echo "configure-boot.sh: no kernel/initramfs in $rootfs/boot" >&2; exit 2
fi

# boot.scr loads /boot/vmlinuz and /boot/initrd.img of the chosen slot; Debian's kernel hooks keep
# these links current on a kernel upgrade with link_in_boot.
cat > "$rootfs/etc/kernel-img.conf" <<'EOF'
# medtls: /boot/vmlinuz and /boot/initrd.img are what boot.scr loads (docs/updates.md).
do_symlinks = yes
link_in_boot = yes
EOF
ln -sfn "$kernel" "$rootfs/boot/vmlinuz"
ln -sfn "$initrd" "$rootfs/boot/initrd.img"
rm -f "$rootfs/boot/vmlinuz.old" "$rootfs/boot/initrd.img.old" "$rootfs/vmlinuz" "$rootfs/initrd.img" \
  "$rootfs/vmlinuz.old" "$rootfs/initrd.img.old"

mkdir -p "$fw"
mkimage -A arm64 -O linux -T script -C none -n "medtls A/B boot" -d "$files/boot.cmd" "$fw/boot.scr" >/dev/null
printf 'BOOT_ORDER=A B\nBOOT_A_LEFT=%s\nBOOT_B_LEFT=%s\n' "$attempts" "$attempts" |
  mkenvimage -s "$env_size" -o "$fw/bootslot.env" -
printf '# medtls: the A/B slot counters boot.scr reads and writes (docs/updates.md)\n/boot/firmware/bootslot.env 0x0 %s\n' \
  "$env_size" > "$rootfs/etc/fw_env.config"

if [ "$arch" = arm64 ]; then
  # The firmware starts U-Boot (config.txt kernel=u-boot.bin, written by raspi-firmware's hook from
  # /etc/default/raspi-firmware); with KERNEL set the hook copies neither the kernel nor the
  # device trees, so the trees the firmware hands to U-Boot and Linux are copied here.
  install -m 0644 "$files/raspi-firmware.default" "$rootfs/etc/default/raspi-firmware"
  install -m 0644 "$rootfs/usr/lib/u-boot/rpi_arm64/u-boot.bin" "$fw/u-boot.bin"
  cp "$rootfs/usr/lib/linux-image-${kernel#vmlinuz-}/broadcom/"bcm*.dtb "$fw/"
  rm -f "$fw"/vmlinuz-* "$fw"/initrd.img-*
  # The hook needs /proc to see it runs in a chroot (ischroot) rather than on a box.
  mount -t proc proc "$rootfs/proc"
  trap 'umount -l "$rootfs/proc"' EXIT
  chroot "$rootfs" env DEB_MAINT_PARAMS=configure /etc/kernel/postinst.d/z50-raspi-firmware "${kernel#vmlinuz-}"
  umount "$rootfs/proc"
  trap - EXIT
  grep -qx 'kernel=u-boot.bin' "$fw/config.txt" ||
    { echo "configure-boot.sh: $fw/config.txt does not start U-Boot" >&2; exit 1; }
  if grep -q '^initramfs' "$fw/config.txt"; then
    echo "configure-boot.sh: $fw/config.txt still loads an initramfs" >&2; exit 1
  fi
fi

# The keyring (/etc/rauc/keyring.pem) is installed by install-rauc-keyring.sh, a later build step.
install -d "$rootfs/etc/rauc"
cat > "$rootfs/etc/rauc/system.conf" <<EOF
# medtls A/B root slots (docs/updates.md). The slot counters live in bootslot.env on the FAT
# partition (/etc/fw_env.config), written by boot.scr and by RAUC through fw_setenv.
[system]
compatible=medtls-$arch
bootloader=uboot
bundle-formats=-plain
data-directory=/data/rauc

[keyring]
path=/etc/rauc/keyring.pem
# The signing certificate is a code-signing one (rauc-test-pki.sh, docs/updates.md "Purpose").
check-purpose=codesign

[slot.rootfs.0]
device=/dev/disk/by-partuuid/6d656474-02
type=ext4
bootname=A
# A bundle's ext4 is smaller than the slot: grow it to the slot after writing.
resize=true

[slot.rootfs.1]
device=/dev/disk/by-partuuid/6d656474-03
type=ext4
bootname=B
resize=true
EOF
