#!/usr/bin/env bash
# The README's quick start (`make demo`): cachemed with cachemed.conf.example in front of a demo
# origin, a static HTTP server on 127.0.0.1:8000 serving tests/demo/ (users/1.json, posts/1.json...).
# cachemed runs in the foreground as this very process (exec): Ctrl-C or SIGTERM reach it exactly
# once, as they would reach a daemon started by hand (a second signal makes it exit at once), and
# its exit status is the script's. A watchdog stops the origin when cachemed exits.
#
#   scripts/demo.sh [extra cachemed args]      e.g. scripts/demo.sh    then, in another terminal:
#                                              redis-cli -p 6380 get user:1:info
# CM_DEMO_DIR: serve another directory instead of tests/demo.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly CONF=cachemed.conf.example
readonly ORIGIN_PORT=8000 # the loader URLs in $CONF point here
readonly DEMO_DIR=${CM_DEMO_DIR:-tests/demo}
readonly ORIGIN_LOG=${TMPDIR:-/tmp}/cachemed-demo-origin.$$.log

die() {
    echo "demo: $*" >&2
    exit 1
}

# Builds only what changed; a no-op when ./cachemed is up to date.
build() {
    make --no-print-directory -s -j2 all || die "build failed"
    [ -x ./cachemed ] || die "no ./cachemed after make"
}

port_free() {
    /usr/bin/python3 -c 'import socket, sys; socket.socket().bind(("127.0.0.1", int(sys.argv[1])))' "$1" \
        2> /dev/null
}

origin_answers() {
    /usr/bin/python3 - "$ORIGIN_PORT" << 'PY'
import sys, urllib.request
urllib.request.urlopen(f'http://127.0.0.1:{sys.argv[1]}/', timeout=1).read()
PY
}

# Starts the origin in the background and waits until it answers. Its request log goes to a file,
# not between cachemed's log lines.
start_origin() {
    [ -d "$DEMO_DIR" ] || die "$DEMO_DIR is missing (the demo origin's files)"
    # Checked first: otherwise another server on the port would answer for ours, which then exits.
    port_free "$ORIGIN_PORT" || die "port $ORIGIN_PORT is in use (another demo running?)"
    /usr/bin/python3 -m http.server "$ORIGIN_PORT" --bind 127.0.0.1 --directory "$DEMO_DIR" \
        < /dev/null > "$ORIGIN_LOG" 2>&1 &
    ORIGIN_PID=$!
    local _
    for _ in $(seq 100); do
        kill -0 "$ORIGIN_PID" 2> /dev/null ||
            die "the origin exited (is port $ORIGIN_PORT taken?): $(tail -3 "$ORIGIN_LOG")"
        origin_answers 2> /dev/null && return
        sleep 0.05
    done
    die "the origin does not answer on 127.0.0.1:$ORIGIN_PORT (log: $ORIGIN_LOG)"
}

stop_origin() {
    kill -TERM "$ORIGIN_PID" 2> /dev/null || true
    rm -f "$ORIGIN_LOG"
}

# alive PID: running and not a zombie (whoever started us reaps cachemed; until then it is one).
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2> /dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# Stops the origin once PID (this process, which becomes cachemed) is gone. Detached from our
# stdout/stderr so that a caller reading them sees EOF when cachemed exits, not 0.2 s later.
start_watchdog() {
    (
        trap '' INT # Ctrl-C is for cachemed; the watchdog must outlive it to clean up
        while alive "$1"; do sleep 0.2; done
        stop_origin
    ) < /dev/null > /dev/null 2>&1 &
}

main() {
    build
    ORIGIN_PID=""
    trap 'stop_origin' EXIT # until the exec below: a failure or signal stops the origin
    start_origin
    start_watchdog $$
    local listen
    listen=$(sed -n 's/^listen *= *\([^ ;]*\).*/\1/p' "$CONF" | head -1)
    cat >&2 << EOF
demo: origin http://127.0.0.1:$ORIGIN_PORT/ serves $DEMO_DIR (PID $ORIGIN_PID)
demo: starting ./cachemed -c $CONF on $listen; Ctrl-C stops both. Try, in another terminal:
demo:   redis-cli -p ${listen##*:} get user:1:info     (a miss: loaded from the origin)
demo:   redis-cli -p ${listen##*:} get user:1:info     (a hit)
demo:   redis-cli -p ${listen##*:} get post:1
EOF
    trap - EXIT
    exec ./cachemed -c "$CONF" "$@"
}

main "$@"
