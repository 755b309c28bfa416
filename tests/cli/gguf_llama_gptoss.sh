#!/usr/bin/env bash
# ctest-labels: slow
# `convert --to gguf` against llama.cpp (gguf_llama.bash says how), llama.cpp's gpt-oss: gptoss-a
# (attention sinks, q/k/v/o biases, alternating sliding-window / full layers, YaRN, the router's
# bias, experts split from the interleaved gate_up_proj and transposed per expert, their 2-D
# biases F32, clamped SwiGLU). llama.cpp's YaRN always floors / ceils the correction range, i.e.
# computes "truncate": true; the fixture's config says false (as the released gpt-oss does), which
# no GGUF can express. Steps 1-3 run on a copy of the fixture whose config says true, so both sides
# compute the same model; on the fixture itself llama.cpp's logits are printed, not bounded.
. "${MK_SRC:?}/tests/cli/gguf_llama.bash"
mkdir "$T/gptoss-trunc"
cp "$FX/gptoss-a/bf16/"* "$T/gptoss-trunc/"
sed -i 's/"truncate": false/"truncate": true/' "$T/gptoss-trunc/config.json"
grep -q '"truncate": true' "$T/gptoss-trunc/config.json" || fail "gptoss-a/bf16/config.json: no \"truncate\": false to flip"
check_fixture gptoss-a "$T/gptoss-trunc"

# the fixture as released: "truncate": false, which llama.cpp cannot compute (reported)
fx=gptoss-a
ids=$(tr -d ' \n' < "$FX/$fx/reference.json" | sed 's/.*"input_ids":\[\([0-9,]*\)\].*/\1/')
echo "$ids" | tr ',' ' ' > "$T/ids"
"$BIN" logits "$FX/$fx/bf16" --ids "$ids" --out "$T/rel.mk.f32" --threads 2 2>/dev/null
"$BIN" convert "$FX/$fx/bf16" "$T/rel.gguf" --to gguf --gguf-type f32 --quiet
"$PEER/mk_llama" logits "$T/rel.gguf" "$T/ids" "$T/rel.ll.f32" 2 >/dev/null 2>&1 || fail "llama.cpp could not run gptoss-a's GGUF"
echo "note: gptoss-a (\"truncate\": false) f32 GGUF: llama.cpp's truncated YaRN vs moekit: rel L2 $(rel_l2 "$T/rel.ll.f32" "$T/rel.mk.f32")"

# MXFP4 experts are not requantized: refused by name until they are carried over as GGUF MXFP4
if "$BIN" convert "$FX/$fx/mxfp4" "$T/mx.gguf" --to gguf --quiet 2>"$T/err"; then
    fail "gptoss-a/mxfp4 --to gguf succeeded: its MXFP4 experts would have been requantized"
fi
grep -q "MXFP4" "$T/err" || { cat "$T/err" >&2; fail "gptoss-a/mxfp4 --to gguf: the error does not name MXFP4"; }
echo "ok: gptoss-a/mxfp4 --to gguf refused: $(head -1 "$T/err")"
echo "gguf_llama_gptoss: all passed"
