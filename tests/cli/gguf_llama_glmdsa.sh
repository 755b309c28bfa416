#!/usr/bin/env bash
# ctest-labels: slow
# `convert --to gguf` against llama.cpp (gguf_llama.bash says how), llama.cpp's glm-dsa (GLM-5: the
# lightning indexer with interleaved RoPE, indexer_types written per layer, leading dense layers
# from mlp_layer_types). llama.cpp's indexer needs index_head_dim a multiple of 64 (its Hadamard
# rotation): the fixture glm5dsa-a (32) is refused by name; steps 1-3 run on tests/data/dsa64's
# weights under a glm_moe_dsa config (layer 2 "shared": it reuses layer 1's selection).
. "${MK_SRC:?}/tests/cli/gguf_llama.bash"
if "$BIN" convert "$FX/glm5dsa-a/bf16" "$T/x.gguf" --to gguf --quiet 2>"$T/err"; then
    fail "glm5dsa-a --to gguf succeeded: llama.cpp cannot run an indexer 32 wide"
fi
grep -q "index_head_dim 32" "$T/err" || { cat "$T/err" >&2; fail "glm5dsa-a: the error does not name index_head_dim"; }
echo "ok: glm5dsa-a refused: $(head -1 "$T/err")"
mkdir "$T/glm"
cp "$MK_SRC/tests/data/dsa64/model.safetensors" "$T/glm/"
sed -e 's/"DeepseekV32ForCausalLM"/"GlmMoeDsaForCausalLM"/' -e 's/"deepseek_v32"/"glm_moe_dsa"/' \
    -e 's/"index_topk": 8,/"index_topk": 8, "indexer_types": ["full", "full", "shared"],/' \
    "$MK_SRC/tests/data/dsa64/config.json" > "$T/glm/config.json"
grep -q '"shared"' "$T/glm/config.json" && grep -q glm_moe_dsa "$T/glm/config.json" || fail "could not write the glm_moe_dsa config"
check_fixture glmdsa64 "$T/glm" "$DSA64_IDS"
echo "gguf_llama_glmdsa: all passed"
