#!/usr/bin/env bash
# Installs CongoDB (the MongoDB wire-protocol server the tests run against) into scripts/mongo.
#
# Why not `npm install @push.rocks/smartmongo`: the latest versions depend on packages the
# registry no longer has (404), and 2.2.0 pins dependency versions the registry lacks too and
# would download a mongod through mongodb-memory-server. So (LAB.md §3): take only the 2.2.0
# tarball into vendor/smartmongo, and install just the runtime modules CongoDB imports, listed
# in package.json, plus the official `mongodb` driver (optional) for interop checks.
# Idempotent: does nothing when vendor/ and node_modules/ are already complete.
set -euo pipefail
cd "$(dirname "$0")"

readonly SMARTMONGO=@push.rocks/smartmongo@2.2.0
readonly TARBALL=push.rocks-smartmongo-2.2.0.tgz
readonly CONGO_INDEX=vendor/smartmongo/dist_ts/congodb/index.js
# The modules congodb.plugins.js imports; if one is missing CongoDB cannot start.
readonly REQUIRED=(bson mingo @push.rocks/smartfs @push.rocks/smartpath @push.rocks/smartpromise
                   @push.rocks/smartrx)

vendor_ok() { [ -f "$CONGO_INDEX" ]; }

modules_ok() {
    local m
    for m in "${REQUIRED[@]}"; do
        [ -f "node_modules/$m/package.json" ] || return 1
    done
    # package.json edited after the last install: install again.
    [ -f node_modules/.cachemed-setup-done ] && [ ! package.json -nt node_modules/.cachemed-setup-done ]
}

fetch_vendor() {
    echo "mongo/setup: fetching $SMARTMONGO" >&2
    [ -f "$TARBALL" ] || npm pack --silent "$SMARTMONGO" > /dev/null
    rm -rf vendor/smartmongo
    mkdir -p vendor/smartmongo
    tar xzf "$TARBALL" -C vendor/smartmongo --strip-components=1
    rm -f "$TARBALL"
}

install_modules() {
    echo "mongo/setup: npm install (CongoDB runtime modules + mongodb driver)" >&2
    # --ignore-scripts: nothing here needs an install script; --no-package-lock: the lock
    # would only record what this machine's registry happened to serve.
    npm install --ignore-scripts --no-audit --no-fund --no-package-lock --loglevel=error > /dev/null
    [ -f node_modules/mongodb/package.json ] ||
        echo "mongo/setup: note: the optional mongodb driver did not install" >&2
    touch node_modules/.cachemed-setup-done
}

vendor_ok || fetch_vendor
modules_ok || install_modules
if ! vendor_ok || ! modules_ok; then
    echo "mongo/setup: CongoDB install incomplete" >&2
    exit 1
fi
