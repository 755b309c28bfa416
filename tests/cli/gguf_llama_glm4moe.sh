#!/usr/bin/env bash
# ctest-labels: slow
# `convert --to gguf` against llama.cpp (gguf_llama.bash says how), llama.cpp's glm4moe: glm4moe-a
# (q/k/v biases, partial RoPE, a leading dense layer, a shared expert, routed scaling 2.5).
. "${MK_SRC:?}/tests/cli/gguf_llama.bash"
check_fixture glm4moe-a
echo "gguf_llama_glm4moe: all passed"
