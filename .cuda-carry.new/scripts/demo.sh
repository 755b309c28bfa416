#!/usr/bin/env bash
# `make demo`: the main job on the embedded demo model (models/tiny-qwen35moe,
# a small trained Qwen3.5-MoE with its tokenizer). Each step runs only when
# the command exists in this build, so the demo grows with the project.
set -euo pipefail
MK="${1:?moekit binary}"; MODEL="${2:?model dir}"
OUT="${DEMO_OUT:-build/demo}"
has() { "$MK" --help | grep -q "^  $1 "; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "inspect $MODEL"
"$MK" inspect "$MODEL/bf16"

step "reshard into 4 MiB shards and verify every tensor is byte-identical"
rm -rf "$OUT"; mkdir -p "$OUT"
"$MK" reshard "$MODEL/bf16" "$OUT/resharded" --shard-size 4M
"$MK" verify "$MODEL/bf16" "$OUT/resharded" --quiet

if has convert; then
  step "convert to MLX layout and verify"
  "$MK" convert "$MODEL/bf16" "$OUT/mlx" --to mlx --verify
  "$MK" inspect "$OUT/mlx" | head -8
  step "verify across layouts: every HF tensor and expert, as MLX stores it, equals the MLX output"
  "$MK" verify "$MODEL/bf16" "$OUT/mlx" --quiet
fi
if has quantize; then
  step "quantize to MLX 4-bit (routers stay 8-bit)"
  "$MK" quantize "$MODEL/bf16" "$OUT/q4" --bits 4 --group-size 64 --report "$OUT/q4-report.json" | tail -5
  if has eval; then
    step "the collapse test: 4-bit vs bf16 (KL divergence, top-1 agreement)"
    "$MK" eval "$OUT/q4" --ref "$MODEL/bf16" --text "$MODEL/devtext.txt" --tokens 2048
  fi
fi
if has run; then
  step "generate with the CPU engine (greedy, from the bf16 checkpoint)"
  "$MK" run "$MODEL/bf16" --prompt "Return the" --max-tokens 48 --stats
  if [ -d "$OUT/mlx" ]; then
    step "chat with the converted MLX checkpoint (ChatML template from tokenizer_config.json)"
    "$MK" run "$OUT/mlx" --chat --system "You are a helpful assistant." \
      --prompt "How do I sort a list in Python?" --max-tokens 64 --stats
  fi
  if [ -d "$OUT/q4" ]; then
    step "same prompt on the 4-bit model"
    "$MK" run "$OUT/q4" --prompt "Return the" --max-tokens 48 --stats
  fi
fi
if has eval; then
  step "perplexity on the first 2,048 tokens of the model's dev text"
  "$MK" eval "$MODEL/bf16" --text "$MODEL/devtext.txt" --tokens 2048
fi
step "done: outputs in $OUT"
