#!/usr/bin/env bash
# A medtls pair by hand, on loopback, in explicit mode (no root, no interception):
#   storescu -> A 127.0.0.1:11104 (plain) -> TLS -> B 127.0.0.1:12762 -> storescp 127.0.0.1:11112
# Run it from a clone after `make setup`: examples/by-hand-pair.sh
# It exits 0 once the DICOM file has arrived through the pair, non-zero otherwise; it stops every
# process it started and removes its working directory, also on failure or Ctrl-C.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# `make setup` installs medtls (and pynetdicom) into the repository's venv, not on PATH.
command -v medtls >/dev/null || PATH="$here/../.venv/bin:$PATH"
work=$(mktemp -d "${TMPDIR:-/tmp}/medtls-pair.XXXXXX")
pids=()
cleanup() {
  local rc=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait || true
  if [ "$rc" -ne 0 ]; then
    for log in "$work"/*.log; do [ -e "$log" ] && { echo "--- $log"; tail -n 20 "$log"; }; done
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cd "$work"

# wait_for NAME PID COMMAND...: until COMMAND succeeds; fail if PID ends or after 10 s
wait_for() {
  local name=$1 pid=$2
  shift 2
  for _ in $(seq 100); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then echo "$name exited early" >&2; return 1; fi
    sleep 0.1
  done
  echo "$name not ready after 10 s" >&2
  return 1
}
# ready CONFIG: the daemon answers on its control socket and its listeners are up
# (`medtls status` exits 0 ok, 1 warning, 2 critical (also: not ready yet), 3 no answer)
ready() {
  local rc=0
  medtls status --config "$1" || rc=$?
  [ "$rc" -le 1 ]
}

# 1. test PKI: one CA, two box certificates (clientAuth+serverAuth), SAN 127.0.0.1
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
  -subj /CN=pair-ca -keyout ca.key -out ca.pem 2>/dev/null
for box in a b; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=box-$box" \
    -keyout "$box.key" -out "$box.csr" 2>/dev/null
  openssl x509 -req -in "$box.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 \
    -out "$box.crt" 2>/dev/null \
    -extfile <(printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=clientAuth,serverAuth\n')
done

# 2. box A: plain on 127.0.0.1:11104 -> TLS to 127.0.0.1:12762 (B's certificate must say box-b).
# Two processes on one host: each gets its own control socket and no metrics port (both
# would default to /run/medtls/control.sock and 127.0.0.1:9750).
# clock.require_sync: a box validates no certificate until the kernel or systemd-timesyncd
# marks the clock synchronised (a Pi has no RTC and may boot years off, which would make
# every expiry check meaningless); every connection would end in `clock_unsynced` on a
# workstation, VM or container whose clock is not marked so. Never turn it off on a box.
cat > a.yaml <<'YAML'
mode: explicit
device: {ip: 127.0.0.1}
identity: {certificate: a.crt, key: a.key}
trust: {ca: ca.pem}
outbound:
  - {name: far, address: 127.0.0.1, tls_port: 12762, listen: "127.0.0.1:11104", verify: {cn: box-b}}
control: {socket: a.sock}
metrics: {enabled: false}
clock: {require_sync: false}
YAML
# 3. box B: TLS on 127.0.0.1:12762 (client certificate cn=box-a required) -> plain 127.0.0.1:11112
cat > b.yaml <<'YAML'
mode: explicit
device: {ip: 127.0.0.1}
identity: {certificate: b.crt, key: b.key}
trust: {ca: ca.pem}
inbound:
  - {name: dicom, listen: "127.0.0.1:12762", device_port: 11112, allow: [{cn: box-a}]}
control: {socket: b.sock}
metrics: {enabled: false}
clock: {require_sync: false}
YAML
medtls check --config a.yaml
medtls check --config b.yaml
medtls run --config b.yaml 2>b.log &
pids+=($!)
wait_for "medtls B" $! ready b.yaml
medtls run --config a.yaml 2>a.log &
pids+=($!)
wait_for "medtls A" $! ready a.yaml

# 4. a DICOM receiver behind B (pynetdicom's storescp: DCMTK 3.6.7's listens on every address),
#    answering C-ECHO once it listens
mkdir out
python -m pynetdicom storescp --bind-address 127.0.0.1 -aet PACS -od out 11112 2>storescp.log &
pids+=($!)
wait_for storescp $! /usr/bin/echoscu -aec PACS 127.0.0.1 11112

# 5. a small DICOM file (Secondary Capture, 2x2 pixels), sent in front of A with DCMTK's storescu
uid=2.25.329800735698586629295641978511506172918
cat > sample.dump <<DUMP
(0008,0016) UI =SecondaryCaptureImageStorage
(0008,0018) UI [$uid]
(0008,0060) CS [OT]
(0010,0010) PN [Pair^ByHand]
(0010,0020) LO [PAIR-1]
(0020,000d) UI [$uid.1]
(0020,000e) UI [$uid.2]
(0028,0002) US 1
(0028,0004) CS [MONOCHROME2]
(0028,0010) US 2
(0028,0011) US 2
(0028,0100) US 8
(0028,0101) US 8
(0028,0102) US 7
(0028,0103) US 0
(7fe0,0010) OB 00\40\80\ff
DUMP
dump2dcm +te sample.dump sample.dcm
/usr/bin/storescu -aec PACS 127.0.0.1 11104 sample.dcm

# 6. it arrived through the pair (B logs the TLS session it came over)
if ! ls out/*"$uid"* >/dev/null 2>&1; then
  echo "by-hand pair: the C-STORE did not arrive in out/" >&2
  exit 1
fi
echo "by-hand pair: $uid arrived through A -> TLS -> B"
grep -m1 -i tls b.log || true
