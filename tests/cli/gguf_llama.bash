# Sourced by tests/cli/gguf_llama_*.sh (one ctest entry per llama.cpp
# architecture, each a few seconds; named .bash so the *.sh glob does not
# run it as a test): `moekit convert --to gguf` against llama.cpp itself (release v0.4.0, the
# prebuilt libraries of node-llama-cpp 3.21.1; scripts/install-deps.d/llama.sh
# puts them and the tools built on them in $MK_SRC/.peers/bin). Skipped, with
# the reason, when that peer is not installed.
#
# On each fixture a gguf_llama_<arch>.sh names (what it exercises is said
# there), check_fixture runs:
#   1. F32 GGUF: llama.cpp loads it and its logits equal moekit's on the same
#      checkpoint (rel L2 <= 1e-3, the fixtures' bound; the oracle runs with an
#      F32 KV cache and no flash attention). This proves names, shapes, the
#      stacked expert layout and every metadata key llama.cpp reads.
#   2. F16 GGUF: the same bound on llama.cpp's logits from the F16 file's
#      weights in F32 arithmetic (the file widened to F32 by llama-quantize,
#      exactly). llama.cpp's own F16 matmul rounds activations to f16; its
#      logits are printed, not bounded: 4e-4 to 6e-4 on the attention-only
#      fixtures, 1.36e-3 on qwen3next-a, where the same F16 weights in F32
#      arithmetic give 1.7e-6: llama.cpp's arithmetic, not the file.
#   3. Every file type's bytes against llama.cpp's own llama-quantize run on
#      moekit's BF16 GGUF: F32, F16 (conversions) and, with --pure and no
#      importance matrix, Q8_0 and Q4_0 (ggml's quantize_row_*_ref): every
#      tensor byte-identical, same names, types and shapes; the K-quants Q4_K,
#      Q5_K, Q6_K (ggml's quantize_row_q*_K_ref) as --pure Q4_K_M / Q5_K_M /
#      Q6_K, and the mixes q4_k_m / q5_k_m against llama-quantize's own
#      Q4_K_M / Q5_K_M choice (no --pure): every tensor's type and bytes,
#      including llama.cpp's fallbacks for rows that are not whole 256-value
#      super-blocks (Q5_0, Q5_1, Q8_0, F16: qwen3moe-odd has only those).
#      BF16 is proven this
#      way (its values are the F32 file's, bit for bit), not by logits:
#      llama.cpp rounds activations to bf16 in its BF16 matmul (2.9e-3 rel L2
#      on qwen3moe-odd), which is llama.cpp's arithmetic, not the file's.
# Also sourced, for its peer lookup and helpers, by the FP8 -> GGUF check (gguf_llama_qwen3moe.sh), the
# mixes' layer rules (gguf_llama_mix.sh), the tokenizer (gguf_llama_tokenizer.sh),
# --target-bpw (gguf_target_bpw.sh) and the GGUF reader (gguf_inspect.sh).
set -euo pipefail
BIN=${MK_BIN:?}
. "${MK_SRC:?}/tests/cli/fixtures.bash"
need_fixtures
PEER=${MK_PEERS:-$MK_SRC/.peers}/bin
for t in mk_llama llama-quantize; do
    if [ ! -x "$PEER/$t" ]; then
        echo "skip: the llama.cpp peer is not installed ($PEER/$t missing): run scripts/install-deps.d/llama.sh" \
             "(needs npm and network once)"
        exit 77
    fi
done
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-gguf-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

rel_l2() { # A B: ||A - B|| / ||B|| of two raw float32 files of equal size
    [ "$(stat -c %s "$1")" = "$(stat -c %s "$2")" ] || { echo "size-mismatch"; return; }
    paste <(od -An -v -f -w4 "$1") <(od -An -v -f -w4 "$2") |
        awk '{ d = $1 - $2; e += d * d; r += $2 * $2 } END { printf "%.3g", sqrt(e / r) }'
}
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 <= b + 0 && a != "size-mismatch") }'; }

# same_as_lq NAME SRC.gguf lo PURE TYPE: llama-quantize [--pure] SRC.gguf TYPE equals moekit's $T/NAME.lo.gguf
# tensor for tensor (names, types, shapes, bytes); PURE is --pure or -
same_as_lq() {
    local pure=()
    [ "$4" = --pure ] && pure=(--pure)
    "$PEER/llama-quantize" "${pure[@]}" "$2" "$T/$1.$3.lq.gguf" "$5" 2 >"$T/lq.log" 2>&1 ||
        { tail -5 "$T/lq.log" >&2; fail "$1: llama-quantize ${pure[*]} $5 of moekit's BF16 GGUF failed"; }
    "$PEER/mk_llama" cmp "$T/$1.$3.gguf" "$T/$1.$3.lq.gguf" >"$T/cmp" ||
        { head -20 "$T/cmp" >&2; fail "$1 $3: moekit's GGUF differs from llama-quantize ${pure[*]} $5's"; }
    if [ "$4" = - ]; then # a mix: the same general.file_type as llama-quantize writes for it
        local a b
        a=$("$PEER/mk_llama" info "$T/$1.$3.gguf" | grep '^kv general.file_type ')
        b=$("$PEER/mk_llama" info "$T/$1.$3.lq.gguf" | grep '^kv general.file_type ')
        [ -n "$a" ] && [ "$a" = "$b" ] || fail "$1 $3: '$a', llama-quantize wrote '$b'"
    fi
    echo "ok: $1 $3: every tensor byte-identical to llama-quantize ${pure[*]} $5's ($(tail -1 "$T/cmp"))"
}

# check_fixture FX [SRC [IDS]]: steps 1-3 of the header on fixture FX (its bf16/ checkpoint, or SRC:
# a copy with an edited config, or a checkpoint of tests/data named FX), against the logits moekit
# computes from that checkpoint on the fixture's input_ids (or IDS, comma-separated)
check_fixture() {
    local fx=$1 src=${2:-$FX/$1/bf16} ids=${3:-} ty lo r k
    [ -n "$ids" ] || ids=$(tr -d ' \n' < "$FX/$fx/reference.json" | sed 's/.*"input_ids":\[\([0-9,]*\)\].*/\1/')
    echo "$ids" | tr ',' ' ' > "$T/ids"
    "$BIN" logits "$src" --ids "$ids" --out "$T/$fx.mk.f32" --threads 2 2>/dev/null
    for ty in f32 f16 bf16 q8_0 q4_0; do
        "$BIN" convert "$src" "$T/$fx.$ty.gguf" --to gguf --gguf-type "$ty" --quiet
    done
    # f16w: moekit's F16 file widened to F32 by llama-quantize (exact), so llama.cpp computes on the F16
    # file's weights in F32 arithmetic
    "$PEER/llama-quantize" "$T/$fx.f16.gguf" "$T/$fx.f16w.gguf" F32 2 >"$T/lq.log" 2>&1 ||
        { tail -5 "$T/lq.log" >&2; fail "$fx: llama-quantize F32 of moekit's F16 GGUF failed"; }
    for ty in f32 f16w f16; do
        "$PEER/mk_llama" logits "$T/$fx.$ty.gguf" "$T/ids" "$T/$fx.$ty.ll.f32" 2 >/dev/null 2>"$T/err" ||
            { cat "$T/err" >&2; fail "$fx: llama.cpp could not run moekit's $ty GGUF"; }
        r=$(rel_l2 "$T/$fx.$ty.ll.f32" "$T/$fx.mk.f32")
        if [ "$ty" = f16 ]; then # llama.cpp's F16 arithmetic, reported (see the header)
            echo "note: $fx f16 GGUF in llama.cpp's F16 matmul: rel L2 $r to moekit's logits"
            continue
        fi
        le "$r" 1e-3 || fail "$fx $ty: llama.cpp's logits vs moekit's: rel L2 $r > 1e-3"
        echo "ok: $fx $ty GGUF: llama.cpp logits = moekit logits (rel L2 $r)"
    done
    rm -f "$T/$fx.f16w.gguf"
    for ty in F32 F16 Q8_0 Q4_0; do
        lo=$(echo "$ty" | tr A-Z a-z)
        same_as_lq "$fx" "$T/$fx.bf16.gguf" "$lo" --pure "$ty"
    done
    for k in "q4_k --pure Q4_K_M" "q5_k --pure Q5_K_M" "q6_k --pure Q6_K" "q4_k_m - Q4_K_M" "q5_k_m - Q5_K_M"; do
        set -- $k
        "$BIN" convert "$src" "$T/$fx.$1.gguf" --to gguf --gguf-type "$1" --quiet
        same_as_lq "$fx" "$T/$fx.bf16.gguf" "$@"
    done
    rm -f "$T/$fx".*.gguf
}

# tests/data/dsa64's prompt: 24 tokens, three times its index_topk
DSA64_IDS=5,17,99,3,64,127,12,40,81,7,56,33,90,21,110,2,73,45,118,9,60,28,101,14
