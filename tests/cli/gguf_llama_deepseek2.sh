#!/usr/bin/env bash
# ctest-labels: slow
# `convert --to gguf` against llama.cpp (gguf_llama.bash says how), llama.cpp's deepseek2:
# deepseekv3-a and glm4lite-a (GLM-4.7-Flash's glm4_moe_lite, which llama.cpp's converter also writes
# as deepseek2): MLA with kv_b_proj split into attn_k_b, transposed per head, and attn_v_b; grouped
# sigmoid routing; leading dense layers, from mlp_layer_types for glm4_moe_lite.
. "${MK_SRC:?}/tests/cli/gguf_llama.bash"
check_fixture deepseekv3-a
check_fixture glm4lite-a
echo "gguf_llama_deepseek2: all passed"
