#!/usr/bin/env bash
# Build the Ansible collection medtls.appliance (galaxy.yml at the repository root) offline.
# Usage: build-collection.sh OUT_DIR   -> OUT_DIR/medtls-appliance-<version>.tar.gz
# The collection's version is medtls.__version__ (proxy/medtls/__init__.py): the roles install
# the medtls package of the same version, so the two never drift apart.
set -euo pipefail

out=$(mkdir -p "${1:?usage: build-collection.sh OUT_DIR}" && cd "$1" && pwd)
repo=$(cd "$(dirname "$0")/.." && pwd)

source_version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/proxy/medtls/__init__.py")
galaxy_version=$(sed -n 's/^version: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$repo/galaxy.yml")
if [ "$source_version" != "$galaxy_version" ]; then
  echo "build-collection.sh: medtls.__version__ is '$source_version' but galaxy.yml says" \
       "version: '$galaxy_version': set galaxy.yml's version to $source_version" >&2
  exit 2
fi
galaxy=ansible-galaxy
if [ -x "$repo/.venv/bin/ansible-galaxy" ]; then galaxy=$repo/.venv/bin/ansible-galaxy; fi
cd "$repo"
"$galaxy" collection build --force --output-path "$out" >/dev/null
echo "$out/medtls-appliance-$source_version.tar.gz"
