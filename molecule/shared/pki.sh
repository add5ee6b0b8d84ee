#!/usr/bin/env bash
# Test PKI for the scenarios: a CA, the box's device identity and the peers (one openssl run each,
# far faster than one Ansible module call per object).
set -euo pipefail
dir=$1
[ -s "$dir/crl.pem" ] && exit 0
mkdir -p "$dir"
chmod 0700 "$dir"
cd "$dir"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }
key ca
openssl req -x509 -new -key ca.key -subj "/CN=medtls test CA" -days 30 -out ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
leaf() {
  local name=$1 cn=$2 san=$3
  key "$name"
  openssl req -new -key "$name.key" -subj "/CN=$cn" -out "$name.csr"
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
    -out "$name.crt" -extfile <(printf '%s\n' "subjectAltName=$san" \
      "extendedKeyUsage=serverAuth,clientAuth" "keyUsage=critical,digitalSignature" \
      "basicConstraints=critical,CA:FALSE") 2>/dev/null
}
leaf device medtls-device "IP:198.18.0.10,DNS:medtls-device"
leaf pacs pacs "IP:198.18.0.20,DNS:pacs.hospital.example"
leaf his his "IP:198.18.0.30"
# The CA's CRL, revoking the HIS certificate (openssl ca wants a database and a config).
printf '%s\n' "[ca]" "default_ca=test" "[test]" "database=index.txt" "crlnumber=crlnumber" \
  "default_md=sha256" "default_crl_days=7" >ca.cnf
: >index.txt
echo 01 >crlnumber
openssl ca -config ca.cnf -keyfile ca.key -cert ca.pem -revoke his.crt 2>/dev/null
openssl ca -config ca.cnf -keyfile ca.key -cert ca.pem -gencrl -out crl.pem 2>/dev/null
echo created
