#!/usr/bin/env bash
# Build-only: let programs of a build-native-python.sh root (mounted at MNT inside a
# foreign-architecture image ROOT) run natively inside that root while packages install.
# Under qemu-user every exec costs ~0.2 s; two steps exec thousands of small tools:
# - aide-common's postinst runs ucf, ucfr and ucfq for each of its ~240 configuration snippets
#   (~5.6 s per snippet emulated, ~23 min in all);
# - mkinitramfs copies ~1,400 files one `cp` at a time and compresses ~65 MB (195 s emulated).
# What `add` does:
# - the host's dynamic loader and library directory appear at their paths inside ROOT (a
#   foreign-architecture root has neither; a missing /lib64 becomes the merged-/usr symlink, as
#   systemd insists). Emulated programs never look there (their loader searches its own paths).
#   ucf clears the environment (LD_LIBRARY_PATH included), hence the library directory itself.
# - ucf, ucfr, ucfq are diverted to wrappers (themselves native: #! the host's dash) that run the
#   image's own architecture-independent scripts with the host's dash/perl and the host's tools
#   first on PATH; they work on ROOT's /etc, /var/lib/ucf and dpkg database as the image's tools
#   would (same Debian suite).
# - BIN (/var/lib/medtls-native-bin) holds the host's file tools (coreutils, sed, grep, awk, find,
#   diff, cpio, zstd, and dpkg-divert/dpkg-query, which ucf uses to read the image's dpkg state) and a `mkinitramfs` that runs a copy of the image's mkinitramfs with the host's dash and
#   BIN first on PATH; the caller runs update-initramfs with BIN first on PATH. ldd and ld.so stay
#   the image's own (they inspect the image's binaries).
# `unlink-libs` removes the library directory again before the initramfs is built (initramfs
#   hooks glob /usr/lib/*/, e.g. for libkmod): mkinitramfs gets LD_LIBRARY_PATH=$(... libdir MNT)
#   instead, which emulated programs skip (other machine) and mkinitramfs does not clear.
# `remove` undoes all of it; ROOT keeps nothing of the build host.
# Usage: native-tools.sh add|unlink-libs|remove ROOT MNT | native-tools.sh libdir MNT
set -euo pipefail

usage="usage: native-tools.sh add|unlink-libs|remove ROOT MNT | native-tools.sh libdir MNT"
action=${1:?$usage}
case "$(dpkg --print-architecture)" in
  amd64) loader=/lib64/ld-linux-x86-64.so.2; triplet=x86_64-linux-gnu ;;
  arm64) loader=/lib/ld-linux-aarch64.so.1; triplet=aarch64-linux-gnu ;;
  *) echo "native-tools.sh: no support for a $(dpkg --print-architecture) build host" >&2; exit 2 ;;
esac
if [ "$action" = libdir ]; then
  echo "${2:?$usage}/usr/lib/$triplet"
  exit 0
fi
libdir=/usr/lib/$triplet
root=${2:?$usage}
mnt=${3:?$usage}
record=$root/var/lib/medtls-native-tools.created
bin=/var/lib/medtls-native-bin
bin_tools=(basename cat chmod cmp cp cpio cut diff diff3 dirname dpkg-divert dpkg-query env find grep
  head ln md5sum mkdir mktemp mv readlink realpath rm sed sort stat tail touch tr tsort uniq wc xargs
  zstd)
# script name -> interpreter in the native root
declare -A scripts=([ucf]=/usr/bin/dash [ucfr]=/usr/bin/dash [ucfq]=/usr/bin/perl)

mkinitramfs_wrapper() {
  local skip_dir=$1 edit
  # mkinitramfs sets its own PATH (line 4) and mirrors every top-level /lib* into the initramfs.
  edit="s|^export PATH='/usr/bin:/sbin:/bin'\\\$|export PATH='$bin:/usr/bin:/sbin:/bin'|"
  if [ -n "$skip_dir" ]; then
    edit="$edit; s|^for d in /bin /lib\\* /sbin; do\\\$|& [ \"\\\$d\" = $skip_dir ] \\&\\& continue|"
  fi
  cat <<WRAPPER
#!$mnt/usr/bin/dash
# Build-only (medtls image): see image/scripts/native-tools.sh.
script=\$(mktemp) || exit 1
sed "$edit" /usr/sbin/mkinitramfs > "\$script"
if ! grep -q "^export PATH='$bin:" "\$script" || { [ -n "$skip_dir" ] && ! grep -q "= $skip_dir ] && continue" "\$script"; }; then
  echo "native-tools: mkinitramfs changed; running it under emulation" >&2
  rm -f "\$script"
  exec /usr/sbin/mkinitramfs "\$@"
fi
$mnt/usr/bin/dash "\$script" "\$@"
rc=\$?
rm -f "\$script"
exit \$rc
WRAPPER
}

add() {
  local dir skip_dir="" tool
  local path
  for path in "$loader" "$libdir"; do
    if [ -e "$root$path" ] || [ -L "$root$path" ]; then
      echo "native-tools.sh: $root$path exists: not a foreign-architecture root" >&2
      exit 2
    fi
  done
  : > "$record"
  dir=$(dirname "$loader")
  if [ ! -e "$root$dir" ]; then
    mkdir "$root/usr$dir"
    ln -s "usr$dir" "$root$dir"
    printf '%s\n' "/usr$dir" "$dir" >> "$record"
    skip_dir=$dir
  fi
  ln -s "$mnt$loader" "$root$loader"
  ln -s "$mnt$libdir" "$root$libdir"
  mkdir "$root$bin"
  for tool in "${bin_tools[@]}"; do
    [ -x "$root$mnt/usr/bin/$tool" ] || { echo "native-tools.sh: no $mnt/usr/bin/$tool" >&2; exit 2; }
    ln -s "$mnt/usr/bin/$tool" "$root$bin/$tool"
  done
  # the host's awk is an alternatives symlink, which would resolve to the image's mawk
  ln -s "$mnt/usr/bin/mawk" "$root$bin/awk"
  mkinitramfs_wrapper "$skip_dir" > "$root$bin/mkinitramfs"
  chmod 0755 "$root$bin/mkinitramfs"
  for tool in "${!scripts[@]}"; do
    chroot "$root" dpkg-divert --quiet --local --rename --divert "/usr/bin/$tool.medtls-build" --add "/usr/bin/$tool"
    {
      echo "#!$mnt/usr/bin/dash"
      echo '# Build-only (medtls image): see image/scripts/native-tools.sh.'
      echo "PATH=$bin:\$PATH; export PATH"
      echo "exec $mnt${scripts[$tool]} /usr/bin/$tool.medtls-build \"\$@\""
    } > "$root/usr/bin/$tool"
    chmod 0755 "$root/usr/bin/$tool"
  done
}

remove() {
  local path tool
  for tool in "${!scripts[@]}"; do
    rm -f "$root/usr/bin/$tool"
    chroot "$root" dpkg-divert --quiet --local --rename --remove "/usr/bin/$tool"
  done
  rm -rf "${root:?}$bin"
  rm -f "$root$loader" "$root$libdir"
  if [ -f "$record" ]; then
    tac "$record" | while read -r path; do
      if [ -L "$root$path" ]; then rm "$root$path"; else rmdir "$root$path"; fi
    done
    rm -f "$record"
  fi
}

case "$action" in
  add) add ;;
  unlink-libs) rm -f "$root$libdir" ;;
  remove) remove ;;
  *) echo "native-tools.sh: unknown action '$action'; $usage" >&2; exit 2 ;;
esac
