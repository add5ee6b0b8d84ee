#!/usr/bin/env bash
# Start dockerd when it is not answering; idempotent. Addresses stay inside 198.19.0.0/16
# (the project's test range) and dockerd leaves the host firewall alone: Molecule talks to
# containers through `docker exec` and needs no container networking.
set -euo pipefail

log=${MEDTLS_DOCKERD_LOG:-/var/log/medtls-dockerd.log}
timeout=${MEDTLS_DOCKERD_TIMEOUT:-60}

if docker info >/dev/null 2>&1; then
  echo "docker: daemon already running"
  exit 0
fi
command -v dockerd >/dev/null || { echo "docker: dockerd not installed (apt: docker.io)" >&2; exit 1; }

# A stale pid file from a killed daemon would make dockerd refuse to start.
if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
  rm -f /var/run/docker.pid
fi

if ! pgrep -x dockerd >/dev/null; then
  echo "docker: starting dockerd (log: $log)"
  setsid nohup dockerd \
    --bip 198.19.255.1/24 \
    --default-address-pool base=198.19.0.0/17,size=24 \
    --iptables=false --ip6tables=false --ip-masq=false \
    >>"$log" 2>&1 </dev/null &
fi

for _ in $(seq "$timeout"); do
  if docker info >/dev/null 2>&1; then
    echo "docker: daemon ready"
    exit 0
  fi
  sleep 1
done
echo "docker: dockerd did not answer within ${timeout}s, see $log" >&2
tail -n 20 "$log" >&2 || true
exit 1
