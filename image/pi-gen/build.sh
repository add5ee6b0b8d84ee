#!/usr/bin/env bash
# `make image`: fetch pi-gen (arm64 branch, pinned commit), add the medtls stage after stage2
# (Raspberry Pi OS Lite 64-bit, trixie) and run pi-gen natively as root.
# Usage: build.sh WORK_DIR DEPLOY_DIR
# Environment: PIGEN_REPO, PIGEN_BRANCH, PIGEN_COMMIT (40 hex, see docs/image.md), PIGEN_DOCKER,
#              FIRST_USER_NAME, FIRST_USER_SSH_KEY (required), MEDTLS_PLAYBOOK_ARGS.
set -euo pipefail

work=$(realpath -m "${1:?usage: build.sh WORK_DIR DEPLOY_DIR}")
deploy=$(realpath -m "${2:?usage: build.sh WORK_DIR DEPLOY_DIR}")
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
pigen="$work/pi-gen"

die() { echo "image/pi-gen/build.sh: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "pi-gen must run as root"
key=${FIRST_USER_SSH_KEY:-}
if [ -n "$key" ] && [ -f "$key" ]; then key=$(cat "$key"); fi
[ -n "$key" ] || die "FIRST_USER_SSH_KEY is empty: the image has no password, give an SSH public key (line or .pub file)"
printf '%s\n' "$key" | ssh-keygen -l -f - >/dev/null 2>&1 || die "FIRST_USER_SSH_KEY is not an SSH public key"
if [ "${PIGEN_DOCKER:-0}" = 1 ]; then
  die "PIGEN_DOCKER=1 is not supported yet: the medtls stage runs ansible-playbook from the build host, which build-docker.sh's container lacks (docs/image.md)"
fi

if [ ! -d "$pigen/.git" ]; then
  git clone --branch "${PIGEN_BRANCH:-arm64}" "${PIGEN_REPO:?}" "$pigen"
fi
git -C "$pigen" fetch origin "${PIGEN_BRANCH:-arm64}"
if [ -n "${PIGEN_COMMIT:-}" ]; then
  git -C "$pigen" checkout --detach "$PIGEN_COMMIT"
else
  git -C "$pigen" checkout --detach "origin/${PIGEN_BRANCH:-arm64}"
  echo "image/pi-gen/build.sh: warning: PIGEN_COMMIT unset, building unpinned pi-gen $(git -C "$pigen" rev-parse HEAD)" >&2
fi
echo "pi-gen commit: $(git -C "$pigen" rev-parse HEAD)"

rm -rf "$pigen/stage-medtls"
cp -a "$here/stage-medtls" "$pigen/stage-medtls"
cp "$here/config" "$pigen/config.medtls"
# Only the medtls stage is exported; pi-gen's .gitignore lists SKIP_IMAGES as a build-time marker.
touch "$pigen/stage2/SKIP_IMAGES"

mkdir -p "$deploy"
export MEDTLS_REPO=$repo
export PUBKEY_SSH_FIRST_USER=$key FIRST_USER_SSH_KEY=$key
MEDTLS_THROWAWAY_PASS=$(openssl rand -base64 33)
export MEDTLS_THROWAWAY_PASS
export WORK_DIR="$work/pi-gen-work" DEPLOY_DIR="$deploy"
export MEDTLS_SBOM_OUT="$work/sbom.cdx.json"
rm -f "$MEDTLS_SBOM_OUT"
stamp=$(mktemp)
(cd "$pigen" && ./build.sh -c config.medtls)
find "$deploy" -maxdepth 1 -name '*.img.xz' -newer "$stamp" -print0 |
  while IFS= read -r -d '' img; do
    (cd "$deploy" && sha256sum "$(basename "$img")" > "$(basename "$img").sha256")
    bom="$(basename "${img%.img.xz}").sbom.cdx.json"
    cp "$MEDTLS_SBOM_OUT" "$deploy/$bom"
    (cd "$deploy" && sha256sum "$bom" > "$bom.sha256")
    echo "image: $img"
  done
rm -f "$stamp"
