#!/usr/bin/env bash
# ctest-labels: slow
# `convert --to gguf` against llama.cpp (gguf_llama.bash says how), llama.cpp's qwen3moe: qwen3moe-a,
# and qwen3moe-odd whose shapes are not powers of two (every K-quant falls back: Q5_0, Q5_1, Q8_0,
# F16); and the FP8 variant of qwen3moe-odd converted straight to an F32 GGUF: llama.cpp's logits
# equal moekit's on the FP8 checkpoint (rel L2 <= 1e-3).
. "${MK_SRC:?}/tests/cli/gguf_llama.bash"
check_fixture qwen3moe-a
check_fixture qwen3moe-odd

# an FP8 block checkpoint (partial edge blocks) straight to GGUF F32: llama.cpp on it equals moekit
# computing from the FP8 bytes (products kept in float32 on both sides)
fx=qwen3moe-odd
ids=$(tr -d ' \n' < "$FX/$fx/reference.json" | sed 's/.*"input_ids":\[\([0-9,]*\)\].*/\1/')
echo "$ids" | tr ',' ' ' > "$T/ids"
"$BIN" logits "$FX/$fx/fp8" --ids "$ids" --out "$T/fp8.mk.f32" --threads 2 2>/dev/null
"$BIN" convert "$FX/$fx/fp8" "$T/fp8.gguf" --to gguf --gguf-type f32 --quiet
"$PEER/mk_llama" logits "$T/fp8.gguf" "$T/ids" "$T/fp8.ll.f32" 2 >/dev/null 2>&1 || fail "llama.cpp could not run the FP8-sourced GGUF"
r=$(rel_l2 "$T/fp8.ll.f32" "$T/fp8.mk.f32")
le "$r" 1e-3 || fail "$fx fp8 -> gguf f32: llama.cpp's logits vs moekit's on the FP8 checkpoint: rel L2 $r > 1e-3"
echo "ok: $fx fp8 -> GGUF f32: llama.cpp logits = moekit logits on the FP8 checkpoint (rel L2 $r)"
echo "gguf_llama_qwen3moe: all passed"
