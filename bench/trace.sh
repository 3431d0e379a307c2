#!/usr/bin/env bash
# Cacheme's trace benchmark (make bench-trace): 200,000 Go-Zipf uid keys against cachemed with
# the chains [redis] and [local tlfu 3000, redis], at N = 1,000, 10,000 and 100,000 workers,
# the MGET batch variant at N = 1,000 and 10,000, and Varnish and nginx in front of the same
# origin at N = 1,000 and 10,000. Each run starts cold (fresh cachemed/peer, FLUSHALL, origin
# counters reset). Prints markdown and writes it to bench/RESULTS-trace.md.
# Knobs: NS="1000 10000 100000" BATCH_NS="1000 10000" PEER_NS="1000 10000" PEERS="varnish nginx"
#        (an empty list skips that part) SEED=1 RESP_CONNS=10000 (cap on cachemed connections)
#        HTTP_CONNS=10000 OUT=file
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
NS=${NS-"1000 10000 100000"}
BATCH_NS=${BATCH_NS-"1000 10000"}
PEER_NS=${PEER_NS-"1000 10000"}
PEERS=${PEERS-"varnish nginx"}
SEED=${SEED:-1}
RESP_CONNS=${RESP_CONNS:-10000}
HTTP_CONNS=${HTTP_CONNS:-10000}
OUT=${OUT:-bench/RESULTS-trace.md}
PY=/usr/bin/python3
trace=build/bench/trace
origin_bin=build/bench/origin
make --no-print-directory -s build/cachemed "$trace" "$origin_bin"
ulimit -n "$(ulimit -Hn)"

dir=$(mktemp -d /tmp/cm-trace.XXXXXX)
chmod 755 "$dir" # varnishd's worker user reads its work dir
. bench/procs.sh

# CPU seconds (user + system) used so far by a process and its descendants (nginx workers,
# the Varnish child).
descendants() { local p; echo "$1"; for p in $(pgrep -P "$1"); do descendants "$p"; done; }
cpu_tree() {
    local p f=()
    for p in $(descendants "$1"); do f+=("/proc/$p/stat"); done
    awk -v hz="$(getconf CLK_TCK)" '{s += $14 + $15} END {printf "%.2f\n", s / hz}' "${f[@]}" 2>/dev/null
}
# cpu_of PID...: one line of their CPU seconds so far
cpu_of() { local p; for p in "$@"; do printf '%s ' "$(cpu_tree "$p")"; done; echo; }
# cpu_delta "before" "after": the per-process differences, "a/b/c"
cpu_delta() { awk -v a="$1" -v b="$2" 'BEGIN {n = split(a, x, " "); split(b, y, " ");
    for (i = 1; i <= n; i++) printf "%s%.1f", (i > 1 ? "/" : ""), y[i] - x[i]; print ""}'; }

# ---- shared servers: one redis-server and the origin (bench/origin.c: C, libevent, one loop;
# every load answered after a 100 ms evtimer; the same origin for cachemed, Varnish and nginx)
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --dir "$dir" > "$dir/redis.log" 2>&1 &
pids+=($!)
wait_for 10 redis-cli -p "$rport" ping
"$origin_bin" --port 0 --default-delay-ms 100 > "$dir/origin.out" 2> "$dir/origin.err" &
origin_pid=$!
pids+=("$origin_pid")
redis_pid=${pids[0]}
wait_for 10 grep -q 'origin listening' "$dir/origin.out"
oport=$(awk '/origin listening/ {print $3}' "$dir/origin.out")

origin_total() { curl -sf "http://127.0.0.1:$oport/__stats" | $PY -c 'import json,sys; print(json.load(sys.stdin)["total"])'; }
redis_reads() { # GET and MGET calls since the last CONFIG RESETSTAT: "get mget"
    redis-cli -p "$rport" info commandstats | tr -d '\r' | awk -F'[:=,]' '
        $1 == "cmdstat_get" {g = $3} $1 == "cmdstat_mget" {m = $3} END {print g + 0, m + 0}'
}
cold_start() { # empty redis, zeroed counters
    redis-cli -p "$rport" flushall > /dev/null
    redis-cli -p "$rport" config resetstat > /dev/null
    curl -sf "http://127.0.0.1:$oport/__reset" > /dev/null
}
field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<< "$2" | head -1; } # key, text
# Mean latency of the hits and of the loads (trace's class lines), "hit/load" in ms.
classes() {
    local h l
    h=$(sed -n 's/^class_hit .*mean_ms=\([^ ]*\).*/\1/p' <<< "$1")
    l=$(sed -n 's/^class_load .*mean_ms=\([^ ]*\).*/\1/p' <<< "$1")
    echo "${h:--}/${l:--}"
}

declare -A ideal
ideal_of() { # N, "" | --batch
    local k="$1$2"
    if [ -z "${ideal[$k]:-}" ]; then
        ideal[$k]=$(field ideal_ms "$("$trace" sim --seed "$SEED" --workers "$1" $2)")
    fi
    echo "${ideal[$k]}"
}

start_cachemed() { # chain (redis | local+redis); sets cm_pid, cm_port
    local chain=$1 caches="shared:10m" extra=""
    if [ "$chain" = local+redis ]; then
        caches="local:10m, shared:10m"
        extra=$'[storage local]\nurl = local://tlfu\nsize = 3000'
    fi
    cm_port=$(free_port)
    cat > "$dir/cachemed.conf" <<CONF
[server]
listen = 127.0.0.1:$cm_port
log_level = warning
max_clients = 20000
$extra
[storage shared]
url = redis://127.0.0.1:$rport/0
pool_size = 16
timeout = 30s
[node uid]
key = uid:{uid}
version = v1
caches = $caches
serializer = msgpack
loader = http://127.0.0.1:$oport/uid/{uid}
loader_timeout = 300s
CONF
    ./build/cachemed -c "$dir/cachemed.conf" >> "$dir/cachemed.log" 2>&1 &
    cm_pid=$!
    pids+=("$cm_pid")
    wait_for 10 redis-cli -p "$cm_port" ping
}

rows=()
peer_rows=()
failed=0
run_cachemed() { # N, chain, "" | --batch
    local n=$1 chain=$2 batch=$3 conns out wall bad gets mgets loads id c0 cpu
    conns=$((n < RESP_CONNS ? n : RESP_CONNS))
    cold_start
    start_cachemed "$chain"
    c0=$(cpu_of "$cm_pid" "$redis_pid" "$origin_pid")
    out=$("$trace" resp --seed "$SEED" --port "$cm_port" --workers "$n" --conns "$conns" $batch) ||
        failed=1
    cpu=$(cpu_delta "$c0" "$(cpu_of "$cm_pid" "$redis_pid" "$origin_pid")")/$(field cpu_s "$out")
    echo "# cachemed $chain N=$n $batch: $out cpu(cachemed/redis/origin/driver)=$cpu load=$(cut -d' ' -f1 /proc/loadavg)" >&2
    read -r gets mgets <<< "$(redis_reads)"
    loads=$(origin_total)
    stop_pid "$cm_pid"
    forget_pid "$cm_pid"
    wall=$(field wall_ms "$out")
    bad=$(($(field bad "$out") + $(field errors "$out") + $(field requests "$out") - $(field done "$out")))
    id=$(ideal_of "$n" "$batch")
    rows+=("$n|$chain${batch:+ (MGET x20)}|$conns|$wall|$id|$loads|$gets|$mgets|$bad|$(field p50 "$out")|$(field p99 "$out")|$cpu|$(classes "$out")")
}

start_peer() { # varnish | nginx; sets peer_pid, peer_port
    peer_port=$(free_port)
    rm -rf "$dir/$1"
    mkdir -p "$dir/$1"
    chmod 755 "$dir/$1"
    if [ "$1" = varnish ]; then
        sed "s|@ORIGIN_PORT@|$oport|" bench/varnish.vcl > "$dir/varnish/trace.vcl"
        varnishd -F -n "$dir/varnish/work" -a "127.0.0.1:$peer_port" -f "$dir/varnish/trace.vcl" \
            -s malloc,512m -p thread_pools=2 -p thread_pool_max=10000 -p thread_pool_min=200 \
            -p listen_depth=4096 -p timeout_idle=600 > "$dir/varnish/out.log" 2>&1 &
    else
        sed -e "s|@PORT@|$peer_port|; s|@ORIGIN_PORT@|$oport|; s|@DIR@|$dir/nginx|g" \
            bench/nginx.conf > "$dir/nginx/nginx.conf"
        nginx -c "$dir/nginx/nginx.conf" -p "$dir/nginx" -e "$dir/nginx/error.log" \
            > "$dir/nginx/out.log" 2>&1 &
    fi
    peer_pid=$!
    pids+=("$peer_pid")
    wait_for 20 curl -sf "http://127.0.0.1:$peer_port/uid/4000000000" # not a trace key
}

run_peer() { # peer, N
    local peer=$1 n=$2 conns out wall bad loads c0 cpu
    conns=$((n < HTTP_CONNS ? n : HTTP_CONNS))
    start_peer "$peer"
    cold_start # after the start-up probe, so it is not counted
    c0=$(cpu_of "$peer_pid" "$origin_pid")
    out=$("$trace" http --seed "$SEED" --port "$peer_port" --workers "$n" --conns "$conns") ||
        failed=1
    cpu=$(cpu_delta "$c0" "$(cpu_of "$peer_pid" "$origin_pid")")/$(field cpu_s "$out")
    echo "# $peer N=$n: $out cpu($peer/origin/driver)=$cpu load=$(cut -d' ' -f1 /proc/loadavg)" >&2
    loads=$(origin_total)
    stop_pid "$peer_pid"
    forget_pid "$peer_pid"
    wall=$(field wall_ms "$out")
    bad=$(($(field bad "$out") + $(field errors "$out") + $(field requests "$out") - $(field done "$out")))
    peer_rows+=("$n|$peer|$conns|$wall|$(ideal_of "$n" "")|$loads|$bad|$(field p50 "$out")|$(field p99 "$out")|$cpu|$(classes "$out")")
}

t0=$(date +%s)
keys=$("$trace" keys --seed "$SEED")
bkeys=$("$trace" keys --seed "$SEED" --batch)
for n in $NS; do
    for chain in redis local+redis; do run_cachemed "$n" "$chain" ""; done
done
for n in $BATCH_NS; do
    for chain in redis local+redis; do run_cachemed "$n" "$chain" --batch; done
done
for n in $PEER_NS; do
    for peer in $PEERS; do run_peer "$peer" "$n"; done
done

# Cacheme's published Redis GET counts (README, trace benchmark), by N and chain.
declare -A published=([1000redis]=166454 [1000local+redis]=90681 [10000redis]=123704
    [10000local+redis]=83750 [100000redis]=60990 [100000local+redis]=55762)
unique=$(field unique "$keys")
bunique=$(field unique "$bkeys")
{
    echo "# Trace benchmark: cachemed vs the ideal makespan, Varnish and nginx"
    echo
    echo "Produced by \`make bench-trace\` (bench/trace.sh) on $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores"
    echo "($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)),"
    echo "total $(($(date +%s) - t0)) s. Trace: Go's Zipf (bench/zipf.h) s=1.001, v=10, imax=200,000, seed $SEED,"
    echo "200,000 requests, **$unique unique keys**; batch: 10,000 MGETs of 20 distinct keys from"
    echo "s=1.0001, **$bunique unique keys**. Origin: bench/origin.c (C, libevent, HTTP/1.1 on raw sockets, one loop),"
    echo "100 ms per load (an evtimer), body = uid; the same origin behind cachemed, Varnish and nginx."
    echo "Every reply was checked against its key (\"bad\" = wrong, missing or error replies)."
    echo
    echo "## cachemed"
    echo
    echo "| N | chain | conns | wall s | ideal s | wall/ideal | loader calls | Redis GET | Redis MGET | Cacheme's GETs | bad | p50 ms | p99 ms | hit/load mean ms | CPU s cachemed/redis/origin/driver |"
    echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    for r in "${rows[@]}"; do
        IFS='|' read -r n chain conns wall id loads gets mgets bad p50 p99 cpu cls <<< "$r"
        pub=${published[$n$chain]:-}
        case $chain in *MGET*) want=$bunique; pub="" ;; *) want=$unique ;; esac
        [ "$loads" = "$want" ] && lmark="$loads" || lmark="$loads (≠ $want)"
        awk -v n="$n" -v c="$chain" -v cn="$conns" -v w="$wall" -v i="$id" -v l="$lmark" \
            -v g="$gets" -v m="$mgets" -v p="${pub:--}" -v b="$bad" -v p50="$p50" -v p99="$p99" \
            -v cpu="$cpu" -v cls="$cls" \
            'BEGIN {printf "| %d | %s | %d | %.2f | %.2f | %.2f | %s | %d | %d | %s | %d | %s | %s | %s | %s |\n",
                    n, c, cn, w / 1000, i / 1000, w / i, l, g, m, p, b, p50, p99, cls, cpu}'
    done
    echo
    echo "## Peers: the same trace over HTTP/1.1, same origin"
    echo
    echo "| N | server | conns | wall s | ideal s | wall/ideal | loader calls | bad | p50 ms | p99 ms | hit/load mean ms | CPU s server/origin/driver | cachemed [redis] wall s |"
    echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|"
    for r in "${peer_rows[@]}"; do
        IFS='|' read -r n peer conns wall id loads bad p50 p99 cpu cls <<< "$r"
        cmw=-
        for c in "${rows[@]}"; do
            IFS='|' read -r cn cchain _ cwall _ <<< "$c"
            [ "$cn" = "$n" ] && [ "$cchain" = redis ] && cmw=$(awk -v w="$cwall" 'BEGIN {printf "%.2f", w / 1000}')
        done
        [ "$loads" = "$unique" ] && lmark="$loads" || lmark="$loads (≠ $unique)"
        awk -v n="$n" -v s="$peer" -v cn="$conns" -v w="$wall" -v i="$id" -v l="$lmark" -v b="$bad" \
            -v p50="$p50" -v p99="$p99" -v cm="$cmw" -v cpu="$cpu" -v cls="$cls" \
            'BEGIN {printf "| %d | %s | %d | %.2f | %.2f | %.2f | %s | %d | %s | %s | %s | %s | %s |\n",
                    n, s, cn, w / 1000, i / 1000, w / i, l, b, p50, p99, cls, cpu, cm}'
    done
    echo
    echo "## How it was measured"
    echo
    echo "- Driver: build/bench/trace (bench/trace.c), libevent, one queue of requests, N workers, each"
    echo "  one request at a time. RESP: N workers share min(N, $RESP_CONNS) connections, a connection"
    echo "  carrying k workers keeps k requests pipelined (replies in order, so a hit can wait"
    echo "  behind a miss on its connection). HTTP/1.1 has no pipelining in practice, so N concurrent"
    echo "  requests need N connections: min(N, $HTTP_CONNS) keep-alive connections, one request each."
    echo "  Connections are opened before the clock starts; wall = first request to last reply."
    echo "- Ideal: \`trace sim\`, a discrete-event simulation of a zero-overhead coalescing cache:"
    echo "  workers pull requests in trace order; a loaded key costs 0, a key in flight waits for"
    echo "  its flight, any other key is a 100 ms load (an MGET ends with its last key)."
    echo "- Loader calls: the origin's own counter (/__stats). Redis GET/MGET: INFO commandstats"
    echo "  of the redis-server behind cachemed (CONFIG RESETSTAT and FLUSHALL before each run)."
    echo "- hit/load mean ms: mean latency of the requests whose key the driver had already seen"
    echo "  answered (hits: 0 ms in the ideal cache) and of each key's first request (loads: 100 ms"
    echo "  in the ideal cache); \`trace\` prints both, the waits and each class's share of the wall time."
    echo "- CPU s: user + system seconds used during the run (from /proc: cachemed, redis-server, the"
    echo "  origin, a peer with its child processes; the driver's own getrusage), on $(nproc) cores."
    echo "- cachemed: [storage shared] redis pool_size 16, serializer msgpack, loader_timeout 300s, timeout 30s;"
    echo "  [local] = local://tlfu size 3000. Cacheme's published counts: its README (N = 1k/10k/100k)."
    echo "- Peers: Varnish $(varnishd -V 2>&1 | grep -o 'varnish-[0-9.]*' | head -1) (waiting list; bench/varnish.vcl, ttl 10m,"
    echo "  malloc 512m, 2 pools of up to 10,000 threads) and $(nginx -v 2>&1 | sed 's/.*: //') (bench/nginx.conf:"
    echo "  proxy_cache_lock on, lock timeout/age 300s, proxy_cache_valid 200 10m, 2 workers)."
} | tee "$OUT"
echo "bench-trace: $(($(date +%s) - t0)) s, written to $OUT" >&2
exit "$failed"
