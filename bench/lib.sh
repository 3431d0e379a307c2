# Shared by the bench/*.sh scripts (sourced): temp dir, processes stopped on exit, free ports.
# Sets $dir and the pids array; the caller appends every background PID to pids.
dir=$(mktemp -d "/tmp/cm-bench.XXXXXX")
pids=()
bench_cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap bench_cleanup EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_ping PORT...: until each answers PING (5 s at most each).
wait_ping() {
    local p
    for p in "$@"; do
        for _ in $(seq 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.05; done
    done
}
