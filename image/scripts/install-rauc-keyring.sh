#!/usr/bin/env bash
# Install the keyring RAUC checks update bundles against as ROOTFS_DIR/etc/rauc/keyring.pem: the
# CA certificate(s) whose signing certificates may sign bundles for this box (docs/updates.md,
# "Bundles and keys"). A bundle signed by any other key is refused.
# Usage: install-rauc-keyring.sh ROOTFS_DIR
# Environment: MEDTLS_RAUC_KEYRING (PEM file, one or more CA certificates, e.g. old + new CA during
#   a key rollover). Unset: the THROWAWAY TEST CA from rauc-test-pki.sh (MEDTLS_RAUC_PKI_DIR,
#   default <repo>/build/rauc-pki), announced as such in the build log.
set -euo pipefail

rootfs=${1:?usage: install-rauc-keyring.sh ROOTFS_DIR}
here=$(cd "$(dirname "$0")" && pwd)
pki=${MEDTLS_RAUC_PKI_DIR:-$(cd "$here/../.." && pwd)/build/rauc-pki}

fail() { echo "install-rauc-keyring.sh: $*" >&2; exit 2; }

keyring=${MEDTLS_RAUC_KEYRING:-}
if [ -z "$keyring" ]; then
  "$here/rauc-test-pki.sh" "$pki"
  keyring=$pki/ca.pem
  cat <<EOF
==========================================================================================
WARNING: this image trusts the TEST RAUC keyring $keyring
  Any bundle signed with the throwaway test key in $pki installs on it.
  For boxes in service build with MEDTLS_RAUC_KEYRING=<your CA> (docs/updates.md).
==========================================================================================
EOF
fi
if [ ! -r "$keyring" ] || [ ! -s "$keyring" ]; then
  fail "keyring $keyring (MEDTLS_RAUC_KEYRING): no such readable file"
fi
if grep -q -- "PRIVATE KEY-----" "$keyring"; then
  fail "keyring $keyring (MEDTLS_RAUC_KEYRING) holds a private key: a keyring holds CA certificates only"
fi
subjects=$(openssl crl2pkcs7 -nocrl -certfile "$keyring" 2>/dev/null | openssl pkcs7 -print_certs -noout 2>/dev/null |
  sed -n 's/^subject=/  /p') || true
[ -n "$subjects" ] || fail "keyring $keyring (MEDTLS_RAUC_KEYRING): no PEM certificate in it"
install -d -m 0755 "$rootfs/etc/rauc"
install -m 0644 "$keyring" "$rootfs/etc/rauc/keyring.pem"
echo "install-rauc-keyring.sh: /etc/rauc/keyring.pem from $keyring trusts:"
echo "$subjects"
