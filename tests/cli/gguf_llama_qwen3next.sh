#!/usr/bin/env bash
# ctest-labels: slow
# `convert --to gguf` against llama.cpp (gguf_llama.bash says how), llama.cpp's qwen3next:
# qwen3next-a (Gated DeltaNet layers, in_proj_qkvz split into attn_qkv / attn_gate, ssm_a =
# -exp(A_log), 1 + w norms, gated q_proj, a shared expert with its gate).
. "${MK_SRC:?}/tests/cli/gguf_llama.bash"
check_fixture qwen3next-a
echo "gguf_llama_qwen3next: all passed"
