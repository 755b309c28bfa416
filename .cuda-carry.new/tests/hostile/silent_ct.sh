#!/usr/bin/env bash
# Issue 9 item 11: every compressed-tensors field that convert and the engine
# do not implement is refused by both, exit 2, with the same message (one
# function, format/config_check.c: mk_ct_check). Baseline: convert accepted
# type float, strategy channel, format int-quantized, symmetric false without
# zero points and group_size 0 (inferring or ignoring them), the engine most
# of them; their messages differed.
source "$(dirname "$0")/lib.bash"
W=$T/m # models and outputs; $T also holds the test's own files
mkdir "$W"
"$BIN" synth "$W/ct" --arch qwen3_moe --preset tiny --format ct-int4 --layers 2 --experts 4 \
    --vocab 256 > /dev/null 2>&1 || fail "synth ct-int4"
"$BIN" synth "$W/cta" --arch qwen3_moe --preset tiny --format ct-int4-asym --layers 2 \
    --experts 4 --vocab 256 > /dev/null 2>&1 || fail "synth ct-int4-asym"

# variant NAME BASE SED-EXPR: BASE's weights with an edited config.json
variant() {
    mkdir "$W/$1"
    ln -s "$W/$2/model.safetensors" "$W/$1/"
    sed -e "$3" "$W/$2/config.json" > "$W/$1/config.json"
    cmp -s "$W/$2/config.json" "$W/$1/config.json" && fail "variant $1: sed changed nothing"
    return 0
}
# both NAME PATTERN: convert and the engine refuse variant NAME, exit 2, the
# same message (the model path and which module was met first aside), matching PATTERN; convert leaves nothing.
both() {
    snapshot "$W" "$1"
    expect 2 "$2" "$BIN" convert "$W/$1" "$W/$1.out" --to mlx
    local m1
    m1=$(grep -o "compressed-tensors.*" "$T/err" | sed "s/module '[^']*'/module M/")
    [ ! -e "$W/$1.out" ] || fail "$1: convert left $W/$1.out"
    expect 2 "$2" "$BIN" logits "$W/$1" --ids 1,2,3 --out "$W/$1.f32"
    local m2
    m2=$(grep -o "compressed-tensors.*" "$T/err" | sed "s/module '[^']*'/module M/")
    [ "$m1" = "$m2" ] || fail "$1: convert and the engine say different things:
  convert: $m1
  engine:  $m2"
    expect 2 "$2" "$BIN" quantize "$W/$1" "$W/$1.q"
    [ ! -e "$W/$1.q" ] || fail "$1: quantize left $W/$1.q"
    unchanged "$W" "$1"
    ok "$1: convert, quantize and the engine refuse it alike: $m1"
}
variant type_float ct 's/"type": "int"/"type": "float"/'
both type_float "compressed-tensors weights.type: 'float' is not implemented"
variant strategy_channel ct 's/"strategy": "group"/"strategy": "channel"/'
both strategy_channel "compressed-tensors weights.strategy: 'channel' is not implemented"
variant int_quantized ct 's/"format": "pack-quantized"/"format": "int-quantized"/'
both int_quantized "compressed-tensors format: 'int-quantized' is not implemented"
variant group0 ct 's/"group_size": 32/"group_size": 0/'
both group0 "compressed-tensors weights.group_size: 0 is not implemented"
variant asym_nozp ct 's/"symmetric": true/"symmetric": false/'
both asym_nozp "compressed-tensors weights.symmetric: false but module '.*' has no weight_zero_point"
variant sym_zp cta 's/"symmetric": false/"symmetric": true/'
both sym_zp "compressed-tensors weights.symmetric: true but module '.*' has a weight_zero_point"
variant bits8 ct 's/"num_bits": 4/"num_bits": 8/'
both bits8 "compressed-tensors weights.num_bits: 8 is not implemented"

# the synthetic checkpoints themselves convert and run
expect 0 "" "$BIN" convert "$W/ct" "$W/ct.mlx" --to mlx
expect 0 "" "$BIN" logits "$W/ct" --ids 1,2,3 --out "$W/ct.f32"
expect 0 "" "$BIN" logits "$W/cta" --ids 1,2,3 --out "$W/cta.f32"
ok "valid compressed-tensors checkpoints still convert and run"
