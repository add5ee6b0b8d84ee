#!/usr/bin/env bash
# Make a signed RAUC update bundle (verity format) from a root filesystem image: one image,
# rootfs.ext4, for slot class `rootfs`, compatible `medtls-<arch>` (docs/updates.md).
# Usage: make-bundle.sh ROOTFS_EXT4 OUT.raucb|OUT_DIR/
#   OUT_DIR/ (an existing directory or a path ending in /): OUT_DIR/medtls-<arch>-<version>.raucb
# Environment:
#   MEDTLS_RAUC_CERT, MEDTLS_RAUC_KEY   signing certificate and key: PEM files or PKCS#11 URIs
#       ("pkcs11:token=...;object=..."; RAUC_PKCS11_MODULE / RAUC_PKCS11_PIN as rauc documents).
#       Both or neither; neither: the throwaway test PKI (rauc-test-pki.sh, made once).
#   MEDTLS_RAUC_KEYRING   with a production key: the CA(s) the boxes trust; the new bundle is
#       checked against it before it is written. With the test key the check is against the test CA
#       (the bundle is a build artifact to install on test boxes or to re-sign offline).
#   The root filesystem's own /etc/rauc/keyring.pem is what the box trusts AFTER the update: with a
#   production key it must trust the signing certificate, or the updated box would refuse every
#   later bundle from that signer.
#   MEDTLS_RAUC_PKI_DIR   where the test PKI lives (default: <repo>/build/rauc-pki)
#   MEDTLS_BUNDLE_ARCH    default: the architecture of dpkg inside ROOTFS_EXT4
#   MEDTLS_BUNDLE_VERSION default: <medtls package version inside ROOTFS_EXT4>+<MEDTLS_BUILD_ID>,
#       MEDTLS_BUILD_ID defaulting to ROOTFS_EXT4's modification time (UTC, YYYYMMDDhhmmss), so one
#       root filesystem build gives one version.
set -euo pipefail

usage="usage: make-bundle.sh ROOTFS_EXT4 OUT.raucb|OUT_DIR/"
rootfs=${1:?$usage}
out=${2:?$usage}
here=$(cd "$(dirname "$0")" && pwd)
pki=${MEDTLS_RAUC_PKI_DIR:-$(cd "$here/../.." && pwd)/build/rauc-pki}

fail() { echo "make-bundle.sh: $*" >&2; exit 2; }

# A key or certificate named by a PKCS#11 URI stays in its token; a file must be readable here.
check_material() {
  local what=$1 value=$2
  case "$value" in
    pkcs11:*) ;;
    *) if [ ! -r "$value" ] || [ ! -s "$value" ]; then fail "$what $value: no such readable file"; fi ;;
  esac
}

# Read one file out of the ext4 image without mounting it.
ext4_cat() { debugfs -R "cat $1" "$rootfs" 2>/dev/null; }

# dpkg's status record of one package -> one field. awk reads to the end: an early exit would
# kill debugfs with SIGPIPE on a real status file (and pipefail would stop the script).
dpkg_field() {
  ext4_cat /var/lib/dpkg/status | awk -v pkg="$1" -v field="$2:" '
    /^Package: / { this = ($2 == pkg) }
    this && $1 == field && !found { print $2; found = 1 }'
}

[ -e "$rootfs" ] || fail "$rootfs: no such file (build the image first: make image-debian)"
[ -f "$rootfs" ] || fail "$rootfs: not a regular file"
fstype=$(blkid -p -s TYPE -o value "$rootfs" 2>/dev/null || true)
[ "$fstype" = ext4 ] || fail "$rootfs: not an ext4 filesystem image (found: ${fstype:-no filesystem})"

cert=${MEDTLS_RAUC_CERT:-}
key=${MEDTLS_RAUC_KEY:-}
keyring=${MEDTLS_RAUC_KEYRING:-}
if [ -n "$cert$key" ]; then
  [ -n "$cert" ] || fail "MEDTLS_RAUC_KEY is set but MEDTLS_RAUC_CERT is not: give both"
  [ -n "$key" ] || fail "MEDTLS_RAUC_CERT is set but MEDTLS_RAUC_KEY is not: give both"
  [ -n "$keyring" ] || fail "MEDTLS_RAUC_KEYRING is not set: name the CA the boxes trust, the bundle is checked against it"
else
  "$here/rauc-test-pki.sh" "$pki"
  cert=$pki/signing.pem
  key=$pki/signing.key
  keyring=$pki/ca.pem
  echo "make-bundle.sh: signing with the THROWAWAY TEST key $key (only boxes with the test keyring accept it)"
fi
check_material "signing certificate (MEDTLS_RAUC_CERT)" "$cert"
check_material "signing key (MEDTLS_RAUC_KEY)" "$key"
check_material "keyring (MEDTLS_RAUC_KEYRING)" "$keyring"

arch=${MEDTLS_BUNDLE_ARCH:-$(dpkg_field dpkg Architecture)}
[ -n "$arch" ] || fail "$rootfs: no dpkg architecture in /var/lib/dpkg/status; set MEDTLS_BUNDLE_ARCH"
version=${MEDTLS_BUNDLE_VERSION:-}
if [ -z "$version" ]; then
  medtls_version=$(dpkg_field medtls Version)
  [ -n "$medtls_version" ] || fail "$rootfs: medtls is not installed in it; set MEDTLS_BUNDLE_VERSION"
  version="$medtls_version+${MEDTLS_BUILD_ID:-$(date -u -r "$rootfs" +%Y%m%d%H%M%S)}"
fi

[[ "$arch" =~ ^[a-z0-9]+$ ]] || fail "architecture '$arch' (MEDTLS_BUNDLE_ARCH): not a Debian architecture name"
[[ "$version" =~ ^[A-Za-z0-9][A-Za-z0-9.+~_-]*$ ]] ||
  fail "version '$version' (MEDTLS_BUNDLE_VERSION): only letters, digits and . + ~ _ - are allowed"

if [ -d "$out" ] || [ "${out%/}" != "$out" ]; then
  mkdir -p "$out"
  out="${out%/}/medtls-$arch-$version.raucb"
fi
mkdir -p "$(dirname "$out")"
work=$(mktemp -d "$(dirname "$out")/.bundle.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/content"
ln "$rootfs" "$work/content/rootfs.ext4" 2>/dev/null || cp "$rootfs" "$work/content/rootfs.ext4"
cat > "$work/content/manifest.raucm" <<EOF
[update]
compatible=medtls-$arch
version=$version

[bundle]
format=verity

[image.rootfs]
filename=rootfs.ext4
EOF
# The bundle is checked as a box checks it: its keyring with RAUC's code-signing purpose check
# (the box's system.conf has the same [keyring] check-purpose).
cat > "$work/verify.conf" <<EOF
[system]
compatible=medtls-$arch
bootloader=noop

[keyring]
path=$keyring
check-purpose=codesign
EOF

if ! rauc --conf="$work/verify.conf" bundle --cert="$cert" --key="$key" --signing-keyring="$keyring" \
  "$work/content" "$work/bundle.raucb" > "$work/rauc.log" 2>&1; then
  sed 's/^/  rauc: /' "$work/rauc.log" >&2
  fail "signing $out failed (certificate $cert, key $key, checked against keyring $keyring)"
fi

# What the updated box will trust: the payload's keyring against this bundle's signer.
ext4_cat /etc/rauc/keyring.pem > "$work/payload-keyring.pem" || true
if [ ! -s "$work/payload-keyring.pem" ]; then
  echo "make-bundle.sh: note: $rootfs has no /etc/rauc/keyring.pem (a box updated with it takes no further bundle)"
  [ -z "${MEDTLS_RAUC_CERT:-}" ] || fail "$rootfs has no /etc/rauc/keyring.pem: refusing to sign it with a production key"
elif [[ "$cert" != pkcs11:* ]] &&
  ! openssl verify -no_check_time -CAfile "$work/payload-keyring.pem" "$cert" >/dev/null 2>&1; then
  if [ -n "${MEDTLS_RAUC_CERT:-}" ]; then
    fail "$rootfs's /etc/rauc/keyring.pem does not trust the signing certificate $cert: a box updated with it would refuse every later bundle from this signer (build the image with MEDTLS_RAUC_KEYRING naming its CA)"
  fi
  echo "make-bundle.sh: note: the payload's /etc/rauc/keyring.pem does not trust the test signer: re-sign this bundle (rauc resign) under the CA it trusts"
fi
mv -f "$work/bundle.raucb" "$out"
echo "make-bundle.sh: $out compatible=medtls-$arch version=$version" \
  "($(( $(stat -c %s "$out") / 1048576 )) MiB, verity, checked against $keyring)"
