#!/usr/bin/env bash
# GET throughput and latency of cachemed with each SQL storage (SQLite, PostgreSQL, MariaDB) as
# the ONLY cache, and the databases' own counters for what one MGET and one miss cost.
#
#   bench/sql.sh                 standalone: starts throwaway servers (scripts/backends.sh
#                                start-all in a mktemp dir) and stops them by PID at the end;
#                                with CM_TEST_PG_URL / CM_TEST_MYSQL_URL exported, uses those.
#   N=50000 KEYS=10000 RUNS=3 MGET_K=100 POOLS="8 50" RESULTS=bench/RESULTS-sql.md bench/sql.sh
#
# Method: one cachemed per database, node key:{id} with caches = db:1h, serializer raw. KEYS keys
# (redis-benchmark's key:%012d names, 3-byte values) are preloaded THROUGH the daemon with SET
# (write-through into the table); then `redis-benchmark -c 50 -t get -n N -r KEYS --csv`, best of
# RUNS by requests/s, with that run's p50/p99, for each pool_size in POOLS. Every GET is a storage read (no local cache); the
# script checks that they were all hits. Counters: pg_stat_statements calls and pg_stat_database
# xact_commit (PostgreSQL), Com_select / Com_insert (MariaDB), read around one MGET of MGET_K stored
# keys and around one GET that misses and loads from tests/origin.py. Writes the table to RESULTS.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-50000}
KEYS=${KEYS:-10000}
RUNS=${RUNS:-3}
MGET_K=${MGET_K:-100}
POOLS=${POOLS:-8 50}            # pool_size values measured for pg/mysql (SQLite: its default, 8)
RESULTS=${RESULTS:-bench/RESULTS-sql.md}
BIN=${CACHEMED_BIN:-./build/cachemed}
PY=/usr/bin/python3
TABLE=bench_$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')

dir=$(mktemp -d /tmp/cm-bench-sql.XXXXXX)
chmod 755 "$dir" # the servers' dirs below must be reachable by the postgres user
pids=()
srv_base=""
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2> /dev/null || true; done
    [ -z "${PG_URL:-}" ] || psql -X -qAt "$PG_URL" -c "DROP TABLE IF EXISTS $TABLE" > /dev/null 2>&1 || true
    [ -z "${MY_PORT:-}" ] || my -e "DROP TABLE IF EXISTS $TABLE" > /dev/null 2>&1 || true
    [ -z "$srv_base" ] || scripts/backends.sh stop-all "$srv_base" > /dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
[ -x "$BIN" ] || { echo "sql.sh: $BIN not built (make build/cachemed)" >&2; exit 1; }

if [ -z "${CM_TEST_PG_URL:-}" ] || [ -z "${CM_TEST_MYSQL_URL:-}" ]; then
    srv_base=$dir/servers
    echo "# starting throwaway servers in $srv_base" >&2
    scripts/backends.sh start-all "$srv_base" 2> "$dir/backends.log" || {
        cat "$dir/backends.log" "$srv_base"/init-*.log >&2 || true
        exit 1
    }
    # shellcheck disable=SC1091
    . "$srv_base/env.sh"
fi
PG_URL=$CM_TEST_PG_URL
MY_URL=$CM_TEST_MYSQL_URL
read -r MY_HOST MY_PORT MY_USER MY_PW MY_DB <<< "$($PY -c '
import sys
from urllib.parse import urlparse, unquote
u = urlparse(sys.argv[1])
print(u.hostname, u.port or 3306, unquote(u.username), unquote(u.password or ""), u.path[1:])' "$MY_URL")"
my() { mariadb --no-defaults -h "$MY_HOST" -P "$MY_PORT" -u "$MY_USER" -p"$MY_PW" -N -B "$MY_DB" "$@"; }
pgq() { psql -X -qAt "$PG_URL" -c "$1"; }
pga() { PGOPTIONS="-c client_min_messages=warning" psql -X -qAt "${PG_URL%/*}/postgres" -c "$1"; }

pga "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" > /dev/null

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The origin for the miss measurement (any path answers 200 with a small JSON document).
$PY tests/origin.py --port 0 > "$dir/origin.out" 2> /dev/null &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$dir/origin.out" 2> /dev/null && break; sleep 0.05; done
OPORT=$(awk '{print $NF}' "$dir/origin.out")

# KEYS SETs in RESP for redis-cli --pipe, in files of 1000 (a bounded number of writes in flight).
$PY - "$KEYS" "$dir/load" << 'PY'
import sys
n, prefix = int(sys.argv[1]), sys.argv[2]
for part in range(0, n, 1000):
    with open("%s.%06d.resp" % (prefix, part), "wb") as out:
        for i in range(part, min(n, part + 1000)):
            k = b"key:%012d" % i
            out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$3\r\nxxx\r\n" % (len(k), k))
PY

# start_daemon KIND URL POOL -> sets CPORT, CPID
start_daemon() {
    CPORT=$(free_port)
    cat > "$dir/$1.conf" << CONF
[server]
listen = 127.0.0.1:$CPORT
log_level = warning
[storage db]
url = $2
table = $TABLE
create_table = yes
timeout = 2s
pool_size = $3
[node key]
key = key:{id}
version = v1
caches = db:1h
[node ld]
key = ld:{id}
version = v1
caches = db:1h
loader = http://127.0.0.1:$OPORT/items/{id}
CONF
    "$BIN" -c "$dir/$1.conf" > "$dir/$1.log" 2>&1 &
    CPID=$!
    pids+=($CPID)
    # Ready = a SET then GET round trip through the storage works (the pool connects and creates
    # the table in the background; ops before that time out as misses).
    local i
    for i in $(seq 200); do
        if redis-cli -p "$CPORT" set key:ready x > /dev/null 2>&1 &&
            [ "$(redis-cli -p "$CPORT" get key:ready 2> /dev/null)" = x ]; then
            return 0
        fi
        sleep 0.1
    done
    echo "sql.sh: cachemed with $1 did not become ready:" >&2
    tail -20 "$dir/$1.log" >&2
    exit 1
}

stop_daemon() {
    kill "$CPID" 2> /dev/null || true
    wait "$CPID" 2> /dev/null || true
}

rows() {
    case $1 in
    sqlite) sqlite3 "$dir/cache.db" "SELECT count(*) FROM $TABLE WHERE key LIKE 'cacheme:key:0%'" ;;
    postgresql) pgq "SELECT count(*) FROM $TABLE WHERE key LIKE 'cacheme:key:0%'" ;;
    mysql) my -e "SELECT count(*) FROM $TABLE WHERE \`key\` LIKE 'cacheme:key:0%'" ;;
    esac
}

# stat NAME FIELD: one counter of STATS NAME
stat() { redis-cli -p "$CPORT" stats "$1" | awk -v f="$2" 'prev == f {print; exit} {prev = $0}'; }

# best_run: best of RUNS redis-benchmark runs -> "rps p50 p99"
best_run() {
    local best="0 0 0" line r i
    for i in $(seq "$RUNS"); do
        line=$(redis-benchmark -p "$CPORT" -t get -n "$N" -r "$KEYS" -c 50 --csv 2> /dev/null |
            awk -F'"' '$2 == "GET" {print $4, $10, $14}')
        r=${line%% *}
        if awk -v a="$r" -v b="${best%% *}" 'BEGIN{exit !(a > b)}'; then best=$line; fi
    done
    echo "$best"
}

# PostgreSQL counters are read from a session on the `postgres` database, so that reading them
# commits nothing in the daemon's database; pg_stat_statements is installed there for that.
pg_counts() { # -> "selects inserts xact_commit" of the daemon's database (statements on TABLE)
    pga "SELECT (SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s WHERE s.dbid = d.datid
                 AND query ILIKE 'select %' AND query LIKE '%$TABLE%'),
                (SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s WHERE s.dbid = d.datid
                 AND query ILIKE 'insert %' AND query LIKE '%$TABLE%'),
                xact_commit
         FROM pg_stat_database d WHERE datname = '${PG_URL##*/}'" | tr '|' ' '
}
my_com() { my -e "SHOW GLOBAL STATUS LIKE 'Com_$1'" | awk '{print $2}'; }

# counters KIND WHAT CMD...: runs CMD (redis-cli against the daemon) and prints a table row with
# the database's counter deltas.
counters() {
    local kind=$1 what=$2 s0 i0 x0 s1 i1 x1 t s0m i0m
    shift 2
    case $kind in
    postgresql)
        # A backend publishes xact_commit when it goes idle, at most once a second (else after
        # 10 s): start from quiet backends, then wait until the commits match the statements.
        sleep 1.2
        read -r s0 i0 x0 <<< "$(pg_counts)"
        "$@" > /dev/null
        for t in $(seq 60); do
            sleep 0.25
            read -r s1 i1 x1 <<< "$(pg_counts)"
            [ $((s1 - s0 + i1 - i0)) -gt 0 ] && [ $((x1 - x0)) -ge $((s1 - s0 + i1 - i0)) ] && break
        done
        printf '| postgresql | %s | SELECT %d, INSERT ... ON CONFLICT %d (pg_stat_statements calls); xact_commit %d |' \
            "$what" $((s1 - s0)) $((i1 - i0)) $((x1 - x0))
        ;;
    mysql)
        # Reads and upserts are executes of prepared statements: Com_stmt_execute, and MariaDB
        # also counts each in Com_select / Com_insert (a text query would count there only).
        s0m=$(my_com select); i0m=$(my_com insert); e0m=$(my_com stmt_execute); p0m=$(my_com stmt_prepare)
        "$@" > /dev/null
        sleep 0.5 # writes follow the reply
        printf '| mysql | %s | Com_stmt_execute %d (Com_select %d, Com_insert %d); Com_stmt_prepare %d |' "$what" \
            $(($(my_com stmt_execute) - e0m)) $(($(my_com select) - s0m)) $(($(my_com insert) - i0m)) \
            $(($(my_com stmt_prepare) - p0m))
        ;;
    esac
}

table="| storage | pool_size | GET req/s | p50 ms | p99 ms | hits / requests | storage reads |"$'\n'
table+="|---|---:|---:|---:|---:|---:|---:|"$'\n'
ctable="| database | operation | the database's own counters (delta) |"$'\n'
ctable+="|---|---|---|"$'\n'
mget_keys=()
for ((i = 0; i < MGET_K; i++)); do mget_keys+=("$(printf 'key:%012d' $((i * (KEYS / MGET_K))))"); done

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for kind in sqlite postgresql mysql; do
    case $kind in
    sqlite) url=sqlite://$dir/cache.db ;;
    postgresql) url=$PG_URL ;;
    mysql) url=$MY_URL ;;
    esac
    pools=$POOLS
    [ "$kind" != sqlite ] || pools=8
    first=1
    for pool in $pools; do
        [ "$first" = 1 ] || stop_daemon
        start_daemon "$kind" "$url" "$pool"
        if [ "$first" = 1 ]; then
            first=0
            echo "# $kind: preloading $KEYS keys through the daemon (SET)" >&2
            # A write that times out (busy machine) is logged by the daemon and lost, yet SET
            # answered +OK; so preload again (upserts) until every row is there.
            for pass in 1 2 3 4 5; do
                for f in "$dir"/load.*.resp; do redis-cli -p "$CPORT" --pipe < "$f" > /dev/null; done
                for _ in $(seq 50); do [ "$(rows "$kind")" -ge "$KEYS" ] && break; sleep 0.1; done
                [ "$(rows "$kind")" -lt "$KEYS" ] || break
                echo "# $kind: $(rows "$kind") of $KEYS rows after preload pass $pass" >&2
            done
            [ "$(rows "$kind")" -ge "$KEYS" ] || { echo "sql.sh: $kind: only $(rows "$kind") of $KEYS rows" >&2; exit 1; }
        fi
        redis-cli -p "$CPORT" stats reset > /dev/null
        echo "# $kind, pool_size $pool: redis-benchmark -c 50 -t get -n $N -r $KEYS, best of $RUNS" >&2
        read -r rps p50 p99 <<< "$(best_run)"
        req=$(stat key request_count)
        hits=$(stat key remote_hit_count)
        reads=$(redis-cli -p "$CPORT" info storages | tr -d '\r' | grep -o 'reads=[0-9]*' | cut -d= -f2)
        table+="| $kind | $pool | $(printf '%.0f' "$rps") | $p50 | $p99 | $hits / $req | $reads |"$'\n'
        printf '%-10s pool %-3s %8.0f req/s  p50 %s ms  p99 %s ms  (hits %s of %s)\n' "$kind" "$pool" \
            "$rps" "$p50" "$p99" "$hits" "$req"
    done
    if [ "$kind" != sqlite ]; then
        # PostgreSQL backends that published stats less than a second ago hold new ones back for
        # up to 10 s (PGSTAT_IDLE_INTERVAL): let the benchmark's commits all arrive first.
        [ "$kind" != postgresql ] || sleep 11
        ctable+=$(counters "$kind" "MGET of $MGET_K stored keys (one node)" redis-cli -p "$CPORT" mget "${mget_keys[@]}")$'\n'
        ctable+=$(counters "$kind" "GET of one stored key" redis-cli -p "$CPORT" get key:000000000007)$'\n'
        ctable+=$(counters "$kind" "GET that misses (1 load)" redis-cli -p "$CPORT" get "ld:miss-$RANDOM$RANDOM")$'\n'
        [ "$(stat ld load_count)" -ge 1 ] || { echo "sql.sh: $kind: the miss did not load" >&2; exit 1; }
    fi
    stop_daemon
done

rev=$(git rev-parse --short HEAD 2> /dev/null || echo unknown)
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
{
    echo "# SQL storages as the only cache: GET throughput, latency, query counts"
    echo
    echo "Written by \`bench/sql.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $rev, $(nproc) cores"
    echo "($(uname -r)); PostgreSQL $(psql -X -qAt "$PG_URL" -c 'SHOW server_version'), MariaDB"
    echo "$(my -e 'SELECT VERSION()'), SQLite $(sqlite3 --version | cut -d' ' -f1). Everything (servers, cachemed,"
    echo "redis-benchmark) on one machine over loopback; load average $load_start at the start,"
    echo "$load_end at the end (other work shares the machine: compare rows of one run, not runs)."
    echo
    echo "Method: one cachemed per storage with \`caches = db:1h\` (no local cache, serializer raw),"
    echo "$KEYS keys preloaded through the daemon with SET (3-byte values), then"
    echo "\`redis-benchmark -c 50 -t get -n $N -r $KEYS --csv\`, best of $RUNS runs by requests/s"
    echo "(p50/p99 of that run), for each pool_size (connections to the database; 50 is the"
    echo "pg/mysql default). Storage reads < requests: concurrent GETs of one key share a flight."
    echo
    printf '%s' "$table"
    echo
    echo "What one request costs the database, read from its own counters around a single"
    echo "command sent with redis-cli to a running daemon (same config):"
    echo
    printf '%s' "$ctable"
    echo
    echo "xact_commit is pg_stat_database's for the daemon's database (read from another database,"
    echo "so the reads commit nothing there); Com_* are MariaDB's SHOW GLOBAL STATUS. A miss is one read (the"
    echo "SELECT that found nothing) and one write (the upsert of the loaded value); an MGET is one"
    echo "SELECT ... WHERE key = ANY(\$1) (pg) / IN (...) (mysql) for all its keys. MySQL statements are"
    echo "prepared once per connection and batch size (1, 4, 16, 64, 256, 512 keys) and executed with bound"
    echo "parameters: Com_stmt_prepare is 1 the first time a connection uses one."
} > "$dir/results.md"
cp "$dir/results.md" "$RESULTS"
echo
cat "$RESULTS"
