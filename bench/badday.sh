#!/usr/bin/env bash
# The bad-day benchmark (make bench-badday; issue 15 point 8, SPEC §12): 200 clients read
# Zipf-distributed uid keys for 60 s through cachemed (a [local, redis] node), nginx and Varnish,
# one after the other, each in front of the same origin (bench/origin.c, 20 ms per load). The
# origin has a bad day on the same schedule for each: it answers 503 for seconds 20-35 and takes
# 500 ms per load for seconds 35-45 (the driver, bench/badday.c, switches it). Every cache keeps
# a 200 fresh for BADDAY_TTL seconds, so keys expire during the run. Prints markdown per phase
# and per server (client errors, latency, requests that reached the origin) and the hot-key
# series, and writes it to bench/RESULTS-badday.md.
#
# Knobs: BADDAY_SECS=60 (the phases scale with it: 1/3, 7/12, 3/4 of the run)
#        BADDAY_SERVERS="cachemed nginx varnish" BADDAY_CLIENTS=200 BADDAY_KEYS=10000
#        BADDAY_THINK_MS=50 (each client's pause between requests, +-50 %) BADDAY_TTL=5
#        BADDAY_CM_NODE (the cachemed node's §12 lines; default below) or BADDAY_CM_CONF (a
#        whole cachemed config; @PORT@, @REDIS_PORT@, @ORIGIN_PORT@ and @TTL@ are filled in)
#        BADDAY_BUILD=build/asan (binaries of another build, not rebuilt) BADDAY_SEED=1 OUT=file (rewritten; what follows a "<!-- notes" line in it is kept)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
SECS=${BADDAY_SECS:-60}
SERVERS=${BADDAY_SERVERS-"cachemed nginx varnish"}
CLIENTS=${BADDAY_CLIENTS:-200}
KEYS=${BADDAY_KEYS:-10000}
THINK_MS=${BADDAY_THINK_MS:-50}
TTL=${BADDAY_TTL:-5}
SEED=${BADDAY_SEED:-1}
OUT=${OUT:-bench/RESULTS-badday.md}
# SPEC §12: serve up to 30 s past the ttl while one background load refreshes; on a failed
# load answer an entry up to 1 h past its ttl; reload a hot key in the background once it is 3 s
# old (before its 5 s ttl); after 5 consecutive failures call the origin at most once per 2 s.
CM_NODE=${BADDAY_CM_NODE-$'grace = 30s\nstale_if_error = 1h\nrefresh_after = 3s\nbreaker = 5, 2s'}
PY=/usr/bin/python3
# BADDAY_BUILD=build/asan: the binaries of another build, used as they are (not rebuilt).
bld=${BADDAY_BUILD:-build}
driver=$bld/bench/badday
origin_bin=$bld/bench/origin
[ -n "${BADDAY_BUILD:-}" ] || make --no-print-directory -s build/cachemed "$driver" "$origin_bin"
phases=$(awk -v s="$SECS" 'BEGIN {printf "%g,%g,%g", s / 3, s * 7 / 12, s * 3 / 4}')

# On tmpfs where there is one: nginx keeps its cache in files, and on this machine's ext4 /tmp
# its hot-key reads took p99 170-290 ms while Varnish (malloc storage) took 3-8 ms.
shm=/dev/shm; [ -d "$shm" ] && [ -w "$shm" ] || shm=/tmp
dir=$(mktemp -d "$shm/cm-badday.XXXXXX")
chmod 755 "$dir" # varnishd's worker user reads its work dir
. bench/procs.sh

# ---- shared: one redis-server and the origin
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --dir "$dir" > "$dir/redis.log" 2>&1 &
pids+=($!)
wait_for 10 redis-cli -p "$rport" ping
"$origin_bin" --port 0 --default-delay-ms 20 --slow-delay-ms 500 > "$dir/origin.out" \
    2> "$dir/origin.err" &
pids+=($!)
wait_for 10 grep -q 'origin listening' "$dir/origin.out"
oport=$(awk '/origin listening/ {print $3}' "$dir/origin.out")

start_server() { # cachemed | nginx | varnish; sets srv_pid, srv_port, proto
    srv_port=$(free_port)
    mkdir -p "$dir/$1"
    chmod 755 "$dir/$1"
    case $1 in
    cachemed)
        proto=resp
        redis-cli -p "$rport" flushall > /dev/null
        if [ -n "${BADDAY_CM_CONF:-}" ]; then
            sed -e "s|@PORT@|$srv_port|; s|@REDIS_PORT@|$rport|; s|@ORIGIN_PORT@|$oport|" \
                -e "s|@TTL@|$TTL|g" "$BADDAY_CM_CONF" > "$dir/cachemed/cachemed.conf"
        else
            cat > "$dir/cachemed/cachemed.conf" <<CONF
[server]
listen = 127.0.0.1:$srv_port
log_level = warning
max_clients = 4096
[storage local]
url = local://tlfu
size = 20000
[storage shared]
url = redis://127.0.0.1:$rport/0
pool_size = 16
timeout = 5s
[node uid]
key = uid:{uid}
version = v1
caches = local:${TTL}s, shared:${TTL}s
serializer = msgpack
loader = http://127.0.0.1:$oport/uid/{uid}
loader_timeout = 10s
$CM_NODE
CONF
        fi
        "$bld/cachemed" -c "$dir/cachemed/cachemed.conf" >> "$dir/cachemed/log" 2>&1 &
        srv_pid=$!
        pids+=("$srv_pid")
        wait_for 10 redis-cli -p "$srv_port" ping
        ;;
    nginx)
        proto=http
        sed -e "s|@PORT@|$srv_port|; s|@ORIGIN_PORT@|$oport|; s|@DIR@|$dir/nginx|g" \
            -e "s|@TTL@|$TTL|g" bench/badday-nginx.conf > "$dir/nginx/nginx.conf"
        nginx -c "$dir/nginx/nginx.conf" -p "$dir/nginx" -e "$dir/nginx/error.log" \
            > "$dir/nginx/out.log" 2>&1 &
        srv_pid=$!
        pids+=("$srv_pid")
        wait_for 20 curl -sf "http://127.0.0.1:$srv_port/uid/4000000000" # not a bench key
        ;;
    varnish)
        proto=http
        sed -e "s|@ORIGIN_PORT@|$oport|; s|@TTL@|$TTL|g" bench/badday.vcl > "$dir/varnish/badday.vcl"
        varnishd -F -n "$dir/varnish/work" -a "127.0.0.1:$srv_port" -f "$dir/varnish/badday.vcl" \
            -s malloc,256m -p thread_pools=2 -p thread_pool_min=100 -p thread_pool_max=2000 \
            -p timeout_idle=600 > "$dir/varnish/out.log" 2>&1 &
        srv_pid=$!
        pids+=("$srv_pid")
        wait_for 20 curl -sf "http://127.0.0.1:$srv_port/uid/4000000000"
        ;;
    *) echo "badday.sh: unknown server $1" >&2; exit 2 ;;
    esac
}

declare -A out
cm_stats=""
failed=0
t0=$(date +%s)
for s in $SERVERS; do
    start_server "$s"
    echo "badday.sh: $s on $srv_port, $SECS s, phases at $phases" >&2
    out[$s]=$("$driver" --proto "$proto" --port "$srv_port" --origin-port "$oport" \
        --clients "$CLIENTS" --secs "$SECS" --phases "$phases" --keys "$KEYS" \
        --think-ms "$THINK_MS" --bucket-s "$TTL" --seed "$SEED") || failed=1
    if [ "$s" = cachemed ]; then
        # The node's counters, name value pairs on one line (§7, §12 where they exist yet).
        cm_stats=$(redis-cli -p "$srv_port" stats uid 2>/dev/null | awk '
            /_count$|^load_queued$/ {k = $0; next} k != "" {printf "%s=%s ", k, $0; k = ""}')
    fi
    stop_pid "$srv_pid"
    forget_pid "$srv_pid"
    printf '%s\n' "${out[$s]}" >&2
done

# What follows a "<!-- notes" line in an earlier OUT (the hand-written reading of a run) is kept.
notes=$(sed -n '/^<!-- notes/,$p' "$OUT" 2>/dev/null || true)
field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<< "$2" | head -1; } # key, line
{
    echo "# The bad-day benchmark: cachemed, nginx and Varnish while the origin fails"
    echo
    echo "Produced by \`make bench-badday\` (bench/badday.sh) on $(date -u '+%Y-%m-%d %H:%M UTC'),"
    echo "$(nproc) cores (load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)), total $(($(date +%s) - t0)) s."
    echo "$CLIENTS clients, each one request at a time with a ${THINK_MS} ms (±50 %) pause, Zipf s=1.01 over"
    echo "$KEYS uid keys (seed $SEED), $SECS s per server. Origin bench/origin.c: 200 after 20 ms;"
    echo "phases (seconds): before 0-$(cut -d, -f1 <<< "$phases"), 503 until $(cut -d, -f2 <<< "$phases") (every load answers 503),"
    echo "slow until $(cut -d, -f3 <<< "$phases") (500 ms per load), after until $SECS. Every cache keeps a 200 fresh for ${TTL} s."
    echo
    echo "| phase | server | requests | errors | of which on keys cached before the outage | p50 ms | p99 ms | max ms | reached origin (503s) | hot-key p99 / max ms |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
    for p in before 503 slow after; do
        for s in $SERVERS; do
            l=$(grep "^phase $p " <<< "${out[$s]}" || true)
            [ -n "$l" ] || continue
            echo "| $p | $s | $(field requests "$l") | $(field errors "$l") | $(field cached_errors "$l") | $(field p50 "$l") | $(field p99 "$l") | $(field max "$l") | $(field origin "$l") ($(field origin_503 "$l")) | $(field hot_p99 "$l") / $(field hot_max "$l") |"
        done
    done
    echo
    echo "Hot keys (the 10 most read), per ${TTL} s window (one ttl: each window holds one expiry of"
    echo "each hot key): p99 / max ms, and (in brackets) reads of 5 ms or more."
    echo
    hdr="| window s |"; sep="|---:|"
    for s in $SERVERS; do hdr+=" $s |"; sep+="---|"; done
    echo "$hdr"; echo "$sep"
    first=${SERVERS%% *}
    grep '^hot ' <<< "${out[$first]}" | while read -r _ tt _; do
        t=${tt#t=}
        row="| $t |"
        for s in $SERVERS; do
            l=$(grep "^hot t=$t " <<< "${out[$s]}" || true)
            row+=" $(field p99 "$l") / $(field max "$l") ($(field slow "$l")) |"
        done
        echo "$row"
    done
    echo
    if [ -n "$cm_stats" ]; then
        echo "cachemed's STATS uid at the end: $(sed 's/ $//; s/ /, /g' <<< "$cm_stats")."
        echo
    fi
    if [ -n "${BADDAY_CM_CONF:-}" ]; then
        echo "- cachemed: config from $BADDAY_CM_CONF."
    elif [[ " $SERVERS " == *" cachemed "* ]]; then
        echo "- cachemed: [local tlfu 20000, redis] node, ttl ${TTL}s in both caches, loader_timeout 10s;"
        echo "  §12: $(tr '\n' ';' <<< "$CM_NODE" | sed 's/;$//; s/;/; /g')."
    fi
    if [[ " $SERVERS " == *" nginx "* ]]; then
        echo "- nginx $(nginx -v 2>&1 | sed 's/.*\///') (bench/badday-nginx.conf): proxy_cache_valid 200 ${TTL}s,"
        echo "  proxy_cache_use_stale error timeout updating http_503, proxy_cache_background_update on,"
        echo "  proxy_cache_lock on, inactive 60m (a 503 is not cached)."
    fi
    if [[ " $SERVERS " == *" varnish "* ]]; then
        echo "- Varnish $(varnishd -V 2>&1 | grep -o 'varnish-[0-9.]*' | head -1 | sed 's/varnish-//') (bench/badday.vcl): ttl ${TTL}s, grace 1h, a background fetch"
        echo "  that gets a 5xx is abandoned (the stale object stays), a foreground 5xx is not cached."
    fi
    echo "- errors: RESP error or nil, HTTP status other than 200, a wrong value, no reply in 10 s."
    echo "  \"Cached before the outage\": keys answered at least once before the 503 phase."
    echo "  Reached origin: the origin's own counter, read by the driver at each phase boundary."
    if [ -n "$notes" ]; then
        echo
        printf '%s\n' "$notes"
    fi
} | tee "$OUT"
echo "bench-badday: $(($(date +%s) - t0)) s, written to $OUT" >&2
exit "$failed"
