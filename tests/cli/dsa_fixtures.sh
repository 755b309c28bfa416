#!/usr/bin/env bash
# DeepSeek sparse attention end to end through the CLI, on both DSA fixtures
# (deepseekv32-a: deepseek_v32, glm5dsa-a: glm_moe_dsa; index_topk 24):
#  - `moekit logits` on ref ids and on the 256 long ids (chunks of 48, so the
#    sparse selection crosses chunks) against transformers' ref_logits and
#    long_logits: rel L2 <= 1e-3 and the same argmax at every position;
#  - `moekit run` greedy from greedy_prompt gives greedy_cached's 24 tokens;
#  - convert HF -> MLX -> HF: every tensor byte-identical (verify by name),
#    and the MLX side equal to the source by layout;
#  - experts streamed under --memory-budget give the resident logits bit for bit;
#  - MLX 8-bit quantize (indexer linears included) loads, inspects clean and runs;
#  - inspect names the sparse attention.
set -euo pipefail
BIN=${MK_BIN:?}
. "${MK_SRC:?}/tests/cli/fixtures.bash"
need_fixtures
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-dsa-XXXXXX")
trap 'rm -rf "$T"' EXIT

ids_of() { # KEY FILE: the integer list under "KEY" in a JSON file, comma-separated
    tr -d ' \n' < "$2" | sed "s/.*\"$1\":\[\([0-9,]*\)\].*/\1/"
}

# compare OURS REF V WHAT: rel L2 <= 1e-3 and equal argmax per row of V floats
compare() {
    paste <(od -An -v -f -w4 "$1") <(od -An -v -f -w4 "$2") | awk -v V="$3" -v what="$4" '
        { d = $1 - $2; e += d * d; r += $2 * $2; i = (NR - 1) % V
          if (i == 0 || $1 > ba) { ba = $1; ia = i } if (i == 0 || $2 > bb) { bb = $2; ib = i }
          if (i == V - 1) { rows++; bad += ia != ib } }
        END { rel = sqrt(e / r); printf "%s: %d rows, rel L2 %.3g, argmax mismatches %d\n", what, rows, rel, bad
              exit !(rows > 0 && rel <= 1e-3 && bad == 0) }' ||
        { echo "FAIL: $4" >&2; exit 1; }
}

for d in deepseekv32-a glm5dsa-a; do
    M=$FX/$d/bf16
    V=$(tr -d ' \n' < "$FX/$d/reference.json" | sed 's/.*"logits_shape":\[[0-9]*,\([0-9]*\)\].*/\1/')
    "$BIN" logits "$M" --ids "$(ids_of input_ids "$FX/$d/reference.json")" --out "$T/$d-ref.f32" --threads 2 2>/dev/null
    compare "$T/$d-ref.f32" "$FX/$d/ref_logits.f32" "$V" "$d logits vs ref_logits"
    "$BIN" logits "$M" --ids "$(ids_of input_ids "$FX/$d/long.json")" --out "$T/$d-long.f32" --threads 2 \
        --prefill-chunk 48 2>/dev/null
    compare "$T/$d-long.f32" "$FX/$d/long_logits.f32" "$V" "$d logits (256 ids, chunks of 48) vs long_logits"

    "$BIN" logits "$M" --ids "$(ids_of input_ids "$FX/$d/long.json")" --out "$T/$d-st.f32" --threads 2 \
        --prefill-chunk 48 --memory-budget 110M --stream-experts 2>/dev/null
    cmp "$T/$d-st.f32" "$T/$d-long.f32" || { echo "FAIL: $d streamed logits differ from resident" >&2; exit 1; }
    echo "ok: $d experts streamed under --memory-budget: logits bitwise equal to resident"

    got=$("$BIN" run "$M" --ids "$(ids_of greedy_prompt "$FX/$d/reference.json")" --max-tokens 24 --json \
        --threads 2 2>/dev/null | sed 's/.*"ids":\[\([0-9,]*\)\].*/\1/')
    want=$(ids_of greedy_cached "$FX/$d/reference.json")
    [ "$got" = "$want" ] || { echo "FAIL: $d greedy: $got, expected $want" >&2; exit 1; }
    echo "ok: $d run: 24 greedy tokens equal greedy_cached"

    "$BIN" convert "$M" "$T/$d-mlx" --to mlx --quiet
    "$BIN" convert "$T/$d-mlx" "$T/$d-hf" --to hf --quiet
    "$BIN" verify "$M" "$T/$d-hf" --quiet > "$T/v1" 2>&1 || { cat "$T/v1" >&2; echo "FAIL: $d HF -> MLX -> HF differs" >&2; exit 1; }
    grep -q " 0 differ" "$T/v1" && grep -q "PASS" "$T/v1" || { cat "$T/v1" >&2; echo "FAIL: $d round trip" >&2; exit 1; }
    "$BIN" verify "$M" "$T/$d-mlx" --quiet > "$T/v2" 2>&1 || { cat "$T/v2" >&2; echo "FAIL: $d MLX side differs" >&2; exit 1; }
    echo "ok: $d HF -> MLX -> HF byte-identical ($(grep -o '[0-9]* identical' "$T/v1" | head -1))"

    "$BIN" quantize "$M" "$T/$d-q8" --bits 8 --group-size 32 --quiet > /dev/null
    "$BIN" inspect "$T/$d-q8" > "$T/insp8"
    grep -q "problems        0" "$T/insp8" || { cat "$T/insp8" >&2; echo "FAIL: $d q8 inspect" >&2; exit 1; }
    # the safetensors header (its first printable run) names the quantized indexer's scales
    strings -n 8 "$T/$d-q8/model.safetensors" > "$T/strs"
    grep -q "self_attn.indexer.wq_b.scales" "$T/strs" ||
        { echo "FAIL: $d q8: the indexer's wq_b is not quantized" >&2; exit 1; }
    "$BIN" logits "$T/$d-q8" --ids "$(ids_of input_ids "$FX/$d/long.json")" --out "$T/$d-q8.f32" --threads 2 2>/dev/null
    echo "ok: $d MLX 8-bit: inspect clean, indexer quantized, 256 positions run"

    "$BIN" inspect "$M" > "$T/insp"
    grep -q "sparse attn     top 24 positions per query" "$T/insp" || { cat "$T/insp" >&2; echo "FAIL: $d inspect" >&2; exit 1; }
    grep -q "problems        0" "$T/insp" || { cat "$T/insp" >&2; echo "FAIL: $d inspect problems" >&2; exit 1; }
    echo "ok: $d inspect reports the sparse attention, no problems"
done
echo "dsa_fixtures: all passed"
