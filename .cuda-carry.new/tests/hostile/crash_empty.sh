#!/usr/bin/env bash
# Issue 9 item 15: a 2-D tensor with 0 rows or 0 columns, in a checkpoint
# directory or a bare file, never crashes convert/quantize (SIGFPE before:
# plan.c divided by rows): a clean refusal naming the tensor and its shape,
# exit 2, nothing written. An empty vector in a bare file is still copied.
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash"
. "$(dirname "${BASH_SOURCE[0]}")/crash_lib.bash"
W=$T/w
mkdir "$W"

make_qwen3moe "$W/m0" 2 4
mapfile -t specs < <(qwen3moe_specs 2 4)
st_make "$W/m0/model.safetensors" "${specs[@]}" "model.extra.weight:BF16:0,64"
make_qwen3moe "$W/m1" 2 4
st_make "$W/m1/model.safetensors" "${specs[@]}" "model.extra.weight:BF16:64,0"
st_make "$W/rows0.safetensors" "w.weight:BF16:0,64"
st_make "$W/cols0.safetensors" "w.weight:BF16:64,0"
st_make "$W/stack0.safetensors" "w.weight:BF16:4,0,64"

for m in m0 m1; do
    for cmd in "convert $W/$m $W/out --to mlx" "convert $W/$m $W/out --to hf" "quantize $W/$m $W/out"; do
        snapshot "$W" all
        # shellcheck disable=SC2086
        expect 2 "model\.extra\.weight.*shape \[(0,64|64,0)\]" "$BIN" $cmd
        unchanged "$W" all
    done
done
ok "empty 2-D tensor in a checkpoint: convert/quantize refuse"

for f in rows0 cols0 stack0; do
    snapshot "$W" all
    expect 2 "w\.weight.*shape \[" "$BIN" quantize "$W/$f.safetensors" "$W/out"
    unchanged "$W" all
done
ok "bare quantize of [0,64], [64,0], [4,0,64]: clean error"

st_make "$W/vec0.safetensors" "w.weight:BF16:4,64" "v:F32:0"
expect 0 "" "$BIN" quantize "$W/vec0.safetensors" "$W/qv"
expect 0 "" "$BIN" hash "$W/qv"
grep -q '^v F32 \[0\] ' "$T/out" || { cat "$T/out" >&2; fail "empty vector not copied"; }
ok "bare quantize copies an empty vector"
