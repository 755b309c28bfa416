#!/usr/bin/env bash
# Where 8-bit quality goes on the trained tiny-qwen35moe (issue 5): `moekit
# eval --ref` (mean KL(bf16 || variant), p99, top-1 agreement, perplexity)
# for the full 8-bit g64 model and for variants that quantize one class of
# modules at a time, everything else float. Not a test: it measures, and
# its numbers go to bench/RESULTS.md with the machine and date it prints.
#
# Variants (all MLX-exact, `moekit quantize`; routers are 8-bit g64 in every
# quantized variant, as issue 5 mandates):
#   mlx-bf16      convert --to mlx, no quantization (mlx-lm stores the
#                 zero-centred norms as bf16(1 + w))
#   mlx-f32       the same in f32 (the shift is exact)
#   8bit          quantize --bits 8 --group-size 64 (bf16 scales/biases)
#   8bit-f32      the same with f32 scales/biases and f32 float tensors
#   routers       f32 model, only mlp.gate / shared_expert_gate 8-bit
#   +X            f32 model, routers and class X 8-bit
# usage: bench/quality_tiny.sh BUILD_DIR [TOKENS]
set -euo pipefail
B=${1:?build dir}
N=${2:-4096}
BIN=$B/moekit
FX=${MK_FIXTURES:-$(cd "$(dirname "$0")/../.." && pwd)/shared/fixtures}
TINY=$FX/tiny-qwen35moe/bf16
TXT=$FX/tiny-qwen35moe/devtext.txt
W=$(mktemp -d "${TMPDIR:-/tmp}/mk-qual-XXXXXX")
trap 'rm -rf "$W"' EXIT
echo "machine: $(nproc) cores, $(uname -sr); date: $(date -u +%Y-%m-%dT%H:%MZ); commit: $(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "eval over the first $N tokens of devtext.txt (windows of 256), reference: the bf16 HF fixture"

ev() { # NAME DIR
    "$BIN" eval "$2" --ref "$TINY" --text "$TXT" --tokens "$N" --json |
        node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const j=JSON.parse(s);
          console.log(process.argv[1].padEnd(14), "KL", j.ref.kl_mean.toExponential(3), " p99", j.ref.kl_p99.toExponential(3),
                      " top-1", (100*j.ref.top1_agreement).toFixed(2)+"%", " ppl", j.ppl.toFixed(4), "(ref", j.ref.ppl.toFixed(4)+")")})' "$1"
}
q() { local n=$1; shift; "$BIN" quantize "$TINY" "$W/$n" --quiet "$@" > /dev/null; ev "$n" "$W/$n"; rm -rf "${W:?}/$n"; }

"$BIN" convert "$TINY" "$W/m" --to mlx --quiet; ev mlx-bf16 "$W/m"; rm -rf "$W/m"
"$BIN" convert "$TINY" "$W/m" --to mlx --dtype f32 --quiet; ev mlx-f32 "$W/m"; rm -rf "$W/m"
q 8bit --bits 8 --group-size 64
q 8bit-f32 --bits 8 --group-size 64 --dtype f32
q routers --bits 8 --dtype f32 --override '.=float'
q +embed --bits 8 --dtype f32 --override '.=float' --override 'embed_tokens=8'
q +lm_head --bits 8 --dtype f32 --override '.=float' --override 'lm_head=8'
q +attention --bits 8 --dtype f32 --override '.=float' --override '(self_attn|linear_attn)=8'
q +experts --bits 8 --dtype f32 --override '.=float' --override 'switch_mlp=8'
q +shared --bits 8 --dtype f32 --override '.=float' --override 'shared_expert\.=8'
q 4bit --bits 4 --group-size 64
