#!/usr/bin/env bash
# The soak test (issue 14 B, `make soak`; not part of `make test`): SOAK_SECS (600) of mixed
# commands from SOAK_CLIENTS (200) clients with faults injected on a schedule, against
# SOAK_BIN (build/cachemed; build/asan/cachemed for ASan+UBSan). The driver is bench/soak.py, which
# says what is sent, injected and checked. This script starts the backends (its own base dir) and
# stops them, the driver and whatever the driver started, by PID, whatever happens.
#
#   SOAK_SECS=60 bench/soak.sh                     a short run
#   SOAK_BIN=build/asan/cachemed bench/soak.sh     the ASan+UBSan build
#
# Other knobs (env): SOAK_KEYS ids per node (1000), SOAK_THINK mean seconds between a client's
# batches (0.05), SOAK_MAX_SLOPE RSS KB/min allowed after warm-up (1024), SOAK_SQL pg|sqlite (pg),
# SOAK_LOG_LEVEL (info), SOAK_SEED (1), SOAK_WITHOUT commands left out (say REFRESH), SOAK_SLOW
# and SOAK_DISC slow readers and disconnecting clients (a tenth of the clients each), SOAK_FAULTS=0
# no Redis/origin faults, SOAK_MAX_LATENCY seconds a reply to a reading client may take (15),
# SOAK_KEEP=1 keeps the work dir (always kept on failure).
# Exit status: 0 when every request of a client that stayed was answered (within SOAK_MAX_LATENCY
# for clients that read), no reply was wrong, the daemon did not crash and exited 0 on SIGTERM,
# and the RSS slope is under the limit.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${SOAK_BIN:-$ROOT/build/cachemed}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
[ -x "$BIN" ] || {
    echo "soak: no $BIN (make -s all, or make asan-build)" >&2
    exit 2
}

base=$(mktemp -d /tmp/cm-soak.XXXXXX)
work=$base/work
mkdir -p "$work"
chmod 755 "$base" # PostgreSQL runs as user postgres and must reach $base/srv
driver=""
rc=1

# shellcheck disable=SC2317 # (runs from the trap)
cleanup() {
    local pid
    trap - EXIT INT TERM
    # The driver first (it stops its own children), then anything it recorded that still runs.
    if [ -n "$driver" ] && kill -0 "$driver" 2> /dev/null; then
        kill -TERM "$driver" 2> /dev/null
        for _ in $(seq 100); do kill -0 "$driver" 2> /dev/null || break; sleep 0.1; done
        kill -KILL "$driver" 2> /dev/null || true
    fi
    if [ -f "$work/pids" ]; then
        while read -r pid; do
            # Only if that PID is still cachemed or the origin (not a PID since reused).
            case $({ tr '\0' ' ' < "/proc/$pid/cmdline"; } 2> /dev/null) in
            *cachemed* | *origin.py*) kill -KILL "$pid" 2> /dev/null || true ;;
            esac
        done < "$work/pids"
    fi
    if [ -f "$base/srv/redis.pids" ]; then
        while read -r pid; do kill -CONT "$pid" 2> /dev/null || true; done < "$base/srv/redis.pids"
    fi
    [ -f "$base/srv/ports" ] && "$ROOT/scripts/backends.sh" stop-all "$base/srv" 2> /dev/null
    if [ "$rc" = 0 ] && [ "${SOAK_KEEP:-0}" != 1 ]; then
        rm -rf "$base"
    else
        echo "soak: logs and config kept in $work" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'rc=130; exit' INT TERM

"$ROOT/scripts/backends.sh" start-all "$base/srv" 2> "$base/backends.log" || {
    cat "$base/backends.log" >&2
    exit
}
# shellcheck source=/dev/null
. "$base/srv/env.sh"

/usr/bin/python3 "$ROOT/bench/soak.py" --bin "$BIN" --dir "$work" &
driver=$!
wait "$driver"
rc=$?
driver=""
exit "$rc"
