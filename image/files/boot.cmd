# medtls A/B slot selection (RAUC's U-Boot logic), one script for the Raspberry Pi (Debian's
# u-boot-rpi, SD card = mmc) and the arm64 VM (Debian's u-boot-qemu as -bios, disk = virtio).
# Compiled to boot.scr (mkimage -T script) at image build time; U-Boot's bootflow finds it on the
# FAT partition. docs/updates.md "Boot selection" explains the chain.
#
# State: BOOT_ORDER ("A B"), BOOT_A_LEFT, BOOT_B_LEFT in bootslot.env on the FAT partition, a
# CRC'd U-Boot environment of 0x4000 bytes that Linux reads and writes with fw_printenv/fw_setenv
# (/etc/fw_env.config) - RAUC's bootloader=uboot backend. Not U-Boot's own saveenv: the Pi stores
# its environment in uboot.env on the FAT, the VM's build in flash, so neither is shared.
# A slot's counter is decremented and saved before its kernel is loaded; a slot whose kernel or
# initramfs cannot be loaded gets 0 attempts; the next slot in BOOT_ORDER is tried.

setenv ab_file bootslot.env
setenv ab_size 0x4000
test -n "${devtype}" || setenv devtype mmc
test -n "${devnum}" || setenv devnum 0
setenv ab_fat "${devtype} ${devnum}:1"
# The Pi's default load addresses leave 37 MiB (Debian's uncompressed arm64 Image) no room
# before scriptaddr/fdt_addr_r/ramdisk_addr_r; QEMU's defaults (RAM at 1 GiB) have room.
# Consoles: the Pi's UART (ttyS1 on Pi 3/4) and HDMI as raspi-firmware's cmdline.txt would
# have them; the VM's PL011.
if test "${board}" = "rpi"; then
  setenv kernel_addr_r 0x04000000
  setenv ramdisk_addr_r 0x08000000
  setenv ab_console "console=ttyS1,115200 console=tty0"
else
  setenv ab_console "console=ttyAMA0,115200"
fi
# The device tree U-Boot runs on is the one the Pi firmware (config.txt overlays applied) or QEMU
# handed over, relocated to the top of RAM: the firmware's own copy (fdt_addr) may lie where the
# kernel or initramfs is loaded.
setenv ab_fdt ${fdtcontroladdr}

setenv ab_save 'env export -c -s ${ab_size} ${kernel_addr_r} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT && save ${ab_fat} ${kernel_addr_r} ${ab_file} ${ab_size}'

setenv BOOT_ORDER
setenv BOOT_A_LEFT
setenv BOOT_B_LEFT
if load ${ab_fat} ${kernel_addr_r} ${ab_file} && env import -c ${kernel_addr_r} ${ab_size} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT; then
  echo "medtls-boot: ${ab_file}: BOOT_ORDER=${BOOT_ORDER} BOOT_A_LEFT=${BOOT_A_LEFT} BOOT_B_LEFT=${BOOT_B_LEFT}"
else
  echo "medtls-boot: ${ab_file} missing or damaged, using defaults"
fi
test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT 3
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT 3

setenv ab_slot
setenv ab_root
for BOOT_SLOT in "${BOOT_ORDER}"; do
  setenv ab_part
  setenv ab_left
  if test -z "${ab_slot}"; then
    if test "x${BOOT_SLOT}" = "xA"; then
      setenv ab_part 2
      setenv ab_left ${BOOT_A_LEFT}
    elif test "x${BOOT_SLOT}" = "xB"; then
      setenv ab_part 3
      setenv ab_left ${BOOT_B_LEFT}
    fi
  fi
  if test -n "${ab_part}" && test ${ab_left} -gt 0; then
    setexpr ab_left ${ab_left} - 1
    setenv BOOT_${BOOT_SLOT}_LEFT ${ab_left}
    echo "medtls-boot: trying slot ${BOOT_SLOT}, ${ab_left} attempts left after this one"
    run ab_save
    if load ${devtype} ${devnum}:${ab_part} ${kernel_addr_r} /boot/vmlinuz && load ${devtype} ${devnum}:${ab_part} ${ramdisk_addr_r} /boot/initrd.img; then
      setenv ab_initrd_size ${filesize}
      setenv ab_slot ${BOOT_SLOT}
      setenv ab_root ${ab_part}
    else
      echo "medtls-boot: slot ${BOOT_SLOT} has no /boot/vmlinuz or /boot/initrd.img: marking it bad"
      setenv BOOT_${BOOT_SLOT}_LEFT 0
      run ab_save
    fi
  fi
done

if test -z "${ab_slot}"; then
  echo "medtls-boot: no bootable slot left: resetting both to 3 attempts and restarting"
  setenv BOOT_A_LEFT 3
  setenv BOOT_B_LEFT 3
  run ab_save
  reset
fi

setenv bootargs "${ab_console} root=PARTUUID=6d656474-0${ab_root} rootwait rw rauc.slot=${ab_slot} net.ifnames=0 panic=10"
echo "medtls-boot: booting slot ${ab_slot} (device tree at ${ab_fdt}): ${bootargs}"
booti ${kernel_addr_r} ${ramdisk_addr_r}:${ab_initrd_size} ${ab_fdt}
echo "medtls-boot: booti of slot ${ab_slot} returned: restarting"
reset
