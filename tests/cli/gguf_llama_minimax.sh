#!/usr/bin/env bash
# ctest-labels: slow
# `convert --to gguf` against llama.cpp (gguf_llama.bash says how), llama.cpp's minimax-m2:
# minimaxm2-a (per-expert w1/w3/w2 stacked, whole-projection q/k norms, sigmoid routing with
# exp_probs_b).
. "${MK_SRC:?}/tests/cli/gguf_llama.bash"
check_fixture minimaxm2-a
echo "gguf_llama_minimax: all passed"
