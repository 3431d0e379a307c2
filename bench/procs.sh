# Sourced by bench/trace.sh and bench/badday.sh: the processes a benchmark starts, stopped by PID
# on exit, and small waits. The caller sets $dir (its scratch directory, removed on exit) first
# and appends every background PID to pids.
pids=()
stop_pid() { # pid: TERM, then KILL after 10 s
    local p=$1 i
    kill "$p" 2>/dev/null || return 0
    for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}
cleanup() {
    local p
    for p in "${pids[@]}"; do stop_pid "$p"; done
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
forget_pid() { local p keep=(); for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done; pids=("${keep[@]}"); }
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # seconds, command...
    local t=$(($(date +%s) + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt $t ] || { echo "$(basename "$0"): timeout waiting for: $*" >&2; return 1; }
        sleep 0.05
    done
}
