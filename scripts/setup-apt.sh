#!/usr/bin/env bash
# Install the Debian packages named in the given lists (one per line, '#' comments).
# Packages come from the host's Debian release, which pins their versions.
set -eu
mapfile -t wanted < <(sed -e 's/#.*//' "$@" | tr -s ' \t' '\n' | sed '/^$/d' | sort -u)
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
[ "${#missing[@]}" -eq 0 ] && { echo "apt: all ${#wanted[@]} packages present"; exit 0; }
echo "apt: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
