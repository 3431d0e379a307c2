#!/usr/bin/env bash
# Installs what building and testing cachemed needs (Debian 12), then the node parts: CongoDB for
# the Mongo tests (scripts/mongo) and the node Redis clients (tests/clients).
# Idempotent and quiet: prints the single line "deps: ok" when everything is already there.
# `make deps` and `make test` run it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Every name below has a candidate in Debian 12 (checked with apt-cache policy).
readonly PACKAGES=(
    # toolchain; clang + libclang-rt + llvm for the ASan/UBSan build and libFuzzer
    build-essential pkg-config clang libclang-rt-14-dev llvm
    # libraries the daemon links (Makefile PKGS) and Check for the unit suites
    libevent-dev libhiredis-dev libpq-dev libmariadb-dev libmongoc-dev libbson-dev libsqlite3-dev
    libmsgpack-dev zlib1g-dev libinih-dev check libcurl4-openssl-dev libjansson-dev libhttp-parser-dev
    # the servers scripts/backends.sh starts, and their clients
    redis-server redis-tools mariadb-server mariadb-client postgresql sqlite3 zstd
    # Python test clients (Debian's, for /usr/bin/python3; PyPI is not used)
    python3-redis python3-hiredis python3-msgpack python3-psycopg2 python3-pymysql
    # node for CongoDB (scripts/mongo) and the node clients
    nodejs npm
    # peers and load tools for bench/
    nutcracker varnish nginx wrk
    # process and socket tools the scripts use (ps, killall/fuser, ss)
    procps psmisc iproute2
)

# Prints the packages of PACKAGES that are neither installed nor provided by an installed package.
# "Provided" matters for npm: NodeSource's nodejs (installed on some machines instead of Debian's)
# bundles npm and declares Provides/Conflicts: npm, so installing Debian's npm would fight it.
missing_packages() {
    local installed provided p
    # dpkg-query fails when it has never heard of one of the names: that one is simply missing.
    installed=$({ dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${PACKAGES[@]}" 2> /dev/null ||
        true; } | awk '$2 == "ii" { print $1 }')
    provided=$(dpkg-query -W -f='${db:Status-Abbrev}|${Provides}\n' 2> /dev/null |
        awk -F'|' '$1 ~ /^ii/ { print $2 }' | tr ',' '\n' | awk '{ print $1 }')
    for p in "${PACKAGES[@]}"; do
        grep -qxF "$p" <<< "$installed" && continue
        grep -qxF "$p" <<< "$provided" && continue
        echo "$p"
    done
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo > /dev/null; then
        sudo "$@"
    else
        echo "deps: need root (or sudo) to run: $*" >&2
        exit 1
    fi
}

# Package installs would start the system's redis, mariadb, postgresql, nginx and varnish on their
# default ports; the tests start their own throwaway servers (backends.sh) and want none of those.
# policy-rc.d exit code 101 = "action forbidden" (invoke-rc.d). Left alone when one already exists.
POLICY=/usr/sbin/policy-rc.d
ADDED_POLICY=0
block_service_starts() {
    [ -e "$POLICY" ] && return
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $POLICY && chmod 755 $POLICY"
    ADDED_POLICY=1
}
unblock_service_starts() {
    if [ "$ADDED_POLICY" = 1 ]; then as_root rm -f "$POLICY"; fi
}

install_packages() {
    echo "deps: installing $*" >&2
    block_service_starts
    trap unblock_service_starts EXIT
    # `apt-get update` only now: the package lists are usually cached and fresh enough.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
        > /tmp/cachemed-install-deps.log 2>&1 || {
        tail -20 /tmp/cachemed-install-deps.log >&2
        echo "deps: apt-get install failed (full log: /tmp/cachemed-install-deps.log)" >&2
        exit 1
    }
    unblock_service_starts
    trap - EXIT
}

main() {
    local list missing did=()
    list=$(missing_packages) # not `< <(...)`: a failure in there must stop us, not read as "none"
    read -r -a missing <<< "${list//$'\n'/ }"
    if [ "${#missing[@]}" -gt 0 ]; then
        install_packages "${missing[@]}"
        did+=("apt: ${missing[*]}")
    fi
    # CongoDB is vendored by npm, not apt (scripts/mongo/setup.sh says why).
    if [ ! -d scripts/mongo/node_modules ] || [ ! -d scripts/mongo/vendor/smartmongo ]; then
        scripts/mongo/setup.sh
        did+=("CongoDB (scripts/mongo)")
    fi
    # The node Redis clients tests/integration/test_clients.py drives (their versions are pinned
    # in tests/clients/package.json).
    if [ -f tests/clients/package.json ] && [ ! -d tests/clients/node_modules ]; then
        echo "deps: npm install in tests/clients" >&2
        (cd tests/clients && npm install --ignore-scripts --no-audit --no-fund --loglevel=error \
            > /dev/null)
        did+=("node clients (tests/clients)")
    fi
    if [ "${#did[@]}" -eq 0 ]; then
        echo "deps: ok"
    else
        local d
        for d in "${did[@]}"; do echo "deps: installed $d"; done
    fi
}

main "$@"
