#!/usr/bin/env bash
# ctest-labels: slow
# `convert --to gguf` against llama.cpp (gguf_llama.bash says how), llama.cpp's deepseek32:
# deepseekv32-a (DeepSeek-V3.2: deepseek2's MLA and MoE plus the lightning indexer in every layer,
# its RoPE half-split; 32 tokens against index_topk 24, so the indexer's selection decides the
# attention of the last 8 positions).
. "${MK_SRC:?}/tests/cli/gguf_llama.bash"
check_fixture deepseekv32-a
echo "gguf_llama_deepseek32: all passed"
