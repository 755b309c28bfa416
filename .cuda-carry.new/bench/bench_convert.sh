#!/usr/bin/env bash
# Convert benchmarks (results go into bench/RESULTS.md by hand, with the
# machine and date printed here):
#   1. passthrough: bytes/s of `convert --to hf` (pure byte copy, fsync per
#      shard, journal hash) and `--to mlx` (stacking by copy) against `cp -r`
#      + sync of the same checkpoint on the same disk, in the same run;
#   2. FP8 -> bf16 dequantization GB/s on one core (bench_convert, page cache);
#   3. (BIG=1) peak RSS converting a >= 20 GB 397B-shaped synthetic slice with
#      --max-memory 1G (INT4 -> MLX: ~45 GB of disk in all; dequantizing it to
#      bf16 would need 4x the input); its files are deleted afterwards.
# usage: bench/bench_convert.sh BUILD_DIR [WORK_DIR]
set -euo pipefail
B=${1:?build dir}
BIN=$B/moekit
W=${2:-$(mktemp -d "${TMPDIR:-/tmp}/mk-bench-conv-XXXXXX")}
mkdir -p "$W"
trap 'rm -rf "$W"' EXIT
echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
echo "disk: $(df -h "$W" | awk 'NR == 2 { print $1, $2 }')"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"

secs() { local t0; t0=$(date +%s%N); "$@" > /dev/null; echo "scale=3; ($(date +%s%N) - $t0) / 1000000000" | bc; }
mbps() { echo "scale=0; $1 / 1000000 / $2" | bc; }

# 1. passthrough vs cp (source warm in the page cache for all three)
"$BIN" synth "$W/pt" --arch qwen3_moe --preset 30b-a3b --layers 4 --experts 32 --vocab 8192 --format bf16 --quiet
bytes=$(du -cb "$W"/pt/*.safetensors | tail -1 | cut -f1)
cat "$W"/pt/*.safetensors > /dev/null
for run in 1 2 3; do
    rm -rf "$W/cp" "$W/hf" "$W/mlx"
    t_cp=$(secs sh -c "cp -r '$W/pt' '$W/cp' && sync -f '$W/cp'")
    t_hf=$(secs "$BIN" convert "$W/pt" "$W/hf" --to hf --quiet)
    t_mlx=$(secs "$BIN" convert "$W/pt" "$W/mlx" --to mlx --quiet)
    echo "passthrough run $run: $bytes bytes; cp+sync $t_cp s ($(mbps "$bytes" "$t_cp") MB/s);" \
         "convert --to hf $t_hf s ($(mbps "$bytes" "$t_hf") MB/s); --to mlx $t_mlx s ($(mbps "$bytes" "$t_mlx") MB/s)"
done
rm -rf "$W/cp" "$W/hf" "$W/mlx" "$W/pt"

# 2. FP8 -> bf16 per core
"$BIN" synth "$W/fp8" --arch qwen3_moe --preset 30b-a3b --layers 2 --experts 32 --vocab 2048 --format fp8 --quiet
echo "fp8 -> bf16 (HF): $("$B/bench_convert" "$W/fp8" hf bf16)"
echo "fp8 -> f32  (HF): $("$B/bench_convert" "$W/fp8" hf f32)"
"$BIN" synth "$W/ct" --arch qwen3_moe --preset 30b-a3b --layers 2 --experts 32 --vocab 2048 --format ct-int4 --quiet
echo "int4 -> bf16 (HF): $("$B/bench_convert" "$W/ct" hf bf16)"
t=$(secs "$BIN" convert "$W/fp8" "$W/fp8.hf" --to hf --quiet)
fb=$(du -cb "$W"/fp8.hf/*.safetensors | tail -1 | cut -f1)
echo "fp8 -> bf16 end to end ($(nproc) threads, with disk): $fb bytes out in $t s ($(mbps "$fb" "$t") MB/s)"
rm -rf "$W/fp8" "$W/fp8.hf" "$W/ct"

# 3. >= 20 GB 397B-shaped slice, --max-memory 1G
if [ "${BIG:-0}" = 1 ]; then
    "$BIN" synth "$W/big" --arch qwen3_5_moe --preset 397b-a17b --layers 5 --format ct-int4 --quiet
    gb=$(du -cb "$W"/big/*.safetensors | tail -1 | cut -f1)
    t0=$(date +%s)
    "$BIN" convert "$W/big" "$W/big.mlx" --to mlx --max-memory 1G --stats --quiet > "$W/stats"
    echo "397B slice (5 layers, INT4 -> MLX repack): $gb bytes in, $(awk '$1=="bytes_out"{print $2}' "$W/stats") out," \
         "$(( $(date +%s) - t0 )) s, peak RSS $(awk '$1=="peak_rss_bytes"{print $2}' "$W/stats") bytes with --max-memory 1G"
    rm -rf "$W/big.mlx"
    t=$(secs sh -c "cp -r '$W/big' '$W/big.cp' && sync -f '$W/big.cp'")
    echo "cp -r + sync of the same $gb bytes: $t s ($(mbps "$gb" "$t") MB/s)"
    rm -rf "$W/big" "$W/big.cp"
fi
