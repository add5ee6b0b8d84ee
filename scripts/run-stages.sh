#!/usr/bin/env bash
# Run each make target as a stage, keep going after a failure, print a timing summary.
set -u
declare -a names results
failed=0
for stage in "$@"; do
  start=$(date +%s)
  echo "=== stage $stage"
  if make --no-print-directory "$stage"; then res=ok; else res=FAILED; failed=1; fi
  names+=("$stage")
  results+=("$res $(( $(date +%s) - start ))s")
done
echo
echo "=== stage summary"
for i in "${!names[@]}"; do
  printf '  %-20s %s\n' "${names[$i]}" "${results[$i]}"
done
exit "$failed"
