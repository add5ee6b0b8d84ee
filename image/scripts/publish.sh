#!/usr/bin/env bash
# Compress a disk image into the deploy directory with a SHA-256 file next to it.
# Usage: publish.sh DISK.img DEPLOY_DIR NAME   ->  DEPLOY_DIR/NAME-YYYYMMDD.img.xz(.sha256)
set -euo pipefail
disk=${1:?usage: publish.sh DISK.img DEPLOY_DIR NAME}
deploy=${2:?usage: publish.sh DISK.img DEPLOY_DIR NAME}
name=${3:?usage: publish.sh DISK.img DEPLOY_DIR NAME}
[ -f "$disk" ] || { echo "publish.sh: $disk does not exist" >&2; exit 2; }
mkdir -p "$deploy"
out="$name-$(date -u +%Y%m%d).img.xz"
xz -T0 -6 -c "$disk" > "$deploy/$out.tmp"
mv "$deploy/$out.tmp" "$deploy/$out"
(cd "$deploy" && sha256sum "$out" > "$out.sha256")
echo "publish.sh: $deploy/$out ($(du -h "$deploy/$out" | cut -f1)), $(cut -d' ' -f1 "$deploy/$out.sha256")"
