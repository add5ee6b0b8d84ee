#!/usr/bin/env bash
# Run Molecule scenarios as parallel processes (Molecule refuses --workers outside collections),
# at most MEDTLS_MOLECULE_JOBS at once; print each scenario's duration, show failed logs.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

jobs=${MEDTLS_MOLECULE_JOBS:-2}
logdir=${MEDTLS_MOLECULE_LOGS:-build/molecule}
mkdir -p "$logdir"
export NO_COLOR=1 ANSIBLE_NOCOLOR=1

# One snapshot of the package for every scenario: converge and idempotence install the same tree
# even while proxy/medtls is being edited.
rm -rf "$logdir/src" "$logdir/deb"
mkdir -p "$logdir/src"
cp -a proxy/medtls "$logdir/src/medtls"
find "$logdir/src" -name __pycache__ -prune -exec rm -rf {} +
MEDTLS_MOLECULE_SOURCE=$(realpath "$logdir/src/medtls")
export MEDTLS_MOLECULE_SOURCE
# ... and of the Debian package the proxy role installs (built from the same checkout).
scripts/build-deb.sh "$logdir/deb" >/dev/null || exit 1
MEDTLS_MOLECULE_DEB_DIR=$(realpath "$logdir/deb")
export MEDTLS_MOLECULE_DEB_DIR
if [ "$#" -eq 0 ]; then
  for d in molecule/*/molecule.yml; do d=${d%/molecule.yml}; set -- "$@" "${d#molecule/}"; done
fi
# The rollout scenario's version B: the same code as <version>+rollout1.
case " $* " in
  *" rollout "*)
    version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' proxy/medtls/__init__.py)
    MEDTLS_DEB_VERSION="$version+rollout1" scripts/build-deb.sh "$MEDTLS_MOLECULE_DEB_DIR" >/dev/null || exit 1
    ;;
esac

declare -A pid_of started result
run_one() {
  local s=$1
  exec molecule test --no-command-borders -s "$s" >"$logdir/$s.log" 2>&1
}

pending=("$@")
running=0
t0=$(date +%s)
while [ "${#pending[@]}" -gt 0 ] || [ "$running" -gt 0 ]; do
  while [ "${#pending[@]}" -gt 0 ] && [ "$running" -lt "$jobs" ]; do
    s=${pending[0]}
    pending=("${pending[@]:1}")
    started[$s]=$(date +%s)
    run_one "$s" &
    pid_of[$s]=$!
    running=$((running + 1))
    echo "molecule: $s started"
  done
  wait -n || true
  for s in "${!pid_of[@]}"; do
    p=${pid_of[$s]}
    if ! kill -0 "$p" 2>/dev/null; then
      wait "$p"
      rc=$?
      res=ok
      [ "$rc" -eq 0 ] || res=FAILED
      result[$s]="$res $(( $(date +%s) - started[$s] ))s"
      echo "molecule: $s ${result[$s]}"
      unset "pid_of[$s]"
      running=$((running - 1))
    fi
  done
done

failed=0
echo "=== molecule summary ($(( $(date +%s) - t0 ))s total, $jobs at a time, logs in $logdir)"
for s in "$@"; do
  printf '  %-14s %s\n' "$s" "${result[$s]}"
  case ${result[$s]} in
    FAILED*)
      failed=1
      echo "--- $s: errors in $logdir/$s.log"
      grep -E 'fatal:|^E  |^FAILED|CRITICAL|^\*  =>|msg:' "$logdir/$s.log" | tail -n 40
      ;;
  esac
done
exit "$failed"
