#!/usr/bin/env bash
# Print a /bin/sh wrapper that runs the python3 of a build-native-python.sh root mounted at
# MOUNTPOINT (a path inside a foreign-architecture image root) through that root's own dynamic
# loader, so it runs natively in the chroot. With APT_ARCH, python3-apt takes APT_ARCH as apt's
# native architecture (the image's dpkg database is read, not the build host's).
# NATIVE_PYTHON_IMAGE_SITE=1: the image's pure-Python packages are importable too (maintainer
# scripts run e.g. `python3 -m apt_listchanges.debconf_helper`); its compiled extensions are not
# (other architecture), the native root's python3-apt stands in for apt_pkg.
# Usage: native-python.sh MOUNTPOINT [APT_ARCH]
set -euo pipefail
mnt=${1:?usage: native-python.sh MOUNTPOINT [APT_ARCH]}
apt_arch=${2:-}
case "$(dpkg --print-architecture)" in
  amd64) loader=/lib64/ld-linux-x86-64.so.2; triplet=x86_64-linux-gnu ;;
  arm64) loader=/lib/ld-linux-aarch64.so.1; triplet=aarch64-linux-gnu ;;
  *) echo "native-python.sh: no native-python support on $(dpkg --print-architecture)" >&2; exit 2 ;;
esac
echo '#!/bin/sh'
echo '# Build-only (medtls image): the build host'"'"'s python3, see image/scripts/build-native-python.sh.'
if [ -n "$apt_arch" ]; then
  echo "APT_CONFIG=$mnt.apt.conf; export APT_CONFIG"
fi
if [ "${NATIVE_PYTHON_IMAGE_SITE:-0}" = 1 ]; then
  echo "PYTHONPATH=/usr/lib/python3/dist-packages; export PYTHONPATH"
fi
echo "exec $mnt$loader --library-path $mnt/usr/lib/$triplet $mnt/usr/bin/python3 \"\$@\""
