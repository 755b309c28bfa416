#!/usr/bin/env bash
# ctest-labels: slow
# `convert --to gguf` against llama.cpp (gguf_llama.bash says how), llama.cpp's gpt-oss: gptoss-a
# (attention sinks, q/k/v/o biases, alternating sliding-window / full layers, YaRN, the router's
# bias, experts split from the interleaved gate_up_proj and transposed per expert, their 2-D
# biases F32, clamped SwiGLU). llama.cpp's YaRN always floors / ceils the correction range, i.e.
# computes "truncate": true; the fixture's config says false (as the released gpt-oss does), which
# no GGUF can express. Steps 1-3 run on a copy of the fixture whose config says true, so both sides
# compute the same model; on the fixture itself llama.cpp's logits are printed, not bounded.
# The MXFP4 variant: below.
. "${MK_SRC:?}/tests/cli/gguf_llama.bash"
mkdir "$T/gptoss-trunc"
cp "$FX/gptoss-a/bf16/"* "$T/gptoss-trunc/"
sed -i 's/"truncate": false/"truncate": true/' "$T/gptoss-trunc/config.json"
grep -q '"truncate": true' "$T/gptoss-trunc/config.json" || fail "gptoss-a/bf16/config.json: no \"truncate\": false to flip"
check_fixture gptoss-a "$T/gptoss-trunc"

# an MLX checkpoint of the same weights (experts already (E, out, in), copied) gives the same file
"$BIN" convert "$T/gptoss-trunc" "$T/mlx" --to mlx --quiet
"$BIN" convert "$T/mlx" "$T/mlx.gguf" --to gguf --gguf-type f32 --quiet
"$BIN" convert "$T/gptoss-trunc" "$T/hf.gguf" --to gguf --gguf-type f32 --quiet
"$PEER/mk_llama" cmp "$T/mlx.gguf" "$T/hf.gguf" >"$T/cmp" ||
    { head -20 "$T/cmp" >&2; fail "gptoss-a: the GGUF of its MLX conversion differs from the HF one's"; }
echo "ok: gptoss-a: HF -> GGUF and HF -> MLX -> GGUF write the same tensors ($(tail -1 "$T/cmp"))"
rm -rf "$T/mlx" "$T/mlx.gguf" "$T/hf.gguf"

# the fixture as released: "truncate": false, which llama.cpp cannot compute (reported)
fx=gptoss-a
ids=$(tr -d ' \n' < "$FX/$fx/reference.json" | sed 's/.*"input_ids":\[\([0-9,]*\)\].*/\1/')
echo "$ids" | tr ',' ' ' > "$T/ids"
"$BIN" logits "$FX/$fx/bf16" --ids "$ids" --out "$T/rel.mk.f32" --threads 2 2>/dev/null
"$BIN" convert "$FX/$fx/bf16" "$T/rel.gguf" --to gguf --gguf-type f32 --quiet
"$PEER/mk_llama" logits "$T/rel.gguf" "$T/ids" "$T/rel.ll.f32" 2 >/dev/null 2>&1 || fail "llama.cpp could not run gptoss-a's GGUF"
echo "note: gptoss-a (\"truncate\": false) f32 GGUF: llama.cpp's truncated YaRN vs moekit: rel L2 $(rel_l2 "$T/rel.ll.f32" "$T/rel.mk.f32")"

# The released layout (gptoss-a/mxfp4: experts as MXFP4 *_blocks / *_scales), again with "truncate":
# true. Its experts are carried over as ggml's MXFP4 at every file type, never requantized:
#   - llama.cpp's own MXFP4 dequantizer (llama-quantize --allow-requantize to F32, exact) gives the
#     values moekit reads from the checkpoint: llama.cpp's logits on that F32 file equal moekit's on
#     the MXFP4 checkpoint (rel L2 <= 1e-3); a wrong nibble or scale order fails this. llama.cpp's
#     own MXFP4 matmul (Q8_0 activations) is printed, not bounded, as F16's is;
#   - at Q8_0, Q4_K (pure) and Q4_K_M every tensor is byte-identical to llama-quantize's from
#     moekit's BF16 GGUF of the checkpoint with the experts kept MXFP4 (--tensor-type ...=mxfp4:
#     llama-quantize copies a tensor already of its type), so the experts are MXFP4 in both.
mkdir "$T/mx"
cp "$FX/gptoss-a/mxfp4/"* "$T/mx/"
sed -i 's/"truncate": false/"truncate": true/' "$T/mx/config.json"
"$BIN" logits "$T/mx" --ids "$ids" --out "$T/mx.mk.f32" --threads 2 2>/dev/null
for ty in f32 bf16; do
    "$BIN" convert "$T/mx" "$T/mx.$ty.gguf" --to gguf --gguf-type "$ty" --quiet
done
n=$("$PEER/mk_llama" info "$T/mx.f32.gguf" | grep -c '_exps.weight mxfp4 ') || true
[ "$n" = 12 ] || fail "gptoss-a/mxfp4 f32 GGUF: $n MXFP4 expert tensors, expected 12 (4 layers x gate/up/down)"
"$PEER/llama-quantize" --allow-requantize "$T/mx.f32.gguf" "$T/mx.w.gguf" F32 2 >"$T/lq.log" 2>&1 ||
    { tail -5 "$T/lq.log" >&2; fail "gptoss-a/mxfp4: llama-quantize F32 of moekit's MXFP4 GGUF failed"; }
for ty in w f32; do
    "$PEER/mk_llama" logits "$T/mx.$ty.gguf" "$T/ids" "$T/mx.$ty.ll.f32" 2 >/dev/null 2>"$T/err" ||
        { cat "$T/err" >&2; fail "gptoss-a/mxfp4: llama.cpp could not run moekit's $ty GGUF"; }
done
r=$(rel_l2 "$T/mx.w.ll.f32" "$T/mx.mk.f32")
le "$r" 1e-3 || fail "gptoss-a/mxfp4: llama.cpp's logits on its own dequantization of moekit's MXFP4 experts vs moekit's: rel L2 $r > 1e-3"
echo "ok: gptoss-a/mxfp4 GGUF: llama.cpp's MXFP4 dequantization of the experts gives moekit's logits (rel L2 $r)"
echo "note: gptoss-a/mxfp4 GGUF in llama.cpp's MXFP4 matmul (Q8_0 activations): rel L2 $(rel_l2 "$T/mx.f32.ll.f32" "$T/mx.mk.f32")"
for k in "q8_0 --pure Q8_0" "q4_k --pure Q4_K_M" "q4_k_m - Q4_K_M"; do
    set -- $k
    pure=()
    [ "$2" = --pure ] && pure=(--pure)
    "$BIN" convert "$T/mx" "$T/mx.$1.gguf" --to gguf --gguf-type "$1" --quiet
    "$PEER/llama-quantize" "${pure[@]}" --tensor-type 'ffn_(gate|up|down)_exps=mxfp4' "$T/mx.bf16.gguf" \
        "$T/mx.$1.lq.gguf" "$3" 2 >"$T/lq.log" 2>&1 ||
        { tail -5 "$T/lq.log" >&2; fail "gptoss-a/mxfp4: llama-quantize $3 of moekit's BF16 GGUF failed"; }
    "$PEER/mk_llama" cmp "$T/mx.$1.gguf" "$T/mx.$1.lq.gguf" >"$T/cmp" ||
        { head -20 "$T/cmp" >&2; fail "gptoss-a/mxfp4 $1: moekit's GGUF differs from llama-quantize $3's"; }
    n=$("$PEER/mk_llama" info "$T/mx.$1.gguf" | grep -c '_exps.weight mxfp4 ') || true
    [ "$n" = 12 ] || fail "gptoss-a/mxfp4 $1: $n MXFP4 expert tensors, expected 12"
    echo "ok: gptoss-a/mxfp4 $1: experts kept MXFP4, every tensor byte-identical to llama-quantize ${pure[*]} $3's ($(tail -1 "$T/cmp"))"
done
echo "gguf_llama_gptoss: all passed"
