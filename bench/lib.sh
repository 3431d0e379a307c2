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

# CPU seconds (user + system) a process has used so far: less sensitive to a noisy machine than
# throughput, since it does not count time spent waiting for the CPU.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
# best PORT PID [redis-benchmark args]: GET with -c 50 over $KEYS keys, $N requests, $RUNS times;
# prints the best requests/s and the lowest CPU microseconds per request of PID.
best() {  # port pid extra args -> "best requests/s" "CPU microseconds per request (min)"
    local port=$1 pid=$2; shift 2; local b=0 u=999999
    for _ in $(seq "$RUNS"); do
        c0=$(cpu "$pid")
        r=$(redis-benchmark -p "$port" -t get -n "$N" -r "$KEYS" -c 50 "$@" -q 2>/dev/null \
            | tr '\r' '\n' | grep -oE 'GET: [0-9.]+' | tail -1 | awk '{print $2}')
        c1=$(cpu "$pid")
        b=$(awk -v a="$b" -v c="${r:-0}" 'BEGIN{print (c>a)?c:a}')
        u=$(awk -v a="$u" -v d="$(awk -v x="$c0" -v y="$c1" -v n="$N" 'BEGIN{print (y-x)*1e6/n}')" 'BEGIN{print (d<a)?d:a}')
    done
    echo "$b $u"
}
