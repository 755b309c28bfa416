#!/usr/bin/env bash
# ctest-labels: slow
# `convert --to gguf` against llama.cpp (gguf_llama.bash says how), llama.cpp's qwen35moe:
# qwen35moe-a, and the trained tiny-qwen35moe with 16 experts and its tokenizer (separate
# in_proj_qkv / z / a / b, the value heads reordered from grouped to tiled in rows, columns and
# vectors, MRoPE sections).
. "${MK_SRC:?}/tests/cli/gguf_llama.bash"
check_fixture qwen35moe-a
check_fixture tiny-qwen35moe
echo "gguf_llama_qwen35moe: all passed"
