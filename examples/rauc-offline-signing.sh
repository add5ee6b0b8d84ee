#!/usr/bin/env bash
# Worked example for docs/updates.md ("Bundles and keys"), run by image/tests/test_bundle.py:
# a production CA and signer kept away from the build machine, `rauc resign` of a bundle the build
# signed with its development (test) key, and a key rollover with a keyring holding old + new CA.
# Usage: rauc-offline-signing.sh BUNDLE.raucb DEV_KEYRING.pem WORK_DIR
#   BUNDLE.raucb: made by `make bundle` (signed under DEV_KEYRING, e.g. build/rauc-pki/ca.pem)
# Writes WORK_DIR/prod/{ca,signing}.{pem,key}, WORK_DIR/release.raucb (production-signed),
# WORK_DIR/next/... (the CA that replaces prod) and WORK_DIR/rollover-keyring.pem (prod + next).
# On a real signing machine the keys live on a token: give rauc `--key='pkcs11:token=...;object=...'`
# (and RAUC_PKCS11_MODULE) instead of a key file; nothing else changes.
set -euo pipefail

bundle=${1:?usage: rauc-offline-signing.sh BUNDLE.raucb DEV_KEYRING.pem WORK_DIR}
dev_keyring=${2:?usage: rauc-offline-signing.sh BUNDLE.raucb DEV_KEYRING.pem WORK_DIR}
work=${3:?usage: rauc-offline-signing.sh BUNDLE.raucb DEV_KEYRING.pem WORK_DIR}
mkdir -p "$work"

# RAUC's code-signing purpose check, as in the box's /etc/rauc/system.conf.
verify_conf() {
  printf '[system]\ncompatible=medtls-any\nbootloader=noop\n[keyring]\npath=%s\ncheck-purpose=codesign\n' \
    "$1" > "$work/verify.conf"
  echo "$work/verify.conf"
}

# 1. On the offline signing machine, once: a CA (long-lived, its key offline, the box trusts its
#    certificate) and a bundle signing certificate for code signing (shorter-lived).
make_ca_and_signer() {
  local dir=$1 name=$2
  mkdir -p "$dir"
  cat > "$dir/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[signing]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = critical, codeSigning
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7300 \
    -subj "/O=Example Hospital/CN=$name bundle CA" -config "$dir/openssl.cnf" -extensions ca \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -config "$dir/openssl.cnf" \
    -subj "/O=Example Hospital/CN=$name bundle signing" -keyout "$dir/signing.key" \
    -out "$dir/signing.csr" 2>/dev/null
  openssl x509 -req -in "$dir/signing.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -days 1095 \
    -set_serial "0x$(openssl rand -hex 16)" -extfile "$dir/openssl.cnf" -extensions signing \
    -out "$dir/signing.pem" 2>/dev/null
}
make_ca_and_signer "$work/prod" "production"

# 2. Per release: copy the build's bundle to the signing machine, check it against the development
#    keyring, and sign it again with the production key (the payload is not touched).
rm -f "$work/release.raucb"
rauc --conf="$(verify_conf "$dev_keyring")" --keyring="$dev_keyring" resign \
  --cert="$work/prod/signing.pem" --key="$work/prod/signing.key" \
  --signing-keyring="$work/prod/ca.pem" "$bundle" "$work/release.raucb"

# 3. Key rollover: a new CA; images and keyring updates ship BOTH CAs for a while, then new only.
make_ca_and_signer "$work/next" "next production"
cat "$work/prod/ca.pem" "$work/next/ca.pem" > "$work/rollover-keyring.pem"
rm -f "$work/release-next.raucb"
rauc --conf="$(verify_conf "$work/prod/ca.pem")" --keyring="$work/prod/ca.pem" resign \
  --cert="$work/next/signing.pem" --key="$work/next/signing.key" \
  --signing-keyring="$work/rollover-keyring.pem" "$work/release.raucb" "$work/release-next.raucb"
for signed in release release-next; do
  rauc --conf="$(verify_conf "$work/rollover-keyring.pem")" info "$work/$signed.raucb" >/dev/null
  echo "rauc-offline-signing.sh: $signed.raucb accepted by the rollover keyring (old + new CA)"
done
