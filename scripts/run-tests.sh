#!/usr/bin/env bash
# `make test`: installs what is missing, builds the release and ASan+UBSan variants, starts
# throwaway servers on loopback, runs every suite against both builds, stops the servers by PID.
# Set CM_TEST_REUSE=1 with CM_TEST_* variables exported to use servers that are already running.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
jobs=$(nproc 2>/dev/null || echo 2)
make -s -j"$jobs" all unit-bins
make -s -j"$jobs" asan-build

if [ "${CM_TEST_REUSE:-0}" != 1 ]; then
    base=$(mktemp -d /tmp/cm-servers.XXXXXX)
    trap 'scripts/backends.sh stop-all "$base" >/dev/null 2>&1 || true' EXIT
    scripts/backends.sh start-all "$base"
    # shellcheck disable=SC1091
    . "$base/env.sh"
fi

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
failed=()
run() {
    local name=$1; shift
    echo "=== $name"
    if ! "$@"; then
        failed+=("$name")
    fi
}
run "unit (release)" scripts/run-unit.sh build/tests
run "unit (asan+ubsan)" scripts/run-unit.sh build/asan/tests
run "integration (release)" env CACHEMED_BIN="$PWD/build/cachemed" /usr/bin/python3 tests/integration/run.py
run "integration (asan+ubsan)" env CACHEMED_BIN="$PWD/build/asan/cachemed" /usr/bin/python3 tests/integration/run.py

total=4
echo
if [ ${#failed[@]} -eq 0 ]; then
    echo "make test: $total passed, 0 failed"
    exit 0
fi
echo "failed suites: ${failed[*]}"
echo "make test: $((total - ${#failed[@]})) passed, ${#failed[@]} failed"
exit 1
