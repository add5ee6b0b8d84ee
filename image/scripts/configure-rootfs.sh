#!/usr/bin/env bash
# Image-only settings on a root filesystem directory (everything else comes from the playbook):
# hostname, fstab, first user with an SSH key and no password, SSH key-only, per-box SSH host keys,
# the first-boot import of the configuration from the FAT partition, and the data partition
# (seeded at first boot, grown to the card, persistent paths bind-mounted from it).
# Usage: configure-rootfs.sh ROOTFS_DIR
# Environment: FIRST_USER_NAME (default: medtls-admin), FIRST_USER_SSH_KEY (public key line or file),
#              MEDTLS_HOSTNAME (default: medtls), MEDTLS_KEEP_FSTAB=1 (pi-gen).
set -euo pipefail

rootfs=${1:?usage: configure-rootfs.sh ROOTFS_DIR}
user=${FIRST_USER_NAME:-medtls-admin}
key=${FIRST_USER_SSH_KEY:-}
hostname=${MEDTLS_HOSTNAME:-medtls}
files=$(cd "$(dirname "$0")/../files" && pwd)

[ -x "$rootfs/usr/bin/systemctl" ] || { echo "configure-rootfs.sh: $rootfs is not a root filesystem" >&2; exit 2; }
case "$user" in
  root|medtls|"") echo "configure-rootfs.sh: FIRST_USER_NAME='$user' is reserved; choose another name" >&2; exit 2 ;;
  *[!a-z0-9_-]*) echo "configure-rootfs.sh: FIRST_USER_NAME='$user' must be lower-case letters, digits, - or _" >&2; exit 2 ;;
esac
if [ -n "$key" ] && [ -f "$key" ]; then key=$(cat "$key"); fi
if [ -n "$key" ] && ! printf '%s\n' "$key" | ssh-keygen -l -f - >/dev/null 2>&1; then
  echo "configure-rootfs.sh: FIRST_USER_SSH_KEY is not an SSH public key" >&2; exit 2
fi

echo "$hostname" > "$rootfs/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' "$hostname" > "$rootfs/etc/hosts"
# pi-gen writes its own fstab (PARTUUIDs at export) and keeps its single-root layout
# (docs/updates.md): MEDTLS_KEEP_FSTAB=1 leaves fstab alone and installs no data partition units.
# Our A/B layout (make-disk.sh, docs/updates.md "Layout"): the root is whichever slot the kernel
# was given (/dev/root); /data is partition 4 (PARTUUID 6d656474-04, label MEDTLS-DATA) and the
# persistent paths below are bind-mounted from it before local-fs.target, so medtls, sshd and
# every normal service find them there. medtls-data-seed.service fills /data on the first boot.
persistent_dirs=(/etc/medtls /var/lib/medtls "/home/$user/.ssh")
if [ "${MEDTLS_KEEP_FSTAB:-0}" != 1 ]; then
  {
    cat <<'FSTAB'
# <file system>       <mount point>   <type> <options>                          <dump> <pass>
/dev/root             /               ext4   defaults,noatime                   0      0
LABEL=RASPIFIRM       /boot/firmware  vfat   defaults,nofail,x-systemd.device-timeout=180s,umask=0077 0 2
PARTUUID=6d656474-04  /data           ext4   defaults,noatime,x-systemd.device-timeout=180s 0 2
FSTAB
    for dir in "${persistent_dirs[@]}"; do
      printf '/data%s  %s  none  bind,x-systemd.requires=medtls-data-seed.service  0 0\n' "$dir" "$dir"
    done
  } > "$rootfs/etc/fstab"
fi
mkdir -p "$rootfs/boot/firmware"

# No password anywhere: root is locked, the first user logs in with its SSH key only.
chroot "$rootfs" passwd --lock root >/dev/null
if ! chroot "$rootfs" id -u "$user" >/dev/null 2>&1; then
  chroot "$rootfs" useradd --create-home --shell /bin/bash --groups sudo "$user"
fi
chroot "$rootfs" passwd --lock "$user" >/dev/null
install -d -m 0700 "$rootfs/home/$user/.ssh"
if [ -n "$key" ]; then
  printf '%s\n' "$key" > "$rootfs/home/$user/.ssh/authorized_keys"
  chmod 0600 "$rootfs/home/$user/.ssh/authorized_keys"
else
  echo "configure-rootfs.sh: warning: no FIRST_USER_SSH_KEY given, nobody can log in to this image" >&2
fi
chroot "$rootfs" chown -R "$user:$user" "/home/$user/.ssh"
# Without a password sudo can only work passwordless, as on Raspberry Pi OS's first user.
printf '%s ALL=(ALL) NOPASSWD: ALL\n' "$user" > "$rootfs/etc/sudoers.d/010_medtls-first-user"
chmod 0440 "$rootfs/etc/sudoers.d/010_medtls-first-user"

install -d "$rootfs/etc/ssh/sshd_config.d"
cat > "$rootfs/etc/ssh/sshd_config.d/10-medtls-image.conf" <<'SSHD'
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
SSHD
# Every box makes its own host keys at first boot (the hardening role's host key unit) instead
# of sharing the build's.
rm -f "$rootfs"/etc/ssh/ssh_host_*

install -m 0755 "$files/medtls-firstboot" "$rootfs/usr/local/sbin/medtls-firstboot"
install -m 0644 "$files/medtls-firstboot.service" "$rootfs/etc/systemd/system/"
for unit in medtls medtls-interception; do
  install -d "$rootfs/etc/systemd/system/$unit.service.d"
  install -m 0644 "$files/medtls-firstboot.conf" "$rootfs/etc/systemd/system/$unit.service.d/10-firstboot.conf"
done
chroot "$rootfs" systemctl enable medtls-firstboot.service ssh.service
# The template a technician copies to medtls/ on the FAT partition and edits (docs/flashing.md).
install -d "$rootfs/boot/firmware/medtls-example"
install -m 0644 "$files/../../examples/ct-modality.yaml" "$rootfs/boot/firmware/medtls-example/medtls.yaml"
install -m 0644 "$files/medtls-example-README.txt" "$rootfs/boot/firmware/medtls-example/README.txt"
# Our own layout grows the data partition to the card at boot and keeps the box's state on it;
# Raspberry Pi OS (pi-gen, MEDTLS_KEEP_FSTAB=1) grows its root partition itself.
if [ "${MEDTLS_KEEP_FSTAB:-0}" != 1 ]; then
  install -d -m 0755 "$rootfs/data"
  install -m 0755 "$files/medtls-growroot" "$rootfs/usr/local/sbin/medtls-growroot"
  install -m 0644 "$files/medtls-growroot.service" "$rootfs/etc/systemd/system/"
  install -m 0755 "$files/medtls-data-seed" "$rootfs/usr/local/sbin/medtls-data-seed"
  install -m 0644 "$files/medtls-data-seed.service" "$rootfs/etc/systemd/system/"
  # What the seed copies to /data when /data lacks it; the machine-id is copied, not mounted
  # (systemd reads it before any mount): the initramfs puts /data's into the slot
  # (medtls-machine-id.initramfs, installed by build-rootfs.sh).
  cat > "$rootfs/etc/default/medtls-data" <<DATA
# medtls-data-seed.service (written by configure-rootfs.sh; bind mounts: /etc/fstab)
MEDTLS_DATA_PATHS="${persistent_dirs[*]} /etc/machine-id"
MEDTLS_DATA_DIRS="/etc/ssh"
DATA
  # SSH host keys live on /data: the names sshd and the host key unit use point there, so the
  # keys a box makes at its first boot are the keys of every later slot.
  for type in ed25519 rsa ecdsa; do
    for suffix in "" .pub; do
      ln -sfn "/data/etc/ssh/ssh_host_${type}_key$suffix" "$rootfs/etc/ssh/ssh_host_${type}_key$suffix"
    done
  done
  chroot "$rootfs" systemctl enable medtls-growroot.service medtls-data-seed.service
fi

# Each box gets its own machine-id at first boot.
: > "$rootfs/etc/machine-id"
rm -f "$rootfs/var/lib/dbus/machine-id"
