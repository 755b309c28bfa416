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
  "$MK" convert "$MODEL/bf16" "$OUT/mlx" --to mlx
  "$MK" inspect "$OUT/mlx" | head -8
fi
if has quantize; then
  step "quantize to MLX 4-bit (routers stay 8-bit)"
  "$MK" quantize "$MODEL/bf16" "$OUT/q4" --bits 4 --group-size 64
fi
if has run; then
  step "generate with the CPU engine"
  for p in "Return the" "def fibonacci(n):"; do
    "$MK" run "$MODEL/bf16" --prompt "$p" --max-tokens 40 --stats || "$MK" run "$MODEL/bf16" --ids 3,4,5 --max-tokens 16
  done
  if [ -d "$OUT/q4" ]; then
    step "same prompt on the 4-bit model"
    "$MK" run "$OUT/q4" --prompt "Return the" --max-tokens 40 --stats || true
  fi
fi
step "done: outputs in $OUT"
