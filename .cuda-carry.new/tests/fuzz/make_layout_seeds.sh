#!/usr/bin/env bash
# Seeds of fuzz_ckpt_layouts: for every shared fixture checkpoint and a few
# `moekit synth` / `moekit quantize` outputs, [u16 LE config length][config
# JSON][u32 LE data length][safetensors header JSON], i.e. the checkpoint
# with its data cut off. Regenerate with:
#   bash tests/fuzz/make_layout_seeds.sh BUILD_DIR [FIXTURES_DIR]
set -euo pipefail
B=${1:?build dir}
HERE=$(cd "$(dirname "$0")" && pwd)
FX=${2:-$HERE/../../../shared/fixtures}
OUT=$HERE/corpus/fuzz_ckpt_layouts
mkdir -p "$OUT"
W=$(mktemp -d "${TMPDIR:-/tmp}/mk-seeds-XXXXXX")
trap 'rm -rf "$W"' EXIT
seed() { # NAME CHECKPOINT_DIR
    node -e '
const fs = require("fs"), path = require("path");
const dir = process.argv[1], out = process.argv[2];
const st = fs.readdirSync(dir).filter(f => f.endsWith(".safetensors"));
if (st.length !== 1) process.exit(0);   // one-file checkpoints only
const cfg = fs.readFileSync(path.join(dir, "config.json"));
const fd = fs.openSync(path.join(dir, st[0]), "r");
const b8 = Buffer.alloc(8); fs.readSync(fd, b8, 0, 8, 0);
const n = Number(b8.readBigUInt64LE(0));
const hdr = Buffer.alloc(n); fs.readSync(fd, hdr, 0, n, 8);
const dlen = fs.fstatSync(fd).size - 8 - n;
if (dlen > 16 * 1024 * 1024 || cfg.length > 65535) process.exit(0);
const a = Buffer.alloc(2); a.writeUInt16LE(cfg.length);
const c = Buffer.alloc(4); c.writeUInt32LE(dlen);
fs.writeFileSync(out, Buffer.concat([a, cfg, c, hdr]));
' "$2" "$OUT/$1"
}
for d in "$FX"/*/; do
    for v in bf16 bf16-fused fp8; do
        [ -f "$d$v/config.json" ] && seed "fixture-$(basename "$d")-$v" "$d$v"
    done
done
for a in qwen3_moe qwen3_next qwen3_5_moe deepseek_v3; do
    for f in bf16 fp8 ct-int4; do
        "$B/moekit" synth "$W/$a-$f" --arch "$a" --preset tiny --format "$f" --quiet
        seed "synth-$a-$f" "$W/$a-$f"
    done
    "$B/moekit" quantize "$W/$a-bf16" "$W/$a-q4" --bits 4 --quiet > /dev/null
    seed "mlx-$a-q4" "$W/$a-q4"
    "$B/moekit" convert "$W/$a-bf16" "$W/$a-fused" --to hf --experts fused --quiet
    seed "synth-$a-fused" "$W/$a-fused"
done
"$B/moekit" synth "$W/vl" --arch qwen3_5_moe --preset tiny --format bf16 --vl --quiet
seed synth-vl "$W/vl"
ls "$OUT" | wc -l
