#!/usr/bin/env bash
# Issue 9 item 7: non-finite results are errors, never success. A fixture copy
# with one weight set to NaN (or infinity) makes run / logits / eval / profile
# exit 2 naming the first layer whose output went non-finite. Baseline: logits
# wrote NaN logits and exit 0, eval --json printed nothing and exit 0.
source "$(dirname "$0")/lib.bash"
need_fixture tiny-qwen35moe/bf16
SRC=$FX/tiny-qwen35moe/bf16
head -c 4000 "$MK_SRC/README.md" > "$T/text.txt"

# poke FILE TENSOR HEX4: overwrite the first element of bf16 TENSOR in the
# single-file checkpoint FILE with the little-endian bytes HEX4 ("c07f" = NaN).
poke() {
    local f=$1 name=$2 hex=$3 hlen off
    hlen=$(od -An -tu8 -N8 "$f" | tr -d ' ')
    off=$(head -c $((8 + hlen)) "$f" | tail -c "$hlen" |
        grep -o "\"$name\":{[^}]*}" | grep -o '"data_offsets":\[[0-9]*' | grep -o '[0-9]*$')
    [ -n "$off" ] || fail "tensor $name not found in $f"
    printf "\\x${hex:0:2}\\x${hex:2:2}" |
        dd of="$f" bs=1 seek=$((8 + hlen + off)) conv=notrunc status=none
}

mkmodel() { # mkmodel NAME TENSOR HEX4
    mkdir "$T/$1"
    cp "$SRC"/* "$T/$1/"
    chmod u+w "$T/$1"/*
    poke "$T/$1/model.safetensors" "$2" "$3"
}
# the shared expert runs for every token: layer 1's MoE output is NaN everywhere
mkmodel nan model.layers.1.mlp.shared_expert.down_proj.weight c07f
# an infinite o_proj weight in the full-attention layer 3
mkmodel inf model.layers.3.self_attn.o_proj.weight 807f
N=$T/nan
L1="non-finite value \(NaN\) in the output of the MoE block of layer 1 at position 0"

expect 2 "$L1" "$BIN" logits "$N" --ids 1,2,3,4 --out "$T/l.f32"
[ ! -e "$T/l.f32" ] || fail "logits left $T/l.f32 behind"
ok "logits: NaN named (layer 1), no output file"
expect 2 "$L1" "$BIN" logits "$N" --ids 1,2,3,4 --out "$T/l2.f32" --hidden-out "$T/h.f32"
ok "logits --hidden-out: NaN named"
expect 2 "$L1" "$BIN" eval "$N" --text "$T/text.txt" --window 32 --tokens 100 --json
[ ! -s "$T/out" ] || fail "eval --json printed a result for a NaN model: $(cat "$T/out")"
ok "eval --json: NaN named, nothing on stdout"
expect 2 "$L1" "$BIN" eval "$N" --text "$T/text.txt" --window 32 --tokens 100
ok "eval: NaN named"
expect 2 "$L1" "$BIN" eval "$SRC" --ref "$N" --text "$T/text.txt" --window 32 --tokens 100
ok "eval --ref NAN-MODEL: NaN named"
expect 2 "$L1" "$BIN" run "$N" --prompt "def f" --max-tokens 4
ok "run --prompt: NaN named"
expect 2 "$L1" "$BIN" run "$N" --ids 1,2,3 --max-tokens 4 --json
ok "run --ids --json: NaN named"
expect 2 "$L1" "$BIN" profile "$N" --text "$T/text.txt" --out "$T/p.json" --window 32 --tokens 100
[ ! -e "$T/p.json" ] || fail "profile wrote $T/p.json from a NaN model"
ok "profile: NaN named, no profile written"
expect 2 "non-finite value \((NaN|infinity)\) in the output of the attention of layer 3" \
    "$BIN" logits "$T/inf" --ids 1,2,3,4 --out "$T/l3.f32"
ok "logits: infinite weight named (layer 3 attention)"
# The CUDA backend checks every block on the device and reads the first
# finding once per step (a single-token call runs the fused MoE slot): the
# same block is named. Skipped, saying why, without a usable GPU.
if "$BIN" logits "$SRC" --ids 1 --backend cuda --out "$T/c0.f32" 2> "$T/cuda.err"; then
    expect 2 "$L1" "$BIN" logits "$N" --ids 1 --backend cuda --out "$T/c1.f32"
    ok "cuda logits, one token (fused MoE, deferred check): NaN named (layer 1)"
    expect 2 "$L1" "$BIN" logits "$N" --ids 1,2,3,4 --backend cuda --out "$T/c2.f32"
    ok "cuda logits, four tokens (general MoE path): NaN named (layer 1)"
    expect 2 "non-finite value \((NaN|infinity)\) in the output of the attention of layer 3 at position 0" \
        "$BIN" logits "$T/inf" --ids 1 --backend cuda --out "$T/c3.f32"
    ok "cuda logits, one token: infinite weight named (layer 3 attention)"
    expect 2 "$L1" "$BIN" run "$N" --ids 1 --max-tokens 4 --backend cuda
    ok "cuda run: NaN named"
else
    echo "skip: cuda cases: $(tail -1 "$T/cuda.err")"
fi
# the unchanged fixture still runs
expect 0 "" "$BIN" logits "$SRC" --ids 1,2,3,4 --out "$T/l4.f32"
ok "intact model: exit 0"
