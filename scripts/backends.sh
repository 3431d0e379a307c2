#!/usr/bin/env bash
# Throwaway test servers on loopback, on free ports chosen at run time (two runs on one machine
# never clash): Redis, a 3-master Redis Cluster, PostgreSQL 15, MariaDB 10.11 and CongoDB (the
# MongoDB wire protocol, scripts/mongo). Recipe and timings: /work/shared/LAB.md §2-3.
#
#   backends.sh start-all BASE        start every server in BASE (a fresh mktemp dir; created if
#                                     missing); writes BASE/env.sh with the CM_TEST_* exports
#   backends.sh stop-all BASE         stop every server by its recorded PIDs; removes BASE unless KEEP=1
#   backends.sh start|stop|restart NAME [BASE]
#                                     one server, same port and data dir; waits until it answers.
#                                     NAME: redis redis-cluster postgres mariadb mongo.
#                                     BASE defaults to $CM_TEST_SRV_BASE.
#   backends.sh status [BASE]         one line per server: up/down and its PIDs
#
# Layout of BASE: ports (the chosen ports, sourced by every command), env.sh, NAME.start (the exact
# command that starts NAME), NAME.pids (its recorded PIDs), one data/log dir per server.
# Redis keeps no data across a restart (no RDB/AOF), nor does CongoDB (in memory); PostgreSQL and
# MariaDB do.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE
readonly PGBIN=/usr/lib/postgresql/15/bin
readonly NAMES=(redis redis-cluster postgres mariadb mongo) # stop-all signals them in reverse
readonly READY_SECS=${CM_BACKENDS_READY_SECS:-30}          # per server, on start or restart
readonly KILL_AFTER_SECS=10                                 # SIGKILL what SIGTERM did not stop
# Pristine initdb / mariadb-install-db output, reused across runs (see init_data); "none": off.
readonly CACHE_DIR=${CM_BACKENDS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cachemed-backends}
T0=$((${EPOCHREALTIME/[.,]/} / 1000)) # ms; the notes say how long after this a server answered
BASE="" REDIS_PORT="" CLUSTER_PORTS="" PG_PORT="" MY_PORT="" MONGO_PORT="" # set by use_base/start-all

# The waits below poll every 50 ms. On a busy 2-core machine each fork+exec costs up to 0.3 s, and
# a poll that forks slows down the very servers it waits for, so the polling helpers use bash
# builtins only: $EPOCHREALTIME, read from /proc, /dev/tcp, and nap instead of sleep(1).

die() {
    echo "backends: $*" >&2
    exit 1
}
note() { echo "# $*" >&2; }
now_ms() {
    local us=${EPOCHREALTIME/[.,]/}
    echo $((us / 1000))
}

# nap SECS: sleep(1) without the fork, as a read timeout on a pipe nobody writes to.
NAP_FD=""
nap() {
    [ -n "$NAP_FD" ] || exec {NAP_FD}<> <(:)
    read -rt "$1" -u "$NAP_FD" || true
}

# wait_for SECS CMD...: retries CMD every 50 ms until it succeeds or SECS pass.
wait_for() {
    local end=$((EPOCHSECONDS + $1))
    shift
    until "$@" > /dev/null 2>&1; do
        [ "$EPOCHSECONDS" -lt "$end" ] || return 1
        nap 0.05
    done
}

# tcp_open PORT: something accepts connections on 127.0.0.1:PORT.
tcp_open() {
    local fd
    { exec {fd}<> "/dev/tcp/127.0.0.1/$1"; } 2> /dev/null || return 1
    exec {fd}>&-
}

# redis_cmd PORT WORD...: sends one inline command, prints the reply: the line of a +/-/: reply,
# the body of a bulk one.
redis_cmd() {
    local port=$1 fd line LC_ALL=C
    shift
    { exec {fd}<> "/dev/tcp/127.0.0.1/$port"; } 2> /dev/null || return 1
    printf '%s\r\n' "$*" >&"$fd"
    if read -rt 2 -u "$fd" line; then
        line=${line%$'\r'}
        if [[ $line =~ ^\$([0-9]+)$ ]]; then
            read -rt 2 -N "${BASH_REMATCH[1]}" -u "$fd" line || line=""
        fi
    fi
    exec {fd}>&-
    printf '%s\n' "${line:-}"
}

is_name() {
    local n
    for n in "${NAMES[@]}"; do [ "$n" = "$1" ] && return 0; done
    return 1
}

# use_base DIR: sets BASE (absolute) and loads the ports chosen by start-all.
use_base() {
    [ -n "${1:-}" ] || die "no BASE: pass it or export CM_TEST_SRV_BASE"
    [ -f "$1/ports" ] || die "$1 holds no servers started by backends.sh (no $1/ports)"
    BASE=$(cd "$1" && pwd)
    # shellcheck source=/dev/null
    . "$BASE/ports"
}

# ---------------------------------------------------------------------------------------------
# Ports

# Prints N distinct free loopback ports. The first NC of them also have port+10000 free, the
# Redis Cluster bus port. All lie below the kernel's ephemeral range, so outgoing connections
# cannot take them between this check and the server's bind; random, so parallel runs differ.
pick_ports() {
    /usr/bin/python3 - "$1" "$2" << 'PY'
import random, socket, sys
n, nc = int(sys.argv[1]), int(sys.argv[2])
low = int(open('/proc/sys/net/ipv4/ip_local_port_range').read().split()[0])

def free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(('127.0.0.1', port))  # no SO_REUSEADDR: TIME_WAIT counts as taken
        return True
    except OSError:
        return False
    finally:
        s.close()

taken, out = set(), []
while len(out) < n:
    cluster = len(out) < nc
    p = random.randrange(15000, low - 10000 if cluster else low)
    want = [p, p + 10000] if cluster else [p]
    if any(q in taken for q in want) or not all(free(q) for q in want):
        continue
    taken.update(want)
    out.append(p)
print(' '.join(map(str, out)))
PY
}

# ---------------------------------------------------------------------------------------------
# PIDs: each server's own pidfile is copied into BASE/NAME.pids once it answers, because Redis and
# PostgreSQL delete theirs on shutdown and stop must still know whom to wait for.

# first_line FILE: prints FILE's first line, nothing when it is missing.
first_line() {
    local line
    if { read -r line < "$1"; } 2> /dev/null; then echo "$line"; fi
}

native_pids() {
    case $1 in
    redis) first_line "$BASE/redis/redis.pid" ;;
    redis-cluster)
        local p
        for p in $CLUSTER_PORTS; do first_line "$BASE/rc/$p/redis.pid"; done
        ;;
    postgres) first_line "$BASE/pg/data/postmaster.pid" ;;
    mariadb) first_line "$BASE/my/launch.pid" ;;
    mongo) first_line "$BASE/mongo/launch.pid" ;;
    esac
}

record_pids() { native_pids "$1" > "$BASE/$1.pids"; }

# alive NAME PID: PID is running (not a zombie) and is still that server's program, so a PID the
# kernel has since reused for something else is never signalled.
alive() {
    local stat cmd args
    [ -n "$2" ] && { read -r stat < "/proc/$2/stat"; } 2> /dev/null || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ] || return 1 # dead, waiting for its parent (maybe a lazy init) to reap it
    { mapfile -d '' -t args < "/proc/$2/cmdline"; } 2> /dev/null || return 1
    cmd="${args[*]}"
    case $1 in
    redis | redis-cluster) [[ $cmd == redis-server* ]] ;;
    postgres) [[ $cmd == *postgres* ]] ;;
    mariadb) [[ $cmd == *mariadbd* ]] ;;
    mongo) [[ $cmd == *congo-server.mjs* ]] ;;
    esac
}

recorded_pids() {
    local pid
    { while read -r pid; do echo "$pid"; done < "$BASE/$1.pids"; } 2> /dev/null || true
}

# signal_server NAME: SIGINT for PostgreSQL (its "fast" shutdown: SIGTERM would wait for every
# client to leave), SIGTERM for the others.
signal_server() {
    local sig=TERM pid
    [ "$1" = postgres ] && sig=INT
    for pid in $(recorded_pids "$1"); do
        if alive "$1" "$pid"; then kill -"$sig" "$pid" 2> /dev/null || true; fi
    done
}

# reap_server NAME DEADLINE: waits for NAME's PIDs to exit; SIGKILL once DEADLINE (epoch s) passes.
reap_server() {
    local pid
    for pid in $(recorded_pids "$1"); do
        while alive "$1" "$pid"; do
            if [ "$EPOCHSECONDS" -ge "$2" ]; then
                note "$1: PID $pid ignored the signal, SIGKILL"
                kill -KILL "$pid" 2> /dev/null || true
                nap 0.1
                break
            fi
            nap 0.05
        done
    done
    : > "$BASE/$1.pids"
}

is_running() {
    local pid n=0
    for pid in $(recorded_pids "$1"); do
        alive "$1" "$pid" || return 1
        n=$((n + 1))
    done
    [ "$n" -gt 0 ]
}

# ---------------------------------------------------------------------------------------------
# Start commands: NAME.start is a bash script holding the exact command lines, with every value
# baked in, so start/restart replay what start-all did. Servers get their stdio from/to files
# (a server holding a caller's pipe would hang a `$(...)` in the caller until it exits) and run
# in their own session via setsid, out of reach of a Ctrl-C on the caller's terminal.

start_file_begin() {
    printf '#!/usr/bin/env bash\n# Written by backends.sh start-all: starts %s.\nset -e\n' "$1" \
        > "$BASE/$1.start"
    chmod +x "$BASE/$1.start"
}

# start_line NAME LOG CMD...: the command daemonizes itself (redis --daemonize, pg_ctl).
start_line() {
    local name=$1 log=$2
    shift 2
    printf 'setsid %s < /dev/null >> %q 2>&1\n' "$(printf '%q ' "$@")" "$log" >> "$BASE/$name.start"
}

# start_bg_line NAME LOG PIDFILE CMD...: runs CMD in the background and saves its PID in PIDFILE
# (setsid execs CMD in place, as the background child is no process-group leader, so $! is CMD's
# PID; the subshell exits at once, so the server is reaped by init, not left a zombie here).
start_bg_line() {
    local name=$1 log=$2 pidfile=$3
    shift 3
    printf '( setsid %s < /dev/null >> %q 2>&1 & echo $! > %q )\n' "$(printf '%q ' "$@")" "$log" \
        "$pidfile" >> "$BASE/$name.start"
}

# init_data NAME DEST LOG VERSION CMD...: makes the data dir DEST by running CMD (initdb,
# mariadb-install-db), or by copying a pristine earlier result of CMD saved in CACHE_DIR for the same
# server VERSION and arguments. Why: each takes 4-5 s on a busy 2-core machine (0.5 s idle), which
# alone broke the 10 s budget of start-all; a copy takes 0.4 s. The copy is what CMD writes: both
# data dirs are relocatable, and nothing of BASE is in them until the caller adds its settings.
# Sparse copies: MariaDB's 113 MB (96 MB redo log, 12 MB ibdata) are 6 MB of data; writing the
# zeros out slowed every fsync on the disk meanwhile (the Redis cluster's nodes.conf ones).
init_data() {
    local name=$1 dest=$2 log=$3 version=$4 key tpl tmp
    shift 4
    key=$(printf '%s\n' "$version" "$@" | sed "s|$dest|DATADIR|g" | md5sum | cut -c1-16)
    tpl=$CACHE_DIR/$name-$key
    if [ "$CACHE_DIR" != none ] && [ -d "$tpl" ]; then
        cp -a --sparse=always "$tpl" "$dest" && echo "copied from $tpl" > "$log" && return 0
        rm -rf "$dest"
    fi
    "$@" > "$log" 2>&1 || {
        tail -5 "$log" >&2
        return 1
    }
    [ "$CACHE_DIR" != none ] || return 0
    # Saved under a temporary name, then renamed: a parallel run never copies a half-written one.
    # A failure here only costs the next run the time of CMD.
    if mkdir -p "$CACHE_DIR" && tmp=$(mktemp -d "$CACHE_DIR/.new.XXXXXX") &&
        cp -a --sparse=always "$dest" "$tmp/data"; then
        mv -T "$tmp/data" "$tpl" 2> /dev/null || true # lost the race to a parallel run: fine
    fi
    [ -z "${tmp:-}" ] || rm -rf "$tmp"
}

# ---------------------------------------------------------------------------------------------
# Per server: init_NAME (data dir, NAME.start; once), ready_NAME (answers?), first_NAME (after the
# very first start: databases, users, cluster slots).

init_redis() {
    mkdir -p "$BASE/redis"
    start_file_begin redis
    start_line redis "$BASE/redis/stdout.log" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
        --dir "$BASE/redis" --save '' --appendonly no --daemonize yes \
        --pidfile "$BASE/redis/redis.pid" --logfile "$BASE/redis/redis.log"
}
ready_redis() { [ "$(redis_cmd "$REDIS_PORT" PING)" = +PONG ]; }
first_redis() { :; }

init_redis-cluster() {
    local p
    start_file_begin redis-cluster
    for p in $CLUSTER_PORTS; do
        mkdir -p "$BASE/rc/$p"
        # nodes.conf keeps each node's id and slots, so a restart rejoins the same cluster.
        start_line redis-cluster "$BASE/rc/$p/stdout.log" redis-server --port "$p" \
            --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file "$BASE/rc/$p/nodes.conf" \
            --cluster-node-timeout "$CLUSTER_JOIN_TIMEOUT_MS" --dir "$BASE/rc/$p" --save '' --appendonly no \
            --daemonize yes --pidfile "$BASE/rc/$p/redis.pid" --logfile "$BASE/rc/$p/redis.log"
    done
}
# A master turns its cluster state ok only a node timeout after it last saw itself in a minority,
# which happens while the nodes meet (or rejoin after a restart): with the usual 5 s this cost 4-6 s
# per start on a busy machine. So nodes start with a short timeout, and get the usual one once the
# cluster is ok (a short one would fail nodes that a busy machine merely stalls for a moment).
readonly CLUSTER_JOIN_TIMEOUT_MS=1000 CLUSTER_NODE_TIMEOUT_MS=5000
cluster_settle() {
    local p
    for p in $CLUSTER_PORTS; do
        [ "$(redis_cmd "$p" CONFIG SET cluster-node-timeout "$CLUSTER_NODE_TIMEOUT_MS")" = +OK ] ||
            die "redis-cluster: CONFIG SET cluster-node-timeout failed on $p"
    done
}
after_ready_redis-cluster() {
    if [ -e "$BASE/rc/created" ]; then cluster_settle; fi
}

cluster_ok() { [[ $(redis_cmd "$1" CLUSTER INFO) == *cluster_state:ok* ]]; }
ready_redis-cluster() {
    local p
    for p in $CLUSTER_PORTS; do
        if [ -e "$BASE/rc/created" ]; then
            cluster_ok "$p" || return 1
        else
            [ "$(redis_cmd "$p" PING)" = +PONG ] || return 1
        fi
    done
}
# cluster_cmd PORT ARGS...: one CLUSTER command, which must answer OK (logged in rc/create.log).
cluster_cmd() {
    local port=$1 out
    shift
    out=$(redis_cmd "$port" CLUSTER "$@") || true
    echo "$port cluster $*: $out" >> "$BASE/rc/create.log"
    [ "$out" = +OK ] || {
        echo "redis-cluster: 'cluster $*' on $port answered: $out" >&2
        return 1
    }
}

# What `redis-cli --cluster create --cluster-replicas 0` does, with the same slot ranges, minus its
# one-second sleeps between checks (they cost 2-5 s of start-all on a busy machine).
first_redis-cluster() {
    local ports n i a b first=0 last
    read -r -a ports <<< "$CLUSTER_PORTS"
    n=${#ports[@]}
    for i in "${!ports[@]}"; do
        # redis-cli's split: last = round((i + 1) * 16384 / n - 1), so 0-5460 5461-10922 10923-16383.
        last=$(((2 * (i + 1) * 16384 - n) / (2 * n)))
        [ "$i" -lt $((n - 1)) ] || last=16383
        # Distinct config epochs, so no node has to win an epoch collision first.
        cluster_cmd "${ports[i]}" set-config-epoch $((i + 1))
        cluster_cmd "${ports[i]}" addslotsrange "$first" "$last"
        first=$((last + 1))
    done
    # Every node meets every other: with meets from one node only, the other two learn of each
    # other by gossip, which took up to a cluster-node-timeout (5 s) more.
    for a in "${ports[@]}"; do
        for b in "${ports[@]}"; do
            [ "$a" = "$b" ] || cluster_cmd "$a" meet 127.0.0.1 "$b"
        done
    done
    : > "$BASE/rc/created"
    # Every node, not just the seed, must see all slots before a test may rely on MOVED replies.
    wait_for "$READY_SECS" ready_redis-cluster
    cluster_settle
}

init_postgres() {
    # initdb and pg_ctl refuse to run as root; BASE must be traversable by postgres (mktemp: 0700).
    mkdir -p "$BASE/pg"
    chown postgres:postgres "$BASE/pg"
    init_data postgres "$BASE/pg/data" "$BASE/pg/initdb.log" "$("$PGBIN/postgres" --version)" \
        runuser -u postgres -- "$PGBIN/initdb" -D "$BASE/pg/data" -U postgres -A trust -E UTF8 \
        --locale=C.UTF-8 -N
    local preload=""
    # pg_stat_statements ships with postgresql-15 (contrib): lets tests count the queries sent.
    [ -f /usr/share/postgresql/15/extension/pg_stat_statements.control ] &&
        preload="shared_preload_libraries = 'pg_stat_statements'"
    # Later lines of postgresql.conf override earlier ones; durability is pointless here.
    cat >> "$BASE/pg/data/postgresql.conf" << EOF

# backends.sh
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$BASE/pg'
fsync = off
synchronous_commit = off
full_page_writes = off
$preload
EOF
    # -W: do not wait; ready_postgres does, the same way for every server.
    start_file_begin postgres
    start_line postgres "$BASE/pg/pg_ctl.log" runuser -u postgres -- "$PGBIN/pg_ctl" \
        -D "$BASE/pg/data" -l "$BASE/pg/pg.log" -W start
}
# Line 8 of postmaster.pid is the postmaster's state: "ready" once it accepts connections.
ready_postgres() {
    local lines=()
    { mapfile -t -n 8 lines < "$BASE/pg/data/postmaster.pid"; } 2> /dev/null || return 1
    [[ ${lines[7]:-} == ready* ]] && tcp_open "$PG_PORT"
}
psql_pg() { psql -X -v ON_ERROR_STOP=1 -qAt -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }
first_postgres() {
    psql_pg -d postgres -c 'CREATE DATABASE cachetest'
    if [ -f /usr/share/postgresql/15/extension/pg_stat_statements.control ]; then
        psql_pg -d cachetest -c 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements'
    fi
}

init_mariadb() {
    mkdir -p "$BASE/my"
    init_data mariadb "$BASE/my/data" "$BASE/my/install.log" "$(mariadbd --version)" \
        mariadb-install-db --no-defaults --user=root --datadir="$BASE/my/data" \
        --auth-root-authentication-method=normal --skip-test-db
    # --user=root: mariadbd aborts when root starts it without. --skip-name-resolve: no DNS on
    # connect (both cache@localhost and cache@127.0.0.1 exist, so either match works).
    start_file_begin mariadb
    start_bg_line mariadb "$BASE/my/stdout.log" "$BASE/my/launch.pid" mariadbd --no-defaults \
        --user=root --datadir="$BASE/my/data" --bind-address=127.0.0.1 --port="$MY_PORT" \
        --socket="$BASE/my/mysqld.sock" --pid-file="$BASE/my/mysqld.pid" \
        --log-error="$BASE/my/error.log" --skip-log-bin --skip-name-resolve \
        --innodb-flush-log-at-trx-commit=0 --innodb-buffer-pool-size=64M
}
mariadb_root() { mariadb --no-defaults -uroot --socket="$BASE/my/mysqld.sock" "$@"; }
# mariadbd listens once it is nearly ready; only then is a client (a fork) worth running.
ready_mariadb() {
    tcp_open "$MY_PORT" &&
        mariadb-admin --no-defaults -uroot --socket="$BASE/my/mysqld.sock" --connect-timeout=2 ping
}
first_mariadb() {
    mariadb_root -e "CREATE DATABASE cachetest;
        CREATE USER 'cache'@'localhost' IDENTIFIED BY 'cachepw';
        CREATE USER 'cache'@'127.0.0.1' IDENTIFIED BY 'cachepw';
        GRANT ALL ON cachetest.* TO 'cache'@'localhost';
        GRANT ALL ON cachetest.* TO 'cache'@'127.0.0.1';"
}

init_mongo() {
    if [ ! -f "$HERE/mongo/vendor/smartmongo/dist_ts/congodb/index.js" ] ||
        [ ! -d "$HERE/mongo/node_modules/bson" ]; then
        "$HERE/mongo/setup.sh"
    fi
    mkdir -p "$BASE/mongo"
    start_file_begin mongo
    start_bg_line mongo "$BASE/mongo/congo.log" "$BASE/mongo/launch.pid" \
        node "$HERE/mongo/congo-server.mjs" "$MONGO_PORT"
}
# CongoDB listens only once it is fully set up, so a TCP connect is a real readiness test.
ready_mongo() { tcp_open "$MONGO_PORT"; }
first_mongo() { :; }

# ---------------------------------------------------------------------------------------------
# Commands

# launch_begin NAME: runs NAME.start (which returns at once; the server starts in the background).
launch_begin() {
    "$BASE/$1.start" || {
        record_pids "$1"
        die "$1: start command failed (see $BASE/$1.start and the logs under $BASE)"
    }
}

# launch_wait NAME: waits until NAME answers, then records its PIDs.
launch_wait() {
    local end=$((EPOCHSECONDS + READY_SECS)) pid
    until "ready_$1" > /dev/null 2>&1; do
        # A server that died during start-up (port taken, bad data dir) fails at once, not in 30 s.
        for pid in $(native_pids "$1"); do
            # Checked twice: a launcher PID can be between exec and the server's own PID for a
            # moment (seen once with CongoDB under load: it was listening, yet reported dead).
            alive "$1" "$pid" || {
                nap 0.3
                "ready_$1" > /dev/null 2>&1 && break 2
                alive "$1" "$(native_pids "$1" | head -1)" ||
                    die "$1: exited during start-up; $(log_tail "$1")"
            }
        done
        [ "$EPOCHSECONDS" -lt "$end" ] || {
            record_pids "$1"
            die "$1: not answering after ${READY_SECS}s; $(log_tail "$1")"
        }
        nap 0.05
    done
    if declare -F "after_ready_$1" > /dev/null; then "after_ready_$1"; fi
    record_pids "$1"
    note "$1 up at $(($(now_ms) - T0)) ms (PIDs $(recorded_pids "$1" | tr '\n' ' '))"
}

# log_tail NAME: the end of NAME's server log(s), for error messages.
log_tail() {
    local f
    case $1 in
    redis) f=("$BASE/redis/redis.log") ;;
    redis-cluster) f=("$BASE"/rc/*/redis.log) ;;
    postgres) f=("$BASE/pg/pg.log") ;;
    mariadb) f=("$BASE/my/error.log" "$BASE/my/stdout.log") ;;
    mongo) f=("$BASE/mongo/congo.log") ;;
    esac
    echo "end of ${f[*]}:"
    tail -n 5 "${f[@]}" 2> /dev/null || true
}

launch() {
    launch_begin "$1"
    launch_wait "$1"
}

stop_one() {
    signal_server "$1"
    reap_server "$1" $((EPOCHSECONDS + KILL_AFTER_SECS))
    note "$1 stopped"
}

start_one() {
    if is_running "$1"; then
        wait_for "$READY_SECS" "ready_$1" || die "$1: running but not answering"
        note "$1 already running"
        return
    fi
    launch "$1"
}

stop_all() {
    local n i deadline
    # Signal everything first, then wait: the servers shut down in parallel.
    for ((i = ${#NAMES[@]} - 1; i >= 0; i--)); do signal_server "${NAMES[i]}"; done
    deadline=$((EPOCHSECONDS + KILL_AFTER_SECS))
    for n in "${NAMES[@]}"; do reap_server "$n" "$deadline"; done
}

# Runs on any exit of start-all before it completes: stop what was started, keep the logs.
start_all_failed() {
    local n
    trap - EXIT
    for n in "${NAMES[@]}"; do record_pids "$n" 2> /dev/null || true; done
    stop_all 2> /dev/null || true
    echo "backends: start-all failed; servers stopped, logs kept in $BASE" >&2
    exit 1
}

start_all() {
    local ports n
    [ -n "${1:-}" ] || die "usage: backends.sh start-all BASE"
    [ ! -e "$1/ports" ] || die "$1 is already in use (stop-all it first)"
    mkdir -p "$1"
    chmod 755 "$1"
    BASE=$(cd "$1" && pwd)
    trap start_all_failed EXIT

    read -r -a ports <<< "$(pick_ports 7 3)"
    CLUSTER_PORTS="${ports[0]} ${ports[1]} ${ports[2]}"
    REDIS_PORT=${ports[3]} PG_PORT=${ports[4]} MY_PORT=${ports[5]} MONGO_PORT=${ports[6]}
    printf 'REDIS_PORT=%s\nCLUSTER_PORTS="%s"\nPG_PORT=%s\nMY_PORT=%s\nMONGO_PORT=%s\n' \
        "$REDIS_PORT" "$CLUSTER_PORTS" "$PG_PORT" "$MY_PORT" "$MONGO_PORT" > "$BASE/ports"

    # Everything starts at once and is waited for afterwards; what must wait for something else
    # waits in the background: PostgreSQL and MariaDB for their data dirs (initdb and
    # mariadb-install-db, or copies), the Redis cluster's slot assignment for its nodes.
    local pg_job my_job
    (init_postgres && "$BASE/postgres.start") > "$BASE/init-postgres.log" 2>&1 &
    pg_job=$!
    (init_mariadb && "$BASE/mariadb.start") > "$BASE/init-mariadb.log" 2>&1 &
    my_job=$!
    for n in redis-cluster redis mongo; do
        "init_$n"
        launch_begin "$n"
    done
    launch_wait redis-cluster
    first_redis-cluster
    note "redis-cluster: slots assigned and agreed at $(($(now_ms) - T0)) ms"
    wait "$pg_job" || die "postgres: init failed: $(cat "$BASE/init-postgres.log")"
    wait "$my_job" || die "mariadb: init failed: $(cat "$BASE/init-mariadb.log")"
    for n in redis postgres mariadb mongo; do
        launch_wait "$n"
        "first_$n"
    done

    local first=${CLUSTER_PORTS%% *}
    cat > "$BASE/env.sh.tmp" << EOF
export CM_TEST_SRV_BASE='$BASE'
export CM_TEST_REDIS_URL='redis://127.0.0.1:$REDIS_PORT/0'
export CM_TEST_REDIS_PORT=$REDIS_PORT
export CM_TEST_REDIS_CLUSTER_SEED='127.0.0.1:$first'
export CM_TEST_REDIS_CLUSTER_PORTS='$CLUSTER_PORTS'
export CM_TEST_PG_URL='postgresql://postgres@127.0.0.1:$PG_PORT/cachetest'
export CM_TEST_PG_PORT=$PG_PORT
export CM_TEST_MYSQL_URL='mysql://cache:cachepw@127.0.0.1:$MY_PORT/cachetest'
export CM_TEST_MYSQL_PORT=$MY_PORT
export CM_TEST_MONGO_URL='mongodb://127.0.0.1:$MONGO_PORT/?serverSelectionTimeoutMS=3000'
export CM_TEST_MONGO_PORT=$MONGO_PORT
EOF
    mv "$BASE/env.sh.tmp" "$BASE/env.sh"
    trap - EXIT
    note "all servers up in $(($(now_ms) - T0)) ms; . $BASE/env.sh"
}

status() {
    local n
    for n in "${NAMES[@]}"; do
        if is_running "$n" && "ready_$n" > /dev/null 2>&1; then
            echo "$n up $(recorded_pids "$n" | tr '\n' ' ')"
        else
            echo "$n down"
        fi
    done
}

main() {
    local cmd=${1:-}
    case $cmd in
    start-all) start_all "${2:-}" ;;
    stop-all)
        use_base "${2:-${CM_TEST_SRV_BASE:-}}"
        stop_all
        [ "${KEEP:-0}" = 1 ] || rm -rf "$BASE"
        ;;
    start | stop | restart)
        is_name "${2:-}" || die "usage: backends.sh $cmd NAME [BASE]; NAME: ${NAMES[*]}"
        use_base "${3:-${CM_TEST_SRV_BASE:-}}"
        case $cmd in
        start) start_one "$2" ;;
        stop) stop_one "$2" ;;
        restart)
            stop_one "$2"
            launch "$2"
            ;;
        esac
        ;;
    status)
        use_base "${2:-${CM_TEST_SRV_BASE:-}}"
        status
        ;;
    *) die "usage: backends.sh start-all BASE | stop-all BASE | start|stop|restart NAME [BASE] | status [BASE]" ;;
    esac
}

main "$@"
