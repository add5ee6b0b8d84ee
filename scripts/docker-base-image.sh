#!/usr/bin/env bash
# Build the local Debian trixie + systemd image Molecule runs (no registry is reachable).
# Skipped when the image already exists; bump the tag when the package list changes.
set -euo pipefail

image=${MEDTLS_MOLECULE_IMAGE:-medtls/trixie-systemd:1}
suite=${MEDTLS_MOLECULE_SUITE:-trixie}
mirror=${MEDTLS_DEBIAN_MIRROR:-http://deb.debian.org/debian}

# The base set runs systemd as PID 1; the rest are what the roles install, preloaded because
# containers get no network (the roles find them present and never reach for an archive).
packages=(
  python3 python3-apt systemd systemd-sysv dbus sudo iproute2 nftables ca-certificates
  python3-yaml python3-cryptography openssl openssh-server unattended-upgrades
  systemd-timesyncd kmod procps
  python3-acme python3-josepy python3-requests
)
# The hardening role's packages (image/packages/hardening.list, shared with the image build).
while read -r package _; do
  case "$package" in ''|'#'*) continue ;; esac
  packages+=("$package")
done < "$(dirname "$0")/../image/packages/hardening.list"

# The label records the package set: an image built from another list is rebuilt under the same tag.
set_id=$(printf '%s\n' "$suite" "${packages[@]}" | sha256sum | cut -c1-16)
if [ "$(docker image inspect --format '{{ index .Config.Labels "medtls.packages" }}' "$image" 2>/dev/null)" = "$set_id" ]; then
  echo "image: $image present"
  exit 0
fi

work=$(mktemp -d /tmp/medtls-base-image.XXXXXX)
trap 'rm -rf "$work"' EXIT

start=$(date +%s)
# shellcheck disable=SC2016  # "$1" is expanded by mmdebstrap's hook shell
mmdebstrap --variant=minbase --quiet \
  --include="$(IFS=,; echo "${packages[*]}")" \
  --customize-hook='rm -f "$1/etc/hostname" "$1/etc/resolv.conf"' \
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
  "$suite" "$work/rootfs.tar" "deb $mirror $suite main"

docker import \
  --change 'CMD ["/usr/lib/systemd/systemd", "SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1"]' \
  --change 'ENV container=docker' \
  --change "LABEL medtls.packages=$set_id" \
  "$work/rootfs.tar" "$image" >/dev/null
echo "image: built $image in $(( $(date +%s) - start ))s"
