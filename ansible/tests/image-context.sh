#!/usr/bin/env bash
# The playbook in image context, as the image build runs it: a root filesystem (exported from the
# Molecule base image) behind community.general.chroot. Asserts units are enabled, files are in
# place, a second run changes nothing, and the build host's runtime state is untouched.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${MEDTLS_MOLECULE_IMAGE:-medtls/trixie-systemd:1}
root=$(mktemp -d /tmp/medtls-image-context.XXXXXX)
cid=""
cleanup() {
  [ -n "$cid" ] && docker rm -f "$cid" >/dev/null 2>&1
  rm -rf "$root"
}
trap cleanup EXIT

fail() { echo "image-context: FAIL: $*" >&2; exit 1; }

cid=$(docker create "$image")
docker export "$cid" | tar -x -C "$root"

host_before=$(nft list tables 2>/dev/null | sort; sysctl -n net.ipv4.ip_forward net.ipv4.conf.all.rp_filter)
run() {
  MEDTLS_IMAGE_ROOT=$root ANSIBLE_NOCOLOR=1 ANSIBLE_CONFIG=ansible.cfg \
    ansible-playbook -i inventories/image site.yml
}

start=$(date +%s)
run >"$root.first.log" 2>&1 || { tail -n 40 "$root.first.log"; rm -f "$root".*.log; fail "first run"; }
first=$(( $(date +%s) - start ))
run >"$root.second.log" 2>&1 || { tail -n 40 "$root.second.log"; rm -f "$root".*.log; fail "second run"; }
recap=$(grep -A1 'PLAY RECAP' "$root.second.log" | tail -n 1)
rm -f "$root".*.log
case $recap in
  *" changed=0 "*) ;;
  *) fail "second run is not idempotent: $recap" ;;
esac

wants=$root/etc/systemd/system
for link in multi-user.target.wants/medtls.service multi-user.target.wants/medtls-interception.service \
  sysinit.target.wants/medtls-failclosed.service multi-user.target.wants/medtls-keygen.service \
  multi-user.target.wants/systemd-networkd.service sysinit.target.wants/systemd-time-wait-sync.service \
  ssh.service.wants/medtls-ssh-hostkeys.service; do
  [ -L "$wants/$link" ] || fail "$link not enabled"
done
for file in etc/medtls/medtls.yaml usr/share/medtls/failclosed.nft etc/systemd/network/20-medtls-bridge.netdev \
  etc/sysctl.d/60-medtls-hardening.conf etc/ssh/sshd_config.d/10-medtls-hardening.conf \
  usr/lib/python3/dist-packages/medtls/cli.py usr/bin/medtls etc/default/medtls-interception \
  etc/default/medtls-keygen usr/lib/sysusers.d/medtls.conf; do
  [ -e "$root/$file" ] || fail "/$file missing"
done
[ ! -e "$root/etc/medtls/failclosed.nft" ] || fail "/etc/medtls/failclosed.nft: the ruleset is the package's"
# Every medtls unit is the package's; the roles only layer drop-ins (and /etc/default files) on them.
for unit in medtls.service medtls-led.service medtls-interception.service medtls-failclosed.service \
  medtls-keygen.service medtls-enroll.service medtls-enroll.timer medtls-crl-fetch.service \
  medtls-crl-fetch.timer medtls-update-gate.service; do
  [ -e "$root/lib/systemd/system/$unit" ] || [ -e "$root/usr/lib/systemd/system/$unit" ] ||
    fail "$unit is not the package's"
  [ ! -e "$wants/$unit" ] || fail "/etc/systemd/system/$unit hides the package's unit"
done
for unit in medtls.service medtls-led.service medtls-interception.service medtls-keygen.service \
  medtls-enroll.service medtls-enroll.timer medtls-crl-fetch.service medtls-crl-fetch.timer; do
  [ -e "$wants/$unit.d/medtls-role.conf" ] || fail "$unit has no medtls-role.conf drop-in"
done
# The A/B image enables the update gate, not the roles.
[ ! -e "$wants/multi-user.target.wants/medtls-update-gate.service" ] || fail "medtls-update-gate.service enabled by a role"
# The enrollment units are there for a first-boot import; the image inventory's mode leaves them off.
[ ! -e "$wants/timers.target.wants/medtls-enroll.timer" ] || fail "medtls-enroll.timer enabled in generate mode"
# Shared images carry no secrets: no device key, no SSH host key.
[ ! -e "$root/etc/medtls/device.key" ] || fail "a device key was baked into the image"
compgen -G "$root/etc/ssh/ssh_host_*_key" >/dev/null && fail "SSH host keys were baked into the image"

host_after=$(nft list tables 2>/dev/null | sort; sysctl -n net.ipv4.ip_forward net.ipv4.conf.all.rp_filter)
[ "$host_before" = "$host_after" ] || fail "the build host's nftables or sysctls changed"
echo "image-context: ok (first run ${first}s, second run idempotent, host untouched)"
