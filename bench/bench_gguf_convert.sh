#!/usr/bin/env bash
# GGUF conversion benchmark (issue 15 item 3): `moekit convert --to gguf` vs llama.cpp's own
# llama-quantize, wall time and peak RSS, on the same checkpoint and the same machine.
#
#   bash bench/bench_gguf_convert.sh BUILD_DIR
#
# Model: a synthetic Qwen3-30B-A3B-shaped checkpoint (`moekit synth --preset 30b-a3b`, bf16,
# 8 layers x 128 experts by default: about 9.6 GB), generated once and reused. Set MK_GGB_SRC to
# an existing qwen3_moe HF checkpoint directory to use that instead.
# For each file type T (default "q8_0 q4_0 q4_k_m"):
#   moekit   `moekit convert SRC out.gguf --to gguf --gguf-type T --threads N`: straight from the
#            HF safetensors (the whole of llama.cpp's convert_hf_to_gguf.py + llama-quantize path
#            in one streaming pass)
#   llama    `llama-quantize [--pure] SRC.bf16.gguf out.gguf T N`: from the BF16 GGUF of the same
#            weights (written once beforehand by moekit, byte-identical input for llama.cpp), i.e.
#            only llama.cpp's quantize step; its convert_hf_to_gguf.py step (Python + torch) is
#            not timed here, so llama.cpp's number is a lower bound of its full path
#   (q8_0 / q4_0 run llama-quantize --pure, which is what moekit's pure types equal; q4_k_m is
#   llama-quantize's own mix). Every output pair is compared tensor by tensor (mk_llama cmp):
#   a run whose files differ is reported as such, not timed as equal work.
# Each measurement is one process under GNU time (wall seconds, peak RSS). Repetitions alternate
# moekit and llama.cpp (drift hits both) after one untimed warm-up of each (page cache warm for
# both inputs); medians are printed, every raw line is kept in $DIR/raw.txt. The script prints
# the machine, the date, the versions and every command it times.
#
# Knobs (environment): MK_GGB_DIR (default ${TMPDIR:-/tmp}/moekit-ggb), MK_GGB_LAYERS (8),
# MK_GGB_EXPERTS (128), MK_GGB_PRESET (30b-a3b), MK_GGB_TYPES ("q8_0 q4_0 q4_k_m"), MK_GGB_THREADS
# (all cores), MK_GGB_REPS (3), MK_GGB_SRC (an HF checkpoint instead of the synthetic one),
# MK_GGB_TINY=1: a smoke run on a tiny model (1 repetition) that only checks the script end to end.
# Never time on a busy machine; record results in bench/RESULTS.md.
set -euo pipefail
build=${1:?usage: bench/bench_gguf_convert.sh BUILD_DIR}
build=$(cd "$build" && pwd)
repo=$(cd "$(dirname "$0")/.." && pwd)
BIN=$build/moekit
PEER=${MK_PEERS:-$repo/.peers}/bin
for t in llama-quantize mk_llama; do
    [ -x "$PEER/$t" ] || { echo "bench_gguf_convert: $PEER/$t missing: run scripts/install-deps.d/llama.sh" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "bench_gguf_convert: $BIN not built" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench_gguf_convert: GNU time (/usr/bin/time) is needed for peak RSS" >&2; exit 1; }

if [ "${MK_GGB_TINY:-0}" = 1 ]; then
    PRESET=tiny; LAYERS=${MK_GGB_LAYERS:-2}; EXPERTS=${MK_GGB_EXPERTS:-8}; REPS=${MK_GGB_REPS:-1}
else
    PRESET=${MK_GGB_PRESET:-30b-a3b}; LAYERS=${MK_GGB_LAYERS:-8}; EXPERTS=${MK_GGB_EXPERTS:-128}
    REPS=${MK_GGB_REPS:-3}
fi
TYPES=${MK_GGB_TYPES:-q8_0 q4_0 q4_k_m}
THREADS=${MK_GGB_THREADS:-$(nproc)}
DIR=${MK_GGB_DIR:-${TMPDIR:-/tmp}/moekit-ggb}
mkdir -p "$DIR"
raw=$DIR/raw.txt
: > "$raw"

echo "== bench_gguf_convert: moekit convert --to gguf vs llama-quantize"
echo "date:    $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine: $(uname -srm); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(nproc) cores;" \
     "$(awk '/MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo)"
echo "disk:    $(df -h "$DIR" | awk 'NR == 2 { print $1, $2, "size,", $4, "free" }') ($DIR)"
echo "moekit:  $BIN ($(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?'))"
echo "llama:   $PEER/llama-quantize ($(cat "${MK_PEERS:-$repo/.peers}/.stamp" 2>/dev/null || echo '?'))"
echo "threads: $THREADS   repetitions: $REPS   types: $TYPES"

if [ -n "${MK_GGB_SRC:-}" ]; then
    SRC=$MK_GGB_SRC
else
    SRC=$DIR/$PRESET-L$LAYERS-E$EXPERTS
    if [ ! -f "$SRC/config.json" ]; then
        cmd=("$BIN" synth "$SRC" --arch qwen3_moe --preset "$PRESET" --layers "$LAYERS" --experts "$EXPERTS"
             --format bf16 --quiet)
        echo "generating: ${cmd[*]}"
        "${cmd[@]}"
    fi
fi
echo "source:  $SRC ($(du -sh "$SRC" | cut -f1))"
BF=$DIR/src.bf16.gguf
if [ ! -f "$BF" ] || [ "$SRC/config.json" -nt "$BF" ]; then
    "$BIN" convert "$SRC" "$BF" --to gguf --gguf-type bf16 --quiet --force
fi
echo "llama.cpp input: $BF ($(du -h "$BF" | cut -f1), written by moekit convert --to gguf --gguf-type bf16)"

# timed TAG CMD...: runs CMD under GNU time, appends "TAG wall_s peak_kib" to raw.txt
timed() {
    local tag=$1
    shift
    echo "  run: $*" >> "$raw"
    /usr/bin/time -f "%e %M" -o "$DIR/time.txt" "$@" > "$DIR/cmd.log" 2>&1 ||
        { tail -5 "$DIR/cmd.log" >&2; echo "bench_gguf_convert: failed: $*" >&2; exit 1; }
    echo "$tag $(cat "$DIR/time.txt")" >> "$raw"
}

# median of sorted numbers on stdin
median() { awk '{ v[NR] = $1 } END { print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

for ty in $TYPES; do
    case $ty in
    q8_0) LT=Q8_0; PURE=(--pure) ;;
    q4_0) LT=Q4_0; PURE=(--pure) ;;
    q4_k) LT=Q4_K_M; PURE=(--pure) ;;
    q5_k) LT=Q5_K_M; PURE=(--pure) ;;
    q6_k) LT=Q6_K; PURE=(--pure) ;;
    q4_k_m) LT=Q4_K_M; PURE=() ;;
    q5_k_m) LT=Q5_K_M; PURE=() ;;
    *) echo "bench_gguf_convert: type $ty: expected q8_0 q4_0 q4_k q5_k q6_k q4_k_m q5_k_m" >&2; exit 1 ;;
    esac
    mk=("$BIN" convert "$SRC" "$DIR/mk.$ty.gguf" --to gguf --gguf-type "$ty" --threads "$THREADS" --quiet --force)
    ll=("$PEER/llama-quantize" "${PURE[@]}" "$BF" "$DIR/ll.$ty.gguf" "$LT" "$THREADS")
    echo "-- $ty"
    echo "   moekit: ${mk[*]}"
    echo "   llama:  ${ll[*]}"
    "${mk[@]}" > /dev/null 2>&1                      # warm-up, untimed
    "${ll[@]}" > /dev/null 2>&1
    if "$PEER/mk_llama" cmp "$DIR/mk.$ty.gguf" "$DIR/ll.$ty.gguf" > "$DIR/cmp.txt"; then
        same="byte-identical tensors ($(tail -1 "$DIR/cmp.txt"))"
    else
        same="OUTPUTS DIFFER: $(head -3 "$DIR/cmp.txt" | tr '\n' ';')"
    fi
    for r in $(seq 1 "$REPS"); do
        rm -f "$DIR/mk.$ty.gguf" "$DIR/ll.$ty.gguf"
        timed "moekit $ty" "${mk[@]}"
        timed "llama $ty" "${ll[@]}"
    done
    for who in moekit llama; do
        t=$(grep "^$who $ty " "$raw" | awk '{ print $3 }' | sort -g | median)
        m=$(grep "^$who $ty " "$raw" | awk '{ print $4 }' | sort -g | median)
        printf "   %-7s %-7s median %7.2f s   peak RSS %8.1f MiB   (%d runs)\n" "$who" "$ty" "$t" \
            "$(awk -v k="$m" 'BEGIN { print k / 1024 }')" "$REPS"
    done
    echo "   output size: moekit $(du -h "$DIR/mk.$ty.gguf" | cut -f1), llama $(du -h "$DIR/ll.$ty.gguf" | cut -f1); $same"
    rm -f "$DIR/mk.$ty.gguf" "$DIR/ll.$ty.gguf"
done
echo "raw: $raw"
