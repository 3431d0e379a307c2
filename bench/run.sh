#!/usr/bin/env bash
# `make bench`: every throughput benchmark, each printing same-run ratios against its peer.
# (`make bench-hitratio` and `make bench-trace` are separate: they take minutes.)
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
for b in get-vs-redis redis-chain sql; do
    [ -x "bench/$b.sh" ] || continue
    echo "=== bench/$b.sh"
    bench/"$b".sh || status=1
    echo
done
exit $status
