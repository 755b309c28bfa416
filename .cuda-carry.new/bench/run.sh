#!/usr/bin/env bash
# Run the benchmarks of a build and print a table (see bench/RESULTS.md).
#
#   bash bench/run.sh BUILD_DIR
#
# Data goes to $MK_BENCH_DIR (default ${TMPDIR:-/tmp}/moekit-bench) and is
# generated on first use, then reused: delete it to regenerate. Knobs:
# MK_BENCH_READ_MB (checkpoint size for the read benchmark, default 1536),
# MK_BENCH_REPS (repetitions, default 3), MK_BENCH_OPEN_RUNS (default 9).
# Each benchmark prints key=value lines; this script keeps them in
# $MK_BENCH_DIR/last.txt and prints a table per benchmark.
set -eu

build=${1:?usage: bench/run.sh BUILD_DIR}
data=${MK_BENCH_DIR:-${TMPDIR:-/tmp}/moekit-bench}
mkdir -p "$data"
raw=$data/last.txt
: >"$raw"

need() {
    [ -x "$build/$1" ] || { echo "bench/run.sh: $build/$1 not built" >&2; exit 1; }
}

# field NAME LINE: the value of NAME=... in a key=value line
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

echo "# machine: $(lscpu | sed -n 's/^Model name: *//p' | head -n1), $(nproc) cores," \
    "$(free -g | awk '/^Mem:/{print $2}') GiB RAM; data in $data" \
    "($(df -h "$data" | awk 'NR==2{print $1", "$2}'))"
echo "# date: $(date -u +%Y-%m-%dT%H:%MZ), kernel $(uname -r), load average$(uptime | sed -n "s/.*load average//p")"

# --- safetensors open: 40,000 tensors in 8 shards
need bench_st_open
"$build/bench_st_open" "$data/open-40k" "${MK_BENCH_OPEN_RUNS:-9}" | tee -a "$raw" >/dev/null
echo
echo "## st_open: mk_ckpt_open of 40,000 tensors / 8 shards + index"
printf '%-6s %-5s %8s %10s %8s %8s\n' mode cache tensors median_ms min_ms max_ms
grep '^bench=st_open ' "$raw" | while read -r l; do
    printf '%-6s %-5s %8s %10s %8s %8s\n' "$(field mode "$l")" "$(field cache "$l")" \
        "$(field tensors "$l")" "$(field median_ms "$l")" "$(field min_ms "$l")" "$(field max_ms "$l")"
done

# --- safetensors sequential read vs cat
need bench_st_read
"$build/bench_st_read" "$data/read" "${MK_BENCH_READ_MB:-1536}" "${MK_BENCH_REPS:-3}" |
    tee -a "$raw" >/dev/null
setup=$(grep '^bench=st_read_setup ' "$raw")
echo
echo "## st_read: sequential read of $(field tensors "$setup") tensors, $(field file_mb "$setup") MB in" \
    "$(field files "$setup") files (median of $(field reps "$setup");" \
    "drop_caches=$(field drop_caches "$setup"), resident after drop <= $(field resident_after_drop_max "$setup"))"
printf '%-8s %-5s %9s %9s %8s %12s\n' method cache median_s min_s MB/s ratio_vs_cat
grep '^bench=st_read ' "$raw" | while read -r l; do
    printf '%-8s %-5s %9s %9s %8s %12s\n' "$(field method "$l")" "$(field cache "$l")" \
        "$(field median_s "$l")" "$(field min_s "$l")" "$(field mb_per_s "$l")" "$(field ratio_vs_cat "$l")"
done
