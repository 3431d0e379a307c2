# Shared by the bench/*.sh scripts (sourced): temp dir, processes stopped on exit, free ports.
# Sets $dir and the pids array; the caller appends every background PID to pids.
dir=$(mktemp -d "/tmp/cm-bench.XXXXXX")
pids=()
bench_cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap bench_cleanup EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# local_conf PORT POLICY SIZE: a daemon config (stdout) with one local storage "mem" of that
# policy and size and one node "key" (key = key:{id}) caching in it, the form redis-benchmark's
# key:__rand_int__ keys match.
local_conf() {
    printf '[server]\nlisten = 127.0.0.1:%s\nlog_level = warning\n[storage mem]\nurl = local://%s\n' "$1" "$2"
    printf 'size = %s\n[node key]\nkey = key:{id}\nversion = v1\ncaches = mem\n' "$3"
}
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
# Median of the numbers on stdin, one per line.
median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# interleaved [redis-benchmark args]: GET with -c 50 over $KEYS keys, $N requests, against every
# server of the arrays PORTS and PIDS, $RUNS rounds. Each round runs every server once, in an order
# rotated from round to round, so load that drifts on a shared machine falls on all of them alike
# (running one server's runs, then the next's, let one server take the quiet minutes and another
# the busy ones: 0.87x-1.22x for the same binaries). Prints one line per server, in PORTS order:
# "median requests/s" "median CPU microseconds per request of its PID", and with ALSO_PID set, a
# third field: the median CPU microseconds per request that ALSO_PID (say the Redis behind a
# proxy) used during that server's runs.
interleaved() {
    local n=${#PORTS[@]} r k i rps c0 c1 a0 a1
    local -a rows
    for ((r = 0; r < RUNS; r++)); do
        for ((k = 0; k < n; k++)); do
            i=$(( (k + r) % n ))
            c0=$(cpu "${PIDS[$i]}")
            a0=$( [ -n "${ALSO_PID:-}" ] && cpu "$ALSO_PID" || echo 0)
            rps=$(redis-benchmark -p "${PORTS[$i]}" -t get -n "$N" -r "$KEYS" -c 50 "$@" -q 2>/dev/null \
                | tr '\r' '\n' | grep -oE 'GET: [0-9.]+' | tail -1 | awk '{print $2}')
            c1=$(cpu "${PIDS[$i]}")
            a1=$( [ -n "${ALSO_PID:-}" ] && cpu "$ALSO_PID" || echo 0)
            rows[$i]+="${rps:-0} $(awk -v x="$c0" -v y="$c1" -v n="$N" 'BEGIN{print (y-x)*1e6/n}')"
            rows[$i]+=" $(awk -v x="$a0" -v y="$a1" -v n="$N" 'BEGIN{print (y-x)*1e6/n}')"$'\n'
        done
    done
    for ((i = 0; i < n; i++)); do
        echo "$(printf '%s' "${rows[$i]}" | awk '{print $1}' | median)" \
             "$(printf '%s' "${rows[$i]}" | awk '{print $2}' | median)" \
             ${ALSO_PID:+"$(printf '%s' "${rows[$i]}" | awk '{print $3}' | median)"}
    done
}
