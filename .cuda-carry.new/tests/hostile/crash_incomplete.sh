#!/usr/bin/env bash
# Issue 9 item 9: convert and quantize refuse an incomplete checkpoint (a
# missing q_proj, norm, lm_head, model.norm, expert projection, or
# num_hidden_layers larger than the tensors) exactly as the engine does,
# before writing anything; inspect reports each of them as a problem, as well
# as compressed-tensors bits/group contradicting the packed shapes and an MLX
# mode contradicting the stored scales.
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash"
. "$(dirname "${BASH_SOURCE[0]}")/crash_lib.bash"

# inspect_problem DIR PATTERN: inspect exits 0 and lists a problem matching PATTERN.
inspect_problem() {
    expect 0 "" "$BIN" inspect "$1"
    grep -Eq "problems +[1-9]" "$T/out" || { cat "$T/out" >&2; fail "inspect $1: no problem listed"; }
    grep -Eq -- "$2" "$T/out" || { cat "$T/out" >&2; fail "inspect $1: no problem /$2/"; }
}

# Checkpoints and outputs live in W, so the snapshot leaves out lib.bash's $T/out, $T/err.
W=$T/w
mkdir "$W"

# refused NAME PATTERN CMD...: exit 2 naming PATTERN, nothing written, sources unchanged.
refused() {
    local pat=$2
    shift 2
    snapshot "$W" all
    expect 2 "$pat" "$@"
    unchanged "$W" all
}

make_qwen3moe "$W/full" 2 4
expect 0 "" "$BIN" inspect "$W/full"
grep -Eq "problems +0" "$T/out" || fail "the complete checkpoint shows problems"

declare -A DROP=(
    [q_proj]='layers\.1\.self_attn\.q_proj'
    [in_norm]='layers\.0\.input_layernorm'
    [model_norm]='^model\.norm\.weight'
    [lm_head]='^lm_head'
    [k_norm]='layers\.1\.self_attn\.k_norm'
)
for k in "${!DROP[@]}"; do
    make_qwen3moe "$W/$k" 2 4 "${DROP[$k]}"
    refused "$k" "tensor '[^']*' not found" "$BIN" convert "$W/$k" "$W/out_$k" --to mlx
    refused "$k" "tensor '[^']*' not found" "$BIN" convert "$W/$k" "$W/out_$k" --to hf
    refused "$k" "tensor '[^']*' not found" "$BIN" quantize "$W/$k" "$W/q_$k" --bits 4
    [ ! -e "$W/out_$k" ] && [ ! -e "$W/out_$k.partial" ] && [ ! -e "$W/q_$k.partial" ] ||
        fail "$k: output left behind"
    inspect_problem "$W/$k" "missing|not found"
    ok "missing $k: convert/quantize refuse, inspect reports"
done

# num_hidden_layers larger than the tensors hold
make_qwen3moe "$W/layers" 2 4
sed -i 's/"num_hidden_layers": 2/"num_hidden_layers": 3/' "$W/layers/config.json"
refused layers "num_hidden_layers 3.*2 layers" "$BIN" convert "$W/layers" "$W/out_layers" --to mlx
refused layers "num_hidden_layers 3.*2 layers" "$BIN" quantize "$W/layers" "$W/q_layers"
refused layers "num_hidden_layers 3.*2 layers" "$BIN" run "$W/layers" --ids 1,2 --max-tokens 1
inspect_problem "$W/layers" "num_hidden_layers 3"
ok "num_hidden_layers beyond the tensors"

# a missing expert projection: inspect used to track gate_proj only
make_qwen3moe "$W/noexp" 2 4 'layers\.1\.mlp\.experts\.2\.down_proj'
refused noexp "down_proj" "$BIN" convert "$W/noexp" "$W/out_noexp" --to mlx
inspect_problem "$W/noexp" "down_proj.*missing: 2|experts\.2\.down_proj"
ok "missing expert projection"

# compressed-tensors: group size / bits in config.json vs the packed shapes
expect 0 "" "$BIN" synth "$W/ct" --arch qwen3_moe --preset tiny --format ct-int4 --quiet
grep -q '"group_size": 32' "$W/ct/config.json" || fail "synth ct-int4 config has no group_size 32"
cp -r "$W/ct" "$W/ct_group"
sed -i 's/"group_size": 32/"group_size": 64/' "$W/ct_group/config.json"
inspect_problem "$W/ct_group" "scale|group"
refused ct_group "scale|group" "$BIN" convert "$W/ct_group" "$W/out_ct_group" --to mlx
cp -r "$W/ct" "$W/ct_bits"
sed -i 's/"num_bits": 4/"num_bits": 8/' "$W/ct_bits/config.json"
inspect_problem "$W/ct_bits" "8-bit|num_bits"
ok "compressed-tensors bits/group vs packed shapes"

# MLX: mode in config.json vs the stored scales (affine data labelled mxfp4)
expect 0 "" "$BIN" quantize "$W/full" "$W/aff" --bits 4 --group-size 32
grep -q '"mode": "affine"' "$W/aff/config.json" || fail "quantize wrote no affine mode"
sed -i 's/"mode": "affine"/"mode": "mxfp4"/' "$W/aff/config.json"
inspect_problem "$W/aff" "mxfp4|bits"
refused aff "" "$BIN" run "$W/aff" --ids 1,2 --max-tokens 1
ok "MLX mode vs scales"
