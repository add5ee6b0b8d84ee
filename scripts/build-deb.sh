#!/usr/bin/env bash
# Build the medtls Debian package offline from a clean copy of the checkout (docs/packaging.md).
# Usage: build-deb.sh OUT_DIR   -> OUT_DIR/medtls_<version>_all.deb
# The version is medtls.__version__ (proxy/medtls/__init__.py); packaging/debian/changelog's
# top entry must carry the same one. MEDTLS_DEB_VERSION=X builds X instead (tests: upgrade and
# downgrade): the copy's __version__ becomes X and a changelog entry for X goes on top, so
# `medtls --version` and dpkg agree. X must be a Debian and a PEP 440 version (0.1.0+test1).
set -euo pipefail

out=$(mkdir -p "${1:?usage: build-deb.sh OUT_DIR}" && cd "$1" && pwd)
repo=$(cd "$(dirname "$0")/.." && pwd)

source_version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/proxy/medtls/__init__.py")
changelog_version=$(dpkg-parsechangelog -l "$repo/packaging/debian/changelog" -S Version)
if [ "$source_version" != "$changelog_version" ]; then
  echo "build-deb.sh: medtls.__version__ is '$source_version' but packaging/debian/changelog" \
       "starts with '$changelog_version': add a changelog entry for $source_version" >&2
  exit 2
fi
version=${MEDTLS_DEB_VERSION:-$source_version}

work=$(mktemp -d "${TMPDIR:-/tmp}/medtls-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
src=$work/medtls-$version
mkdir -p "$src/examples"
# Tracked and new files only: no caches, no egg-info, nothing .gitignore names.
(cd "$repo/proxy" && git ls-files -co --exclude-standard -- pyproject.toml README.md medtls) |
  tar -C "$repo/proxy" -cf - --verbatim-files-from -T - | tar -C "$src" -xf -
cp "$repo/examples/ct-modality.yaml" "$src/examples/"
# -L: the unit files in debian/ are links to their one source, packaging/systemd/.
cp -rL "$repo/packaging/debian" "$src/debian"

if [ "$version" != "$source_version" ]; then
  sed -i "s/^__version__ = \".*\"$/__version__ = \"$version\"/" "$src/medtls/__init__.py"
  {
    printf 'medtls (%s) unstable; urgency=medium\n\n' "$version"
    printf '  * Build of %s with MEDTLS_DEB_VERSION.\n\n' "$version"
    # A later date than the entry below (lintian: latest-changelog-entry-without-new-date).
    printf ' -- %s  %s\n\n' "$(dpkg-parsechangelog -l "$src/debian/changelog" -S Maintainer)" \
      "$(date -R)"
    cat "$src/debian/changelog"
  } > "$work/changelog" && mv "$work/changelog" "$src/debian/changelog"
fi

# Debian's own python3 and tools only: a venv or pyenv first on PATH is not what the box runs.
(cd "$src" && env -u PYTHONPATH -u VIRTUAL_ENV -u PYENV_VERSION PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  dpkg-buildpackage -us -uc -b --no-sign >"$work/build.log" 2>&1) || {
  tail -n 60 "$work/build.log" >&2
  echo "build-deb.sh: dpkg-buildpackage failed (log above)" >&2
  exit 1
}
cp "$work/medtls_${version}_all.deb" "$out/"
cp "$work/build.log" "$out/medtls_${version}_build.log"
echo "$out/medtls_${version}_all.deb"
