#!/usr/bin/env bash
# Build or destroy the lab wiring: modality -- box(eth0,eth1 in br0) -- mallory's wire -- pacs,
# and on the same wire the hospital router to a second segment (the data centre, namespace dc).
# Usage: lab/topology.sh up|down [PREFIX]
#   (namespaces are named PREFIX{modality,box,pacs,mallory,router,dc})
# Addresses: LAN 198.18.0.0/24: modality .10 (default via .1), pacs .20 and .30 (HIS), mallory .66,
# router .1; data centre 198.18.5.0/24: router .1, dc .20 (default via .1); box: none.
set -euo pipefail

action=${1:?usage: topology.sh up|down [PREFIX]}
prefix=${2:-}
MOD=${prefix}modality BOX=${prefix}box PACS=${prefix}pacs MAL=${prefix}mallory
ROUTER=${prefix}router DC=${prefix}dc
DEVICE_MAC=${LAB_DEVICE_MAC:-02:00:5e:10:00:10}
BOX_MAC=${LAB_BOX_MAC:-02:00:5e:10:00:b0}
ROUTER_MAC=${LAB_ROUTER_MAC:-02:00:5e:10:00:01}
ALL=("$MOD" "$BOX" "$PACS" "$MAL" "$ROUTER" "$DC")

exists() { ip netns list | awk '{print $1}' | grep -qx -- "$1"; }

down() {
  local ns pid
  # PREFIXca: the ACME CA's namespace, added by lab/medlab/pebble.py while enrollment tests run.
  for ns in "${ALL[@]}" "${prefix}ca"; do
    exists "$ns" || continue
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.2
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns"
  done
}

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

up() {
  for ns in "${ALL[@]}"; do
    if exists "$ns"; then
      echo "topology.sh: namespace $ns already exists (run: topology.sh down '$prefix')" >&2
      exit 1
    fi
  done
  for ns in "${ALL[@]}"; do
    ip netns add "$ns"
    nsx "$ns" ip link set lo up
    # Keep the lab IPv4-only unless a test adds documentation-prefix IPv6 itself.
    nsx "$ns" sysctl -qw net.ipv6.conf.default.accept_ra=0 net.ipv6.conf.all.accept_ra=0
  done
  # Cable 1: modality eth0 <-> box eth0 (device port).
  ip -n "$MOD" link add eth0 address "$DEVICE_MAC" type veth peer name eth0 netns "$BOX"
  # Cable 2: box eth1 (LAN port) <-> mallory's wire; cable 3: mallory's wire <-> pacs eth0.
  ip -n "$BOX" link add eth1 type veth peer name box netns "$MAL"
  ip -n "$PACS" link add eth0 type veth peer name pacs netns "$MAL"
  # Cable 4: router eth0 <-> mallory's wire; cable 5: router eth1 <-> dc eth0 (data centre).
  ip -n "$ROUTER" link add eth0 address "$ROUTER_MAC" type veth peer name router netns "$MAL"
  ip -n "$ROUTER" link add eth1 type veth peer name eth0 netns "$DC"

  nsx "$MOD" ip addr add 198.18.0.10/24 dev eth0
  nsx "$MOD" ip link set eth0 up
  # Like a real modality: peers outside its subnet are reached through the hospital router.
  nsx "$MOD" ip route add default via 198.18.0.1

  nsx "$ROUTER" sysctl -qw net.ipv4.ip_forward=1
  nsx "$ROUTER" ip addr add 198.18.0.1/24 dev eth0
  nsx "$ROUTER" ip addr add 198.18.5.1/24 dev eth1
  nsx "$ROUTER" ip link set eth0 up
  nsx "$ROUTER" ip link set eth1 up

  nsx "$DC" ip addr add 198.18.5.20/24 dev eth0
  nsx "$DC" ip link set eth0 up
  nsx "$DC" ip route add default via 198.18.5.1

  nsx "$PACS" ip addr add 198.18.0.20/24 dev eth0
  nsx "$PACS" ip addr add 198.18.0.30/24 dev eth0
  nsx "$PACS" ip link set eth0 up

  # Mallory is the LAN switch between the box and the PACS, with an address of its own.
  nsx "$MAL" ip link add wire type bridge stp_state 0 forward_delay 0
  nsx "$MAL" sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0
  nsx "$MAL" ip link set box master wire
  nsx "$MAL" ip link set pacs master wire
  nsx "$MAL" ip link set router master wire
  nsx "$MAL" ip addr add 198.18.0.66/24 dev wire
  nsx "$MAL" ip link set box up
  nsx "$MAL" ip link set pacs up
  nsx "$MAL" ip link set router up
  nsx "$MAL" ip link set wire up

  # The box: two ports in a bridge, no IPv4 address anywhere.
  nsx "$BOX" ip link add br0 address "$BOX_MAC" type bridge stp_state 0 forward_delay 0
  nsx "$BOX" ip link set eth0 master br0
  nsx "$BOX" ip link set eth1 master br0
  nsx "$BOX" sysctl -qw net.ipv6.conf.br0.disable_ipv6=1 net.ipv6.conf.eth0.disable_ipv6=1 \
    net.ipv6.conf.eth1.disable_ipv6=1
  nsx "$BOX" ip link set eth0 up
  nsx "$BOX" ip link set eth1 up
  nsx "$BOX" ip link set br0 up
}

case "$action" in
  up) up ;;
  down) down ;;
  *) echo "usage: topology.sh up|down [PREFIX]" >&2; exit 2 ;;
esac
