#!/usr/bin/env bash
# Compress a disk image into the deploy directory with a SHA-256 file next to it, and its SBOM
# (sbom.cdx.json next to DISK.img, written by build-image.sh) beside it.
# Usage: publish.sh DISK.img DEPLOY_DIR NAME
#   ->  DEPLOY_DIR/NAME-YYYYMMDD.img.xz(.sha256), DEPLOY_DIR/NAME-YYYYMMDD.sbom.cdx.json(.sha256)
set -euo pipefail
disk=${1:?usage: publish.sh DISK.img DEPLOY_DIR NAME}
deploy=${2:?usage: publish.sh DISK.img DEPLOY_DIR NAME}
name=${3:?usage: publish.sh DISK.img DEPLOY_DIR NAME}
[ -f "$disk" ] || { echo "publish.sh: $disk does not exist" >&2; exit 2; }
sbom="$(dirname "$disk")/sbom.cdx.json"
[ -f "$sbom" ] || { echo "publish.sh: $sbom does not exist: an image is published with its SBOM" >&2; exit 2; }
mkdir -p "$deploy"
out="$name-$(date -u +%Y%m%d).img.xz"
xz -T0 -6 -c "$disk" > "$deploy/$out.tmp"
mv "$deploy/$out.tmp" "$deploy/$out"
(cd "$deploy" && sha256sum "$out" > "$out.sha256")
bom="${out%.img.xz}.sbom.cdx.json"
cp "$sbom" "$deploy/$bom"
(cd "$deploy" && sha256sum "$bom" > "$bom.sha256")
echo "publish.sh: $deploy/$out ($(du -h "$deploy/$out" | cut -f1)), $(cut -d' ' -f1 "$deploy/$out.sha256")"
