#!/usr/bin/env bash
# Make a THROWAWAY RAUC signing PKI for test and development builds (never for boxes in service):
#   OUT_DIR/ca.pem, ca.key            test CA (the keyring test images trust)
#   OUT_DIR/signing.pem, signing.key  bundle signing certificate issued by that CA
#   OUT_DIR/foreign-ca.pem, foreign-ca.key, foreign-signing.pem, foreign-signing.key
#                                     an unrelated CA and signer: bundles the box must refuse
# Usage: rauc-test-pki.sh OUT_DIR
# Idempotent: an OUT_DIR that already holds a complete set is kept as it is (every image and bundle
# of a build tree trusts and is signed by the same test CA). Delete OUT_DIR to start over.
# The signing certificate is what RAUC's `check-purpose=codesign` accepts (docs/updates.md,
# "Bundles and keys"): keyUsage=critical,digitalSignature, extendedKeyUsage=critical,codeSigning.
# Environment: MEDTLS_RAUC_TEST_DAYS (signing certificate validity, default 825; the CAs get 3650).
set -euo pipefail

out=${1:?usage: rauc-test-pki.sh OUT_DIR}
days=${MEDTLS_RAUC_TEST_DAYS:-825}
files=(ca.pem ca.key signing.pem signing.key foreign-ca.pem foreign-ca.key foreign-signing.pem
  foreign-signing.key)

complete=1
for f in "${files[@]}"; do [ -s "$out/$f" ] || complete=0; done
if [ "$complete" = 1 ]; then
  echo "rauc-test-pki.sh: keeping the test PKI in $out"
  exit 0
fi

mkdir -p "$out"
work=$(mktemp -d "$out/.pki.XXXXXX")
trap 'rm -rf "$work"' EXIT

cat > "$work/ext.cnf" <<'EOF'
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

# $1: file prefix, $2: organisation named in the subjects
make_pair() {
  local prefix=$1 org=$2
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/O=$org/CN=$org RAUC test CA" -keyout "$work/${prefix}ca.key" \
    -config "$work/ext.cnf" -extensions ca -out "$work/${prefix}ca.pem" 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/O=$org/CN=$org RAUC test bundle signing" -keyout "$work/${prefix}signing.key" \
    -config "$work/ext.cnf" -out "$work/${prefix}signing.csr" 2>/dev/null
  openssl x509 -req -in "$work/${prefix}signing.csr" -CA "$work/${prefix}ca.pem" \
    -CAkey "$work/${prefix}ca.key" -set_serial "0x$(openssl rand -hex 16)" -days "$days" \
    -extfile "$work/ext.cnf" -extensions signing -out "$work/${prefix}signing.pem" 2>/dev/null
}

make_pair "" "medtls TEST ONLY"
make_pair foreign- "foreign TEST ONLY"
chmod 0600 "$work"/*.key
for f in "${files[@]}"; do mv "$work/$f" "$out/$f"; done
echo "rauc-test-pki.sh: made a THROWAWAY test PKI in $out (not for boxes in service)"
