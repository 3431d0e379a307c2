#!/usr/bin/env bash
# cachemed's CPU per load (issue 16 point 2). A node whose loader is bench/origin.c (no delay)
# gets N GETs of distinct random keys from redis-benchmark (-c 50, -r 1e9: all misses, each one
# load), then N GETs of one key already cached (all hits). CPU per load = (CPU of the miss pass -
# CPU of the hit pass) / loads, so the client-side cost of a request is not counted. Chains:
# local (a local://lru cache) and redis (a redis-server cache: the load's Redis write included).
# Each run starts a fresh cachemed; runs of the binaries and chains are interleaved, RUNS rounds,
# medians printed.
# Knobs: BINS="build/cachemed /other/cachemed" CHAINS="local redis" N=100000 RUNS=3
set -euo pipefail
cd "$(dirname "$0")/.."
BINS=${BINS:-build/cachemed}
CHAINS=${CHAINS:-"local redis"}
N=${N:-100000}
RUNS=${RUNS:-3}
. bench/lib.sh
make --no-print-directory -s build/cachemed build/bench/origin

rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --dir "$dir" > "$dir/redis.log" 2>&1 &
pids+=($!)
build/bench/origin --port 0 --default-delay-ms 0 > "$dir/origin.out" 2> /dev/null &
pids+=($!)
wait_ping "$rport"
for _ in $(seq 100); do grep -q 'origin listening' "$dir/origin.out" && break; sleep 0.05; done
oport=$(awk '/origin listening/ {print $3}' "$dir/origin.out")
loads() { curl -sf "http://127.0.0.1:$oport/__stats" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])'; }

# one_run BIN CHAIN: prints "us_per_load us_per_miss_request"
one_run() {
    local bin=$1 chain=$2 cport caches c0 c1 h1 l0 l1 pid
    cport=$(free_port)
    caches="mem:10m"
    [ "$chain" = redis ] && caches="shared:10m"
    cat > "$dir/cachemed.conf" <<CONF
[server]
listen = 127.0.0.1:$cport
log_level = warning
[storage mem]
url = local://lru
size = $((N * 2))
[storage shared]
url = redis://127.0.0.1:$rport/0
pool_size = 16
[node uid]
key = uid:{uid}
version = v1
caches = $caches
serializer = raw
loader = http://127.0.0.1:$oport/uid/{uid}
loader_timeout = 30s
CONF
    redis-cli -p "$rport" flushall > /dev/null
    "$bin" -c "$dir/cachemed.conf" >> "$dir/cachemed.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    wait_ping "$cport"
    redis-cli -p "$cport" get uid:1 > /dev/null
    l0=$(loads)
    c0=$(cpu "$pid")
    redis-benchmark -p "$cport" -n "$N" -c 50 -r 1000000000 -q GET 'uid:__rand_int__' > /dev/null 2>&1
    c1=$(cpu "$pid")
    l1=$(loads)
    redis-benchmark -p "$cport" -n "$N" -c 50 -q GET uid:1 > /dev/null 2>&1
    h1=$(cpu "$pid")
    kill "$pid"
    wait "$pid" 2> /dev/null || true
    awk -v c0="$c0" -v c1="$c1" -v h1="$h1" -v n="$N" -v l="$((l1 - l0))" \
        'BEGIN {printf "%.1f %.1f\n", ((c1 - c0) - (h1 - c1)) * 1e6 / l, (c1 - c0) * 1e6 / n}'
}

combos=()
for b in $BINS; do for c in $CHAINS; do combos+=("$b|$c"); done; done
declare -A rows
for ((r = 0; r < RUNS; r++)); do
    for ((k = 0; k < ${#combos[@]}; k++)); do
        combo=${combos[$(( (k + r) % ${#combos[@]} ))]}
        rows[$combo]+="$(one_run "${combo%|*}" "${combo#*|}")"$'\n'
    done
done
echo "| binary | chain | CPU us per load (median of $RUNS) | CPU us per missing GET |"
echo "|---|---|---|---|"
for combo in "${combos[@]}"; do
    echo "| ${combo%|*} | ${combo#*|} | $(printf '%s' "${rows[$combo]}" | awk '{print $1}' | median) |" \
         "$(printf '%s' "${rows[$combo]}" | awk '{print $2}' | median) |"
done
