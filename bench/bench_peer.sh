#!/usr/bin/env bash
# Peer benchmark (issue 12 item 4): moekit vs llama.cpp on the same weights, same machine, same run.
#
#   bash bench/bench_peer.sh BUILD_DIR
#
# Model: a synthetic Qwen3-30B-A3B-shaped checkpoint (`moekit synth --preset 30b-a3b`, 8 layers x
# 128 experts by default), bf16, then quantized two ways from the same bf16 weights:
#   4 bits: moekit MLX affine 4-bit g64 (`moekit quantize --bits 4`)  vs  GGUF Q4_0
#   8 bits: moekit MLX affine 8-bit g64 (`moekit quantize --bits 8`)  vs  GGUF Q8_0
# (both 4.5 resp. 8.5 bits per weight: the same bytes per token; the GGUF files are written by
# `moekit convert --to gguf`, bit-identical to llama-quantize's, tests/cli/gguf_llama.sh).
# Peer: llama.cpp v0.4.0 (node-llama-cpp 3.21.1's prebuilt CPU libraries) through its own
# llama-bench, installed by scripts/install-deps.d/llama.sh into .peers/bin.
#
# Measured, for each repetition, thread count and width, interleaved (moekit and llama.cpp
# alternate, so drift in the machine hits both), after one warm-up of each:
#   prefill  PP tokens (default 512) from an empty context: moekit `run --ids <PP ids>
#            --max-tokens 1 --stats`, llama.cpp `llama-bench -p PP -n 0`
#   decode   TG tokens (default 128) from a 1-token context: moekit `run --ids 1 --max-tokens TG`,
#            llama.cpp `llama-bench -p 0 -n TG` (llama-bench decodes from an empty context)
#   both with the model files locked in memory (moekit --mlock, llama-bench -lm mmap+mlock; set
#   MK_PEER_MLOCK=0 where RLIMIT_MEMLOCK forbids it), the peak RSS of each process (GNU time),
#   and the read-bandwidth bound of the same threads (bench_readbw: a streaming read, not memcpy)
#   with the weight bytes one decode token reads (non-expert weights + k/E of the experts +
#   lm_head, from the GGUF tensor table) -> bound tok/s = bandwidth / bytes per token.
# Prints medians per (bits, threads) and keeps every raw line in $DIR/raw.txt.
#
# Knobs (environment): MK_PEER_DIR (default ${TMPDIR:-/tmp}/moekit-peer; models are generated once
# and reused), MK_PEER_ARCH (qwen3_moe; with a preset of that arch, e.g. qwen3_5_moe 35b-a3b for the
# hybrid shape, deepseek_v3 deepseek-v3 for MLA), MK_PEER_LAYERS (8), MK_PEER_EXPERTS (128), MK_PEER_PRESET (30b-a3b), MK_PEER_REPS (5),
# MK_PEER_THREADS ("1 2"), MK_PEER_BITS ("4 8"), MK_PEER_PP (512), MK_PEER_TG (128), MK_PEER_MLOCK (1),
# MK_PEER_LLAMA_NOREPACK=1: llama.cpp measured through .peers/bin/mk_llama (pp / gen) with its extra
# buffer types off (repacked Q4_0/Q8_0 and AMX), for models llama-bench aborts on (llama.cpp v0.4.0
# cannot schedule deepseek2's MLA ops with those buffers on an AMX CPU: GGML_ASSERT(*cur_backend_id !=
# -1)); it decodes after a 4-token prompt and times the prefill after a warm-up one,
# MK_PEER_ACT_INT8 (on|off: moekit's --act-int8; unset: moekit's default, int8 since 2026-12-04; the
# header line "moekit kernels" says which ran), MK_PEER_TINY=1: a smoke run on a tiny model (preset
# tiny, PP 64, TG 8, 1 repetition) that only checks the script end to end. Never time on a busy machine; record results in bench/RESULTS.md.
set -euo pipefail
build=${1:?usage: bench/bench_peer.sh BUILD_DIR}
build=$(cd "$build" && pwd)
repo=$(cd "$(dirname "$0")/.." && pwd)
BIN=$build/moekit
PEER=${MK_PEERS:-$repo/.peers}/bin
for t in llama-bench mk_llama; do
    [ -x "$PEER/$t" ] || { echo "bench_peer: $PEER/$t missing: run scripts/install-deps.d/llama.sh" >&2; exit 1; }
done
[ -x "$build/bench_readbw" ] || { echo "bench_peer: $build/bench_readbw not built" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench_peer: GNU time (/usr/bin/time) is needed for peak RSS" >&2; exit 1; }

TINY=${MK_PEER_TINY:-0}
if [ "$TINY" = 1 ]; then
    PRESET=tiny; LAYERS=${MK_PEER_LAYERS:-2}; EXPERTS=${MK_PEER_EXPERTS:-8}; REPS=${MK_PEER_REPS:-1}
    ARCH=${MK_PEER_ARCH:-qwen3_moe}
    PP=${MK_PEER_PP:-64}; TG=${MK_PEER_TG:-8}; BWMIB=256
else
    PRESET=${MK_PEER_PRESET:-30b-a3b}; LAYERS=${MK_PEER_LAYERS:-8}; EXPERTS=${MK_PEER_EXPERTS:-128}
    ARCH=${MK_PEER_ARCH:-qwen3_moe}
    REPS=${MK_PEER_REPS:-5}; PP=${MK_PEER_PP:-512}; TG=${MK_PEER_TG:-128}; BWMIB=2048
fi
THREADS=${MK_PEER_THREADS:-1 2}
BITS=${MK_PEER_BITS:-4 8}
MLOCK=${MK_PEER_MLOCK:-1}
DIR=${MK_PEER_DIR:-${TMPDIR:-/tmp}/moekit-peer}/$PRESET-L$LAYERS-E$EXPERTS
mkdir -p "$DIR"
raw=$DIR/raw.txt
: > "$raw"

# ---- models (made once)
src=$DIR/bf16
[ -f "$src/config.json" ] ||
    "$BIN" synth "$src" --arch "$ARCH" --preset "$PRESET" --layers "$LAYERS" --experts "$EXPERTS" --format bf16 --quiet
for b in $BITS; do
    [ -f "$DIR/mlx$b/config.json" ] || "$BIN" quantize "$src" "$DIR/mlx$b" --bits "$b" --group-size 64 --quiet > /dev/null
    gt=$([ "$b" = 4 ] && echo q4_0 || echo q8_0)
    [ -f "$DIR/q$b.gguf" ] || "$BIN" convert "$src" "$DIR/q$b.gguf" --to gguf --gguf-type "$gt" --quiet
done

# bytes one decode token reads, from the GGUF tensor table: experts count k/E, token_embd one row
bytes_per_token() { # GGUF
    local k e
    k=$("$PEER/mk_llama" info "$1" | sed -n 's/^kv [a-z0-9]*\.expert_used_count u32 //p')
    e=$("$PEER/mk_llama" info "$1" | sed -n 's/^kv [a-z0-9]*\.expert_count u32 //p')
    "$PEER/mk_llama" info "$1" | awk -v k="$k" -v e="$e" '
        $1 == "kv" { next }
        { n = split($3, d, ","); el = 1; for (i = 1; i <= n; i++) el *= d[i]
          b = $2 == "q4_0" ? el / 32 * 18 : $2 == "q8_0" ? el / 32 * 34 : $2 == "f32" ? el * 4 : el * 2
          if ($1 ~ /_exps\./) b *= k / e
          if ($1 == "token_embd.weight") b /= d[2]
          s += b }
        END { printf "%.0f", s }'
}

vocab=$(sed -n 's/.*"vocab_size": *\([0-9]*\).*/\1/p' "$src/config.json")
ids_pp=$(seq 1 "$PP" | awk -v v="$vocab" '{ printf "%s%d", (NR > 1 ? "," : ""), ($1 * 7919 + 13) % (v - 20) + 10 }')
lock_m=(); lock_l=(-lm mmap)
[ "$MLOCK" = 1 ] && { lock_m=(--mlock); lock_l=(-lm mmap+mlock); }
[ -n "${MK_PEER_ACT_INT8:-}" ] && lock_m+=(--act-int8 "$MK_PEER_ACT_INT8")

# one measurement: prints "tok/s peak_rss_kib"
mk_pp() { /usr/bin/time -f "rss %M" "$BIN" run "$DIR/mlx$1" --ids "$ids_pp" --max-tokens 1 --threads "$2" --stats \
              "${lock_m[@]}" > "$DIR/out" 2>&1 || { cat "$DIR/out" >&2; return 1; }
          echo "$(sed -n 's/.* prompt [0-9]* tokens in [0-9.]* s (\([0-9.]*\) tok\/s).*/\1/p' "$DIR/out") \
$(sed -n 's/^rss //p' "$DIR/out")"; }
mk_tg() { /usr/bin/time -f "rss %M" "$BIN" run "$DIR/mlx$1" --ids 1 --max-tokens "$TG" --threads "$2" --stats \
              "${lock_m[@]}" > "$DIR/out" 2>&1 || { cat "$DIR/out" >&2; return 1; }
          echo "$(sed -n 's/.* generated [0-9]* tokens in [0-9.]* s (\([0-9.]*\) tok\/s).*/\1/p' "$DIR/out") \
$(sed -n 's/^rss //p' "$DIR/out")"; }
NOREPACK=${MK_PEER_LLAMA_NOREPACK:-0}
ll_run() { # bits threads p n
    if [ "$NOREPACK" = 1 ]; then # through mk_llama, the extra buffer types off (see the header)
        local what=(pp "$3") lk=()
        [ "$3" = 0 ] && what=(gen "$4")
        [ "$MLOCK" = 1 ] && lk=(mlock)
        /usr/bin/time -f "rss %M" "$PEER/mk_llama" "${what[0]}" "$DIR/q$1.gguf" "${what[1]}" "$2" norepack \
            "${lk[@]}" > "$DIR/out" 2> "$DIR/err" || { cat "$DIR/err" >&2; return 1; }
        echo "$(awk '/^(prefill|decode) /{ print $2 }' "$DIR/out") $(sed -n 's/^rss //p' "$DIR/err")"
        return
    fi
    /usr/bin/time -f "rss %M" "$PEER/llama-bench" -m "$DIR/q$1.gguf" -p "$3" -n "$4" -t "$2" -r 1 -o csv \
        "${lock_l[@]}" > "$DIR/out" 2> "$DIR/err" || { cat "$DIR/err" >&2; return 1; }
    echo "$(tail -1 "$DIR/out" | awk -F'","' '{ print $(NF - 1) }') $(sed -n 's/^rss //p' "$DIR/err")"
}
check() { [ -n "${1%% *}" ] || { echo "bench_peer: no timing parsed from $2:" >&2; cat "$DIR/out" >&2; exit 1; }; }

echo "# machine: $(lscpu | sed -n 's/^Model name: *//p' | head -n1), $(nproc) cores," \
    "$(free -g | awk '/^Mem:/{print $2}') GiB RAM, flags: $(grep -o -w 'avx2\|avx512f\|avx512_vnni\|avx_vnni\|avx512_bf16\|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "# date: $(date -u +%Y-%m-%dT%H:%MZ), kernel $(uname -r), load average$(uptime | sed -n 's/.*load average//p')"
echo "# model: synth $ARCH --preset $PRESET --layers $LAYERS --experts $EXPERTS ($DIR); prefill $PP, decode $TG;" \
    "$REPS interleaved repetitions; mlock $MLOCK; moekit $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?'), llama.cpp v0.4.0$([ "$NOREPACK" = 1 ] && echo " through mk_llama, extra buffer types off")"

# warm-up: page the files in, settle the CPU
kern=
for b in $BITS; do
    mk_tg "$b" 1 > /dev/null
    kern=$(sed -n 's/^\[kernels\] //p' "$DIR/out" | head -n1) # its --stats line: which kernels ran
    ll_run "$b" 1 0 8 > /dev/null
done
echo "# moekit kernels: ${kern:-?}" | tee -a "$raw"
for r in $(seq 1 "$REPS"); do
    for t in $THREADS; do
        echo "readbw $r $t $("$build/bench_readbw" "$t" "$BWMIB" 3 | sed -n 's/.*gbps=\([0-9.]*\).*/\1/p')" >> "$raw"
        for b in $BITS; do
            v=$(mk_pp "$b" "$t"); check "$v" "moekit prefill"; echo "mk_pp $r $t $b $v" >> "$raw"
            v=$(ll_run "$b" "$t" "$PP" 0); check "$v" "llama-bench prefill"; echo "ll_pp $r $t $b $v" >> "$raw"
            v=$(mk_tg "$b" "$t"); check "$v" "moekit decode"; echo "mk_tg $r $t $b $v" >> "$raw"
            v=$(ll_run "$b" "$t" 0 "$TG"); check "$v" "llama-bench decode"; echo "ll_tg $r $t $b $v" >> "$raw"
        done
    done
done

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2];
                                              else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { awk -v k="$1" -v t="$2" -v b="$3" -v c="$4" '$1 == k && $3 == t && (b == "" || $4 == b) { print $c }' "$raw" | median; }
echo
echo "| bits | threads | decode tok/s moekit / llama.cpp (x) | prefill $PP tok/s moekit / llama.cpp (x) | read GB/s | bound tok/s | moekit decode % of bound | peak RSS MiB moekit / llama.cpp |"
echo "|---|---|---|---|---|---|---|---|"
for b in $BITS; do
    bpt=$(bytes_per_token "$DIR/q$b.gguf")
    for t in $THREADS; do
        mtg=$(col mk_tg "$t" "$b" 5); ltg=$(col ll_tg "$t" "$b" 5)
        mpp=$(col mk_pp "$t" "$b" 5); lpp=$(col ll_pp "$t" "$b" 5)
        bw=$(col readbw "$t" "" 4)
        mrss=$(awk -v t="$t" -v b="$b" '($1 == "mk_tg" || $1 == "mk_pp") && $3 == t && $4 == b { if ($6 > m) m = $6 } END { printf "%.0f", m / 1024 }' "$raw")
        lrss=$(awk -v t="$t" -v b="$b" '($1 == "ll_tg" || $1 == "ll_pp") && $3 == t && $4 == b { if ($6 > m) m = $6 } END { printf "%.0f", m / 1024 }' "$raw")
        awk -v b="$b" -v t="$t" -v mtg="$mtg" -v ltg="$ltg" -v mpp="$mpp" -v lpp="$lpp" -v bw="$bw" -v bpt="$bpt" \
            -v mr="$mrss" -v lr="$lrss" 'BEGIN {
                bound = bw * 1e9 / bpt
                printf "| %s | %s | %.2f / %.2f (%.2fx) | %.1f / %.1f (%.2fx) | %.1f | %.1f | %.0f%% | %s / %s |\n",
                    b, t, mtg, ltg, mtg / ltg, mpp, lpp, mpp / lpp, bw, bound, 100 * mtg / bound, mr, lr }'
    done
done
echo
echo "bytes per decode token (GGUF tensor table, k/E of the experts): $(for b in $BITS; do printf '%s-bit %.1f MiB  ' "$b" "$(echo "$(bytes_per_token "$DIR/q$b.gguf") / 1048576" | bc -l)"; done)"
echo "raw measurements: $raw"
