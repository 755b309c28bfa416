#!/usr/bin/env bash
# ctest-labels: slow
# `convert --to gguf` and llama.cpp's deepseek32 (DeepSeek-V3.2): refused by name, not written.
# On tests/data/dsa64 (index_head_dim 64, the smallest llama.cpp's indexer runs; 24 tokens against
# index_topk 8) llama.cpp's deepseek32 graph computes moekit's logits with the indexer out of play
# (index_topk raised to 64: rel L2 4.7e-7), but with it, selects other positions than transformers'
# DeepseekV32Indexer (which moekit equals on the deepseekv32-a reference): from position 12 on,
# rel L2 0.086 overall; the same weights as glm-dsa agree to 5e-7 (gguf_llama_glmdsa.sh). A GGUF of
# it would compute another model. This test fails once the refusal is dropped without a fix.
. "${MK_SRC:?}/tests/cli/gguf_llama.bash"
for src in "$FX/deepseekv32-a/bf16" "$MK_SRC/tests/data/dsa64"; do
    if "$BIN" convert "$src" "$T/x.gguf" --to gguf --quiet 2>"$T/err"; then
        fail "$src --to gguf succeeded: llama.cpp's deepseek32 would compute another model"
    fi
    grep -q "deepseek_v32 is refused" "$T/err" || { cat "$T/err" >&2; fail "$src: the error does not say why"; }
    echo "ok: $src refused: $(head -1 "$T/err")"
done
echo "gguf_llama_deepseek32: all passed"
