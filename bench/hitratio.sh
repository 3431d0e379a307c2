#!/usr/bin/env bash
# Hit-ratio table (make bench-hitratio): LRU, W-TinyLFU (the daemon's engine) and Belady's OPT
# on Go's Zipf streams and the ARC P6 trace, with the published figures beside ours. Prints
# markdown and writes it to bench/RESULTS-hitratio.md. TRACE_DIR (default ../shared/traces
# from the repo root) holds P6.lis.zst and P12.lis.zst; P6_SIZES and P12_SIZES override the
# sizes (issue 17.1's targets are at 25k..400k on both).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
TRACE_DIR=${TRACE_DIR:-$root/../shared/traces}
P6_SIZES=${P6_SIZES:-1000,4000,16000,25000,32000,50000,64000,100000,128000,200000,400000}
P12_SIZES=${P12_SIZES:-25000,50000,100000,200000,400000}
bin=build/bench/hitratio
make --no-print-directory -s "$bin"
gorng=()
if command -v go >/dev/null 2>&1 && [ -f "$(go env GOROOT)/src/math/rand/rng.go" ]; then
    gorng=(--go-rng "$(go env GOROOT)/src/math/rand/rng.go")   # Go's exact key sequence
fi
mkdir -p build/traces
for t in P6 P12; do
    if [ ! -s "build/traces/$t.lis" ] || [ "$TRACE_DIR/$t.lis.zst" -nt "build/traces/$t.lis" ]; then
        zstd -dqf "$TRACE_DIR/$t.lis.zst" -o "build/traces/$t.lis"
    fi
done
p6=build/traces/P6.lis
p12=build/traces/P12.lis
out=bench/RESULTS-hitratio.md
t0=$(date +%s)
{
    echo "# Hit ratios: local://lru vs local://tlfu vs OPT"
    echo
    echo "Produced by \`make bench-hitratio\` (bench/hitratio.sh) on $(date -u +%Y-%m-%d). LRU and TLFU are"
    echo "the daemon's own engine (storages/local.c) driven request by request (lookup; store on a"
    echo "miss), hit ratio = hits / all requests, no warm-up excluded (as the published Go benchmarks"
    echo "count). ARC is a reference ARC (Megiddo and Modha) in bench/hitratio.c on the same stream."
    echo "\"bound\" (Zipf only) is the best any online policy can expect: it knows the true key ranking"
    echo "and keeps the most probable keys seen so far (A0). OPT is Belady's clairvoyant policy."
    echo "Zipf keys come from bench/zipf.h, a port of Go's"
    echo "\`rand.NewZipf(r, s, v, imax)\`, seed 1, 1M requests$([ ${#gorng[@]} -eq 0 ] && echo " (Go's rngCooked table not available here: same generator and distribution, not Go's exact sequence)")."
    echo "\"met\" compares TLFU with the best published figure of its row (Zipf) or, on P6 and P12, with max(LRU, ARC) - 0.5 (issue 17.1)."
    echo
    echo "## Zipf s=1.0001, v=10, imax=5e7 (the public Go cache benchmarks)"
    echo
    "$bin" "${gorng[@]}" --header --name "zipf 1.0001" --zipf 1.0001,10,5e7,1000000 \
        --sizes 500,5000,20000 --goal 24.5,39,48 \
        --note "theine 22, ARC 24.5, LRU 12" --note "theine 38, ARC 39, LRU 28" \
        --note "theine 47, ARC 48, LRU 38"
    echo
    echo "## Zipf s=1.001, v=10, imax=5e7 (Cacheme's benchmark)"
    echo
    "$bin" "${gorng[@]}" --header --name "zipf 1.001" --zipf 1.001,10,5e7,1000000 \
        --sizes 1000,10000,20000 --goal 28,40.5,43.5 \
        --note "theine 28, LRU 17" --note "theine 40.5, LRU 33" --note "theine 43.5, LRU 38"
    echo
    echo "## ARC trace P6 (12.7M requests, 774k unique blocks)"
    echo
    "$bin" --header --name P6 --lis "$p6" --sizes "$P6_SIZES"
    echo
    echo "## ARC trace P12 (13.2M requests, 3.15M unique blocks, recency-heavy)"
    echo
    "$bin" --header --name P12 --lis "$p12" --sizes "$P12_SIZES"
    echo
    echo "## Entries weighed by size (max_memory, SPEC §15): Zipf s=1.001, values of 100..4,000 bytes"
    echo
    echo "A size of N bounds the engine to N x (2,050 + 72) bytes; ARC and OPT count entries, not bytes."
    echo
    "$bin" "${gorng[@]}" --header --name "zipf 1.001" --zipf 1.001,10,5e7,1000000 \
        --sizes 1000,10000 --weights 100,4000
    echo
    echo "## Memory per entry beyond key and value (1M entries, 15-byte keys, 8-byte values)"
    echo
    "$bin" --mem 1000000
    echo
    echo "Target: at most 64 bytes. Counted with cm_alloc_used() (malloc_usable_size of every"
    echo "allocation: entry blocks, the slot array and index table, and for tlfu the frequency sketch)."
    echo
    echo "## Notes"
    echo
    cat <<'EOF'
- **Issue 4 point 5 (Zipf s=1.0001 at or above the best published figure) is not met at 5,000
  and 20,000, and cannot be on this stream with this design.** The published ARC figures are not
  from this configuration: the same-stream ARC above gets 24.37 / 38.08 / 44.41, and 48% at
  20,000 is the online bound itself (48.10: the best any policy that does not see the future can
  expect, knowing the true ranking). Theine's benchmark (its benchmarks/main.go: 1M requests of
  `rand.NewZipf(r, 1.0001, 10, 50000000)`, get then set on a miss, hits over all requests) is the
  same configuration; its 47% at 20,000 sits 1.1 points under that bound, which this W-TinyLFU
  structure does not reach even with perfect admission decisions (45.7, below). Where the 47
  comes from was not established (its buffered writes keep a key readable until the policy
  rejects it; not verified). On Zipf TLFU is above the same-stream ARC at every size (on P6 ARC
  is ahead at 4,000, 16,000 and 128,000) and above the published 24.5 at 500.
- Where the remaining gap is, measured with throwaway instrumented builds of the engine (s=1.0001,
  1M requests, sizes 500 / 5,000 / 20,000, Zipf seed 1 | seed 2). Rows starting with "+" add
  to the row above; the others change the start of this round alone.

| variant | seed 1 | seed 2 | kept |
|---|---|---|---|
| start of this round | 23.71 / 38.14 / 45.30 | 23.78 / 38.23 / 45.02 | |
| climber noise filter 5 standard errors (was 3) | 24.02 / 38.14 / 45.30 | 23.93 / 38.23 / 45.02 | yes |
| + victim: least frequent of probation's 4 eldest | 24.05 / 38.28 / 45.39 | 23.97 / 38.26 / 45.33 | yes |
| + sketch at least 8,192 words (64 KB) | 24.31 / 38.28 / 45.39 | 24.23 / 38.26 / 45.33 | yes |
| + a candidate counted once never displaces a resident | **24.56 / 38.39 / 45.41** | **24.51 / 38.36 / 45.34** | yes (now) |
| + reset after 10 x size x 4 counter increments, not key increments (4,096-word floor) | 24.63 / 38.43 / 45.44 | 24.57 / 38.46 / 45.41 | no: P6 at 128,000 76.49 < LRU 76.73 |
| sketch twice as wide (32 counters per entry), on the third row | 24.30 / 38.42 / 45.67 | 24.23 / 38.38 / 45.66 | no: 68.5 bytes per entry > 64 |
| Caffeine's climber, no noise filter | 23.03 / 37.56 / 45.30 | 22.56 / 37.76 / 45.02 | no |
| climber off (window fixed at 1%) | 23.97 / 38.09 / 45.29 | 23.90 / 38.19 / 45.01 | no |
| halving with random rounding of odd counters | 23.75 / 38.04 / 45.12 | 23.47 / 38.12 / 44.99 | no |
| plain count-min update (all 4 counters) | 23.78 / 37.92 / 44.73 | | no |
| admission margin (candidate > victim + 1) | 24.17 / 38.17 / 44.70 | 24.12 / 38.32 / 44.67 | no |
| ties admitted at frequency >= 2 | 23.70 / 38.16 / 45.25 | 23.65 / 38.19 / 45.01 | no |
| doorkeeper Bloom filter; reset counts sketch increments only | 23.81 / 38.31 / 45.45 | 23.87 / 38.44 / 45.38 | no: +2 bytes per entry, less than the kept rows |
| exact counters instead of the sketch, same aging | 23.87 / 37.95 / 44.75 | | (sketch error is not the limit) |
| exact counters, never aged (aging is required) | 24.39 / 39.23 / 45.97 | | (ruled out) |
| perfect admission: true ranks compared, same structure | 25.38 / 39.14 / 45.72 | 25.01 / 39.02 / 45.78 | (bound of the structure) |
| LFU on exact whole-trace counts, no window | 25.64 / 39.35 / 46.04 | | (reference) |
| online bound (table column) | 25.78 / 40.24 / 48.10 | 25.74 / 40.21 / 48.05 | (reference) |

- The structure (1% window, probation victim, 80% protected, aging every 10 x size) is what
  limits 5,000 and 20,000: with perfect admission it gets 39.1 and 45.7. At 20,000 most of the
  loss is warm-up: 1M requests are 200 sketch periods at 500 but 5 at 20,000; at 4M requests TLFU
  gets 47.43 there (ARC 47.07, bound 49.13, OPT 52.70).
- The hill climber ignores hit-ratio changes within 5 standard errors of a sample: the sketch's
  halving recurs once per sample, so samples vary more than binomially, and at 3 the window still
  drifted (to 33 of 500 entries, -0.3 points). Caffeine's unfiltered climber drifts much further.
- Reproduce one row quickly: `build/bench/hitratio --tlfu-only --zipf 1.0001,10,5e7,1000000,2
  --sizes 500,5000,20000` (seed 2; about a second).
- **Issue 17.1 (tlfu >= max(LRU, ARC) - 0.5 at 25k..400k on P6 and P12) is not met** at P12
  400,000, P6 25,000, 200,000 and 400,000 (the P6 and P12 tables above). What was tried
  (2026-12-07, `--tlfu-only`; P12 at 200k / 400k | P6 at 25k / 200k / 400k | Zipf s=1.0001 at
  500 / 5,000 / 20,000 | Zipf s=1.001 at 1,000 / 10,000 / 20,000; targets 47.72 / 59.52 | 18.63 /
  87.21 / 92.54 | 23.87 / 37.58 / 43.91 | 28.27 / 41.20 / 44.10):

| variant | P12 | P6 | Zipf 1.0001 | Zipf 1.001 |
|---|---|---|---|---|
| today: Caffeine's climber, sample 10 x size, step 6.25%, 5-sigma noise filter | 49.62 / 56.93 | 18.20 / 84.52 / 90.11 | 24.56 / 38.39 / 45.41 | 29.03 / 42.32 / 45.59 |
| sample 1 x size | 49.39 / 57.40 | 17.75 / 84.96 / 90.31 | 24.35 / 38.39 / 45.41 | 29.03 / 42.31 / 45.59 |
| sample 2 x size, grow first | 49.70 / 57.37 | 19.15 / 84.66 / 90.26 | 24.44 / 37.37 / 44.74 | 28.22 / 41.82 / 44.94 |
| sample 1 x size, step 12.5%, grow first | 48.97 / 57.49 | 11.99 / 84.80 / 90.81 | 24.09 / 37.72 / 45.18 | 28.21 / 41.48 / 45.37 |
| sample 2 x size, step 12.5%, grow first | 49.28 / 57.61 | 17.83 / 84.66 / 90.26 | 24.36 / 36.12 / 44.74 | 27.33 / 41.48 / 44.94 |
| sample 1 x size, step 25%, grow first | 48.78 / 57.04 | 17.38 / 84.97 / 90.60 | 23.27 / 37.29 / 45.18 | 27.33 / 41.48 / 45.37 |
| ARC-style: ghost of rejected candidates grows the window 1 entry per ghost hit, ghost of main victims shrinks it | 45.02 / 58.42 | 5.55 / 87.32 / 92.21 | 17.16 / 32.29 / 42.96 | 21.80 / 37.61 / 43.22 |
| same, 4 entries per ghost hit | 44.21 / 58.44 | 4.69 / 87.39 / 92.33 | 16.59 / 31.60 / 40.86 | 21.17 / 36.43 / 41.04 |
| same, ghost votes: every 1,000 ghost hits, 6.25% towards a side with twice the other's hits | 45.31 / 58.52 | 6.12 / 87.47 / 92.15 | 22.81 / 34.07 / 42.23 | 27.17 / 38.29 / 42.52 |
| window fixed at 50%, no climber | - / 59.96 | 12.79 / 87.39 / 92.29 | | |
| window fixed at 80%, no climber | - / 58.27 | 6.50 / 86.89 / 92.49 | | |

  The structure can reach P12 at 400,000 and P6 at 200,000 with a window near half the cache,
  while P6 at 25,000 and Zipf want it near 1%: the climber has to find very different windows,
  and at 400,000 entries a 10 x size sample leaves P12 three samples after the cache fills.
  Shorter samples or larger steps follow the traces' own phase changes (P6 at 25,000 falls to 12),
  and the ghost signals grow the window on Zipf, where rejected candidates come back often
  enough to outvote the main's victims. Kept: today's climber. Next to try: a climber that
  compares two shadow windows on sampled keys (Caffeine's MiniSim), which costs memory per
  entry that issue 17.2 asks to save.
- Figures are deterministic for a given build (fixed seeds).
EOF
} | tee "$out"
echo "bench-hitratio: $(( $(date +%s) - t0 )) s, written to $out" >&2
