#!/usr/bin/env bash
# Bytes per key (make bench-mem, issue 17.2): KEYS keys (default 1,000,000) of VLEN-byte values
# (default 100) SET through the daemon into a local-only node, once with local://lru and once
# with local://tlfu, and the same keys and values into a redis-server, all in one run. Prints
# each server's used_memory and RSS growth per key and the ratio to redis-server's. The daemon
# runs with glibc malloc (as built) and, where installed, with jemalloc and mimalloc preloaded
# (ALLOCS="glibc jemalloc mimalloc" by default): the allocator is part of the per-key cost.
#
# Keys are redis-benchmark's form, key:%012d; the daemon stores them as PREFIX:key:...:VERSION,
# so its keys are 11 bytes longer than Redis's (prefix "cacheme:", version ":v1").
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. bench/lib.sh
KEYS=${KEYS:-1000000}
VLEN=${VLEN:-100}
ALLOCS=${ALLOCS:-glibc jemalloc mimalloc}
bin=${CACHEMED_BIN:-build/cachemed}
make --no-print-directory -s "$bin"

libdir=$(dirname "$(ldd "$bin" | awk '/libc\.so/ {print $3}')")
preload_of() {
    case $1 in
    glibc) echo "" ;;
    jemalloc) ls "$libdir"/libjemalloc.so.2 2>/dev/null || true ;;
    mimalloc) ls "$libdir"/libmimalloc.so.2 2>/dev/null || true ;;
    esac
}

# SET commands for every key, as RESP, for redis-cli --pipe.
gen() {
    /usr/bin/python3 - "$KEYS" "$VLEN" <<'EOF'
import sys
n, vlen = int(sys.argv[1]), int(sys.argv[2])
val = b"x" * vlen
out = sys.stdout.buffer
chunk = []
for i in range(n):
    k = b"key:%012d" % i
    chunk.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, vlen, val))
    if len(chunk) == 10000:
        out.write(b"".join(chunk))
        chunk = []
out.write(b"".join(chunk))
EOF
}
gen > "$dir/sets.resp"

info_field() { redis-cli -p "$1" info "$2" | tr -d '\r' | awk -F: -v f="$3" '$1 == f {print $2}'; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# load PORT PID: prints "used_memory rss" in bytes per key once every SET is answered: the
# whole process's figures (a tlfu storage's sketch, made for its size at start, included), as
# issue 17 compares them.
load() {
    local port=$1 pid=$2 u1 r1
    redis-cli -p "$port" --pipe < "$dir/sets.resp" > "$dir/pipe.out" 2>&1 || true
    grep -q "errors: 0, replies: $KEYS" "$dir/pipe.out" || { tail -3 "$dir/pipe.out" >&2; exit 1; }
    u1=$(info_field "$port" memory used_memory)
    r1=$(rss_kb "$pid")
    awk -v u1="$u1" -v r1="$r1" -v n="$KEYS" 'BEGIN {printf "%.1f %.1f\n", u1 / n, r1 * 1024 / n}'
}

rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    > "$dir/redis.log" 2>&1 &
rpid=$!
pids+=("$rpid")
wait_ping "$rport"
read -r ru rr < <(load "$rport" "$rpid")
rver=$(info_field "$rport" server redis_version)
ralloc=$(info_field "$rport" memory mem_allocator)
kill "$rpid"

echo "| server | allocator | used_memory B/key | RSS B/key | used_memory vs redis | RSS vs redis |"
echo "|---|---|---:|---:|---:|---:|"
printf '| redis-server %s | %s | %.1f | %.1f | 1.00x | 1.00x |\n' "$rver" "$ralloc" "$ru" "$rr"
for policy in lru tlfu; do
    for alloc in $ALLOCS; do
        pre=$(preload_of "$alloc")
        if [ "$alloc" != glibc ] && [ -z "$pre" ]; then
            echo "| cachemed $policy | $alloc (not installed) | - | - | - | - |"
            continue
        fi
        port=$(free_port)
        local_conf "$port" "$policy" "$KEYS" > "$dir/c.conf"
        LD_PRELOAD=$pre "$bin" -c "$dir/c.conf" > "$dir/c.log" 2>&1 &
        cpid=$!
        pids+=("$cpid")
        wait_ping "$port"
        read -r cu cr < <(load "$port" "$cpid")
        entries=$(redis-cli -p "$port" info storages | tr -d '\r' | awk -F: '$1 == "storage_mem_entries" {print $2}')
        [ "$entries" = "$KEYS" ] || { echo "cachemed holds $entries entries, not $KEYS" >&2; exit 1; }
        kill "$cpid"
        wait "$cpid" 2>/dev/null || true
        awk -v p="$policy" -v a="$alloc" -v cu="$cu" -v cr="$cr" -v ru="$ru" -v rr="$rr" \
            'BEGIN {printf "| cachemed %s | %s | %.1f | %.1f | %.2fx | %.2fx |\n", p, a, cu, cr, cu / ru, cr / rr}'
    done
done
echo
echo "$KEYS keys of $VLEN-byte values; INFO used_memory and VmRSS after the load, per key."
