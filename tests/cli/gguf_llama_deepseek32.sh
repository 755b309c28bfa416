#!/usr/bin/env bash
# ctest-labels: slow
# `convert --to gguf` against llama.cpp (gguf_llama.bash says how), llama.cpp's deepseek32
# (DeepSeek-V3.2: deepseek2's MLA and MoE plus the lightning indexer in every layer, its RoPE
# half-split). llama.cpp's indexer needs index_head_dim a multiple of 64 (its Hadamard rotation):
# the fixture deepseekv32-a (32) is refused by name; steps 1-3 run on tests/data/dsa64 (make.py
# there: index_head_dim 64, 24 tokens against index_topk 8). The indexer is in play: with
# index_topk raised past the prompt (every position kept) moekit's logits move by more than 1e-2,
# so equal logits mean llama.cpp selected the same positions.
. "${MK_SRC:?}/tests/cli/gguf_llama.bash"
if "$BIN" convert "$FX/deepseekv32-a/bf16" "$T/x.gguf" --to gguf --quiet 2>"$T/err"; then
    fail "deepseekv32-a --to gguf succeeded: llama.cpp cannot run an indexer 32 wide"
fi
grep -q "index_head_dim 32" "$T/err" || { cat "$T/err" >&2; fail "deepseekv32-a: the error does not name index_head_dim"; }
echo "ok: deepseekv32-a refused: $(head -1 "$T/err")"
check_fixture dsa64 "$MK_SRC/tests/data/dsa64" "$DSA64_IDS"
mkdir "$T/dense"
cp "$MK_SRC/tests/data/dsa64/"*.json "$MK_SRC/tests/data/dsa64/"*.safetensors "$T/dense/"
sed -i 's/"index_topk": 8,/"index_topk": 64,/' "$T/dense/config.json"
"$BIN" logits "$T/dense" --ids "$DSA64_IDS" --out "$T/dense.f32" --threads 2 2>/dev/null
r=$(rel_l2 "$T/dense.f32" "$T/dsa64.mk.f32")
le 1e-2 "$r" || fail "dsa64: keeping every position moves moekit's logits by only $r: the indexer is not exercised"
echo "ok: dsa64: the indexer's selection matters (every position kept: rel L2 $r)"
echo "gguf_llama_deepseek32: all passed"
