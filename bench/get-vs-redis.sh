#!/usr/bin/env bash
# GET throughput of cachemed (warm local keys) against a redis-server holding the same keys,
# both measured in this run with redis-benchmark: -c 50, then -c 50 -P 16. Prints the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-500000}         # requests per run
KEYS=${KEYS:-100000}
RUNS=${RUNS:-5}        # interleaved rounds per mode, medians reported (shared, noisy machines)
POLICY=${POLICY:-lru}
. bench/lib.sh

rport=$(free_port); cport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --dir "$dir" > "$dir/redis.log" 2>&1 &
pids+=($!)
local_conf "$cport" "$POLICY" $((KEYS * 2)) > "$dir/cachemed.conf"
./build/cachemed -c "$dir/cachemed.conf" > "$dir/cachemed.log" 2>&1 &
pids+=($!)
wait_ping $rport $cport
# Same keys and 3-byte values as redis-benchmark's own key:__rand_int__ pattern.
/usr/bin/python3 - "$KEYS" > "$dir/load.resp" <<'PY'
import sys
out = sys.stdout.buffer
for i in range(int(sys.argv[1])):
    k = b"key:%012d" % i
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$3\r\nxxx\r\n" % (len(k), k))
PY
for p in $rport $cport; do redis-cli -p "$p" --pipe < "$dir/load.resp" > /dev/null; done

printf "%-18s %13s %13s %8s   %14s %14s %8s\n" "mode" "redis req/s" "cachemed" "ratio" "redis CPU us" "cachemed" "ratio"
for mode in "P1" "P16"; do
    extra=(); [ "$mode" = P16 ] && extra=(-P 16)
    PORTS=("$rport" "$cport") PIDS=("${pids[0]}" "${pids[1]}")
    { read -r r ru; read -r c cu; } < <(interleaved "${extra[@]}")
    printf "%-18s %13.0f %13.0f %7.2fx   %14.2f %14.2f %7.2fx\n" "GET -c 50 $mode" "$r" "$c" \
        "$(awk -v a="$c" -v b="$r" 'BEGIN{print a/b}')" "$ru" "$cu" "$(awk -v a="$ru" -v b="$cu" 'BEGIN{print a/b}')"
done
echo "(throughput ratio = cachemed/redis, higher is better; CPU ratio = redis CPU per request /"
echo " cachemed CPU per request, higher is better: the same-run figure least affected by a busy machine)"
hits=$(redis-cli -p "$cport" stats key | awk 'NR==5')
echo "(cachemed local hits: $hits; keys: $KEYS, requests per run: $N, medians of $RUNS interleaved rounds)"
