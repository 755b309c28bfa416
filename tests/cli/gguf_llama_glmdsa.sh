#!/usr/bin/env bash
# ctest-labels: slow
# `convert --to gguf` against llama.cpp (gguf_llama.bash says how), llama.cpp's glm-dsa: glm5dsa-a
# (GLM-5: the lightning indexer with interleaved RoPE, indexer_types written per layer, the leading
# dense layers from mlp_layer_types; 32 tokens against index_topk 24).
. "${MK_SRC:?}/tests/cli/gguf_llama.bash"
check_fixture glm5dsa-a
echo "gguf_llama_glmdsa: all passed"
