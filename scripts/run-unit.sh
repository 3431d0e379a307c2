#!/usr/bin/env bash
# Runs every Check suite in DIR; prints one line per suite and a closing "N passed, N failed".
set -u
dir=${1:?usage: run-unit.sh BUILD/tests}
pass=0; fail=0
for t in "$dir"/check_*; do
    case "$t" in *.d|*.o) continue ;; esac
    [ -x "$t" ] || continue
    if out=$("$t" 2>&1); then
        pass=$((pass + 1)); echo "$out" | grep -E '^[0-9]+%:' | sed "s|^|$(basename "$t"): |"
    else
        fail=$((fail + 1)); echo "$out" | tail -40; echo "FAILED: $t"
    fi
done
echo "unit: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
