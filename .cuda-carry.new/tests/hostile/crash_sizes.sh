#!/usr/bin/env bash
# Issue 9 item 16: absurd config counts are input errors found fast. Every
# count is bounded by what the tensors support: num_hidden_layers 1e9 made
# inspect grow past 11 GB and run exit 1 "no memory"; now inspect lists one
# problem and run/convert/quantize exit 2 naming the field or tensor. The
# other counts (hidden, vocab, experts, heads, intermediate sizes) fail the
# shape check of the first tensor they size, before anything is allocated,
# and products of them do not overflow (2147483647 heads x head_dim).
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash"
. "$(dirname "${BASH_SOURCE[0]}")/crash_lib.bash"
W=$T/w
mkdir "$W"
HOSTILE_TIMEOUT=30
# Bound the address space so a regression fails here instead of eating the
# machine (not under ASan, which reserves terabytes of address space).
if ! sanitized; then ulimit -v 3000000; fi

make_qwen3moe "$W/full" 2 4
with() { # with FIELD VALUE: a copy of full with config FIELD set to VALUE
    rm -rf "$W/big"
    cp -r "$W/full" "$W/big"
    sed -i "s/\"$1\": [0-9]*/\"$1\": $2/" "$W/big/config.json"
    grep -q "\"$1\": $2" "$W/big/config.json" || fail "could not set $1"
}

with num_hidden_layers 1000000000
expect 0 "" "$BIN" inspect "$W/big"
grep -q "num_hidden_layers 1000000000, but the tensors hold 2 layers" "$T/out" ||
    { head -c 2000 "$T/out" >&2; fail "inspect: no layers problem"; }
[ "$(wc -c < "$T/out")" -lt 100000 ] || fail "inspect printed $(wc -c < "$T/out") bytes for a 2-layer checkpoint"
expect 0 "" "$BIN" inspect --json "$W/big"
expect 2 "num_hidden_layers 1000000000.*2 layers" "$BIN" run "$W/big" --ids 1,2 --max-tokens 1
expect 2 "num_hidden_layers 1000000000.*2 layers" "$BIN" convert "$W/big" "$W/o" --to mlx
expect 2 "num_hidden_layers 1000000000.*2 layers" "$BIN" quantize "$W/big" "$W/o"
[ ! -e "$W/o" ] && [ ! -e "$W/o.partial" ] || fail "output left behind"
ok "num_hidden_layers 1e9"

for f in hidden_size vocab_size num_experts moe_intermediate_size num_attention_heads head_dim; do
    for v in 1000000000 2147483646; do
        with "$f" "$v"
        expect 0 "" "$BIN" inspect "$W/big"
        expect 2 "$f|tensor '|rotary" "$BIN" run "$W/big" --ids 1,2 --max-tokens 1
        expect 2 "$f|tensor '|rotary" "$BIN" convert "$W/big" "$W/o" --to mlx
    done
done
ok "huge hidden/vocab/experts/intermediate/heads: exit 2, no allocation"

# a tensor name with an absurd layer index: inspect sized its tables by it
mapfile -t specs < <(qwen3moe_specs 2 4)
st_make "$W/full/model.safetensors" "${specs[@]}" "model.layers.1999999999.mlp.foo.weight:BF16:2,2"
expect 0 "" "$BIN" inspect "$W/full"
ok "layer index 1999999999 in a name"
