#!/usr/bin/env bash
# 4-bit quality beyond MLX's, inside MLX's affine format (issue 15 item 2):
# plain 4-bit g64, the profile allocation, and the calibrated methods alone
# and combined, on the trained tiny-qwen35moe. Calibration (profile and
# --hessian) on the second half of devtext.txt (20000 tokens); evaluation
# `moekit eval --ref bf16` on the first 2048 tokens, never seen by the
# calibration. bpw is measured from each written checkpoint over the
# profiled modules (weights + scales + biases), as profile_alloc_kl.sh does.
# Prints one markdown row per variant: bpw, mean KL, p99 KL, top-1, ppl,
# quantize seconds and peak RSS.
# usage: bash bench/quality_gptq.sh BUILD_DIR [WORK_DIR]
set -euo pipefail
B=${1:?build dir}/moekit
W=${2:-$(mktemp -d "${TMPDIR:-/tmp}/mk-qgptq-XXXXXX")}
S=$(cd "$(dirname "$0")/.." && pwd)
TINY=$S/models/tiny-qwen35moe/bf16
TXT=$S/models/tiny-qwen35moe/devtext.txt
mkdir -p "$W"
tail -c +$(($(wc -c < "$TXT") / 2)) "$TXT" > "$W/calib.txt"
if [ ! -f "$W/h.safetensors" ]; then
    /usr/bin/time -f "%e %M" -o "$W/prof.time" "$B" profile "$TINY" --text "$W/calib.txt" --tokens 20000 \
        --threads 2 --quiet --out "$W/p.json" --hessian "$W/h.safetensors" > "$W/prof.log"
    echo "profile + hessian: $(cat "$W/prof.time") (s, KB); $(grep '^wrote.*second moments' "$W/prof.log")"
fi
bpw() {
    node -e '
const fs = require("fs"), path = require("path");
const p = JSON.parse(fs.readFileSync(process.argv[1], "utf8")), dir = process.argv[2];
const params = new Map(), stacks = new Map();
for (const t of p.tensors) { params.set(t.name, t.params); if (t.stack) stacks.set(t.stack, (stacks.get(t.stack) || 0) + t.params); }
let bytes = 0;
for (const f of fs.readdirSync(dir).filter((f) => f.endsWith(".safetensors"))) {
  const fd = fs.openSync(path.join(dir, f), "r"), b8 = Buffer.alloc(8);
  fs.readSync(fd, b8, 0, 8, 0);
  const n = Number(b8.readBigUInt64LE(0)), hb = Buffer.alloc(n);
  fs.readSync(fd, hb, 0, n, 8);
  fs.closeSync(fd);
  for (const [name, t] of Object.entries(JSON.parse(hb.toString("utf8")))) {
    if (name === "__metadata__") continue;
    const mod = name.replace(/\.(weight|scales|biases)$/, "");
    if (params.has(mod) || stacks.has(mod)) bytes += t.data_offsets[1] - t.data_offsets[0];
  }
}
console.log((8 * bytes / p.tensors.reduce((a, t) => a + t.params, 0)).toFixed(4));
' "$W/p.json" "$1"
}
row() { # name, then quantize flags
    local name=$1
    shift
    /usr/bin/time -f "%e %M" -o "$W/q.time" "$B" quantize "$TINY" "$W/q" --threads 2 --quiet --force "$@" > /dev/null
    local j
    j=$("$B" eval "$W/q" --ref "$TINY" --text "$TXT" --tokens 2048 --threads 2 --json | tail -1)
    node -e '
const j = JSON.parse(process.argv[1]), [s, kb] = process.argv[3].trim().split(" ");
console.log(`| ${process.argv[2]} | ${process.argv[4]} | ${j.ref.kl_mean.toFixed(4)} | ${j.ref.kl_p99.toFixed(3)} | ${(100 * j.ref.top1_agreement).toFixed(2)}% | ${j.ppl.toFixed(3)} | ${s} | ${(kb / 1024).toFixed(0)} |`);
' "$j" "$name" "$(cat "$W/q.time")" "$(bpw "$W/q")"
}
H="--hessian $W/h.safetensors"
P="--profile $W/p.json"
echo "| variant | bpw | mean KL | p99 KL | top-1 | ppl (bf16 44.000) | quantize s | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|"
row "plain 4-bit g64 (rtn, routers 8-bit)" --bits 4
row "4-bit g64, --method mse" --bits 4 --method mse $H
row "4-bit g64, --method gptq" --bits 4 --method gptq $H
row "4-bit g64, --method gptq-mse" --bits 4 --method gptq-mse $H
row "4-bit g64, --method gptq-act" --bits 4 --method gptq-act $H
row "4-bit g64, --method gptq-opt" --bits 4 --method gptq-opt $H
for t in 4.5 4.6; do
    row "allocation --target-bpw $t (today)" --target-bpw $t $P
    row "allocation $t + --class-weights learned" --target-bpw $t $P --class-weights learned
    row "allocation $t + learned + gptq-mse" --target-bpw $t $P --class-weights learned --method gptq-mse $H
    row "allocation $t + learned + gptq-opt" --target-bpw $t $P --class-weights learned --method gptq-opt $H
done
