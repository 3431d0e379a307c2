#!/usr/bin/env bash
# GET throughput through cachemed with a redis-only chain, against twemproxy (nutcracker) in
# front of the same redis, and against that redis directly, in one run: redis-benchmark -c 50,
# P1 and P16. Every GET through cachemed is a Redis read (no local cache), so the ratio measures
# the proxy path itself. Also prints the CPU each proxy used per request and what the redis
# behind it used meanwhile: client, proxy and redis share the machine's cores.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-500000}
KEYS=${KEYS:-10000}
RUNS=${RUNS:-5}
POOL=${POOL:-8}
. bench/lib.sh
rport=$(free_port); tport=$(free_port); cport=$(free_port)

redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
    > "$dir/redis.log" 2>&1 &
pids+=($!)
cat > "$dir/nutcracker.yml" <<YML
bench:
  listen: 127.0.0.1:$tport
  hash: fnv1a_64
  distribution: ketama
  redis: true
  server_connections: 1
  servers:
   - 127.0.0.1:$rport:1
YML
nutcracker -c "$dir/nutcracker.yml" -o "$dir/nutcracker.log" > /dev/null 2>&1 &
pids+=($!)
cat > "$dir/cachemed.conf" <<CONF
[server]
listen = 127.0.0.1:$cport
log_level = warning
[storage shared]
url = redis://127.0.0.1:$rport/0
pool_size = $POOL
timeout = 2s
[node key]
key = key:{id}
version = v1
caches = shared
CONF
./build/cachemed -c "$dir/cachemed.conf" > "$dir/cachemed.log" 2>&1 &
pids+=($!)
wait_ping $rport $tport $cport
# The same 3-byte values under the client keys (direct, twemproxy) and under cachemed's storage
# keys (raw serializer: stored as-is).
/usr/bin/python3 - "$KEYS" > "$dir/load.resp" <<'PY'
import sys
out = sys.stdout.buffer
for i in range(int(sys.argv[1])):
    for k in (b"key:%012d" % i, b"cacheme:key:%012d:v1" % i):
        out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$3\r\nxxx\r\n" % (len(k), k))
PY
redis-cli -p "$rport" --pipe < "$dir/load.resp" > /dev/null

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2fx", (b>0)?a/b:0}'; }
printf "%-14s %12s %12s %12s %16s %16s\n" mode redis twemproxy cachemed "cachemed/twemp" "cachemed/redis"
cpu_rows=""
for mode in P1 P16; do
    extra=(); [ "$mode" = P16 ] && extra=(-P 16)
    PORTS=("$rport" "$tport" "$cport") PIDS=("${pids[0]}" "${pids[1]}" "${pids[2]}")
    { read -r r _ rr; read -r t tc tr; read -r c cc cr; } < <(ALSO_PID=${pids[0]} interleaved "${extra[@]}")
    printf "%-14s %12.0f %12.0f %12.0f %16s %16s\n" "GET -c50 $mode" "$r" "$t" "$c" "$(ratio "$c" "$t")" "$(ratio "$c" "$r")"
    cpu_rows+=$(printf "%-14s %12.1f %12s %12s" "GET -c50 $mode" "$rr" \
        "$(printf "%.1f + %.1f" "$tc" "$tr")" "$(printf "%.1f + %.1f" "$cc" "$cr")")$'\n'
done
echo "CPU us per request, medians (proxy + the redis behind it):"
printf "%-14s %12s %12s %12s\n" mode redis twemproxy cachemed
printf "%s" "$cpu_rows"
redis-cli -p "$cport" info storages | grep "^storage_shared:" | tr -d "\r"
echo "(targets: >= 1.2x twemproxy, >= 0.9x redis; keys $KEYS, requests per run $N, medians of $RUNS interleaved rounds, pool_size $POOL)"
