#!/usr/bin/env bash
# Issue 9 item 10: `verify` reads config.json too. A checkpoint whose config
# contradicts its own tensors (bits vs packed shape), configs of A and B that
# describe different models (a changed rope_theta, rms_norm_eps) or a config
# that does not parse are reported with exit 2, by name and by layout, even
# when every tensor byte is identical. Exit 1 stays "differences found"; 3 is
# "the comparison itself failed" (documented in --help). Baseline: exit 0
# ("identical") in every case below.
source "$(dirname "$0")/lib.bash"
need_fixture qwen3moe-a/bf16
M=$FX/qwen3moe-a/bf16

# copy SRC DST: DST with SRC's tensors (linked) and a private config.json
copy() {
    mkdir "$2"
    for f in "$1"/*; do ln -s "$f" "$2/"; done
    rm "$2/config.json"
    cp "$1/config.json" "$2/config.json"
}

# 1. by name, the other side's config describes another model
copy "$M" "$T/theta"
sed -i 's/"rope_theta": 1000000.0/"rope_theta": 10000.0/' "$T/theta/config.json"
expect 2 "rope_theta differs: 1000000 in A, 10000 in B" "$BIN" verify "$M" "$T/theta"
ok "by name: changed rope_theta -> exit 2"
copy "$M" "$T/eps"
sed -i 's/"rms_norm_eps": 1e-06/"rms_norm_eps": 1e-05/' "$T/eps/config.json"
expect 2 "rms_norm_eps differs" "$BIN" verify "$T/eps" "$M" --json
[ ! -s "$T/out" ] || fail "verify --json printed a verdict for configs that disagree"
ok "by name --json: changed rms_norm_eps -> exit 2, no verdict"

# 2. a config that does not parse is bad input, not silently ignored
copy "$M" "$T/junk"
printf '{"model_type": "qwen3_moe", "num_hidden_layers": ' > "$T/junk/config.json"
expect 2 "B: .*config.json: not valid JSON" "$BIN" verify "$M" "$T/junk"
ok "by name: malformed config.json -> exit 2"

# 3. a quantized checkpoint whose config contradicts its packed shapes, bytes identical
"$BIN" quantize "$M" "$T/q4" > /dev/null 2>&1 || fail "quantize"
copy "$T/q4" "$T/q8"
sed -i 's/"bits": 4,/"bits": 8,/g' "$T/q8/config.json" # both MLX blocks (quantization, _config)
[ "$(grep -c '"bits": 8,' "$T/q8/config.json")" -eq 2 ] || fail "bits not changed in both blocks"
expect 2 "B \(.*q8\): its config.json contradicts its tensors: module '.*': config says 8-bit group 64, .* implies 4-bit" \
    "$BIN" verify "$T/q4" "$T/q8"
ok "by name: config bits contradicting packed shapes -> exit 2"
expect 2 "A \(.*q8\): its config.json contradicts its tensors" "$BIN" verify "$T/q8" "$T/q8"
ok "by name: A against itself with a contradicting config -> exit 2"

# the two MLX blocks disagreeing: whichever one is read, the other is hidden
copy "$T/q4" "$T/qmix"
sed -i '0,/"bits": 4,/s//"bits": 8,/' "$T/qmix/config.json"
expect 2 "quantization and quantization_config differ" "$BIN" verify "$T/q4" "$T/qmix"
ok "by name: quantization vs quantization_config disagreeing -> exit 2"

# 4. by layout: HF vs its MLX conversion whose config was changed
"$BIN" convert "$M" "$T/mlx" --to mlx --quiet > /dev/null 2>&1 || fail "convert"
expect 0 "" "$BIN" verify "$M" "$T/mlx"
sed -i 's/"rope_theta": 1000000.0/"rope_theta": 500000.0/' "$T/mlx/config.json"
grep -q '"rope_theta": 500000.0' "$T/mlx/config.json" || fail "mlx config: rope_theta not changed"
expect 2 "rope_theta differs: 1000000 in A, 500000 in B" "$BIN" verify "$M" "$T/mlx"
ok "by layout: changed rope_theta -> exit 2"

# 5. differences found stay exit 1, and --help documents 1 vs 3
copy "$M" "$T/same"
expect 0 "" "$BIN" verify "$M" "$T/same"
"$BIN" verify --help > "$T/help"
grep -q "1 differences found" "$T/help" && grep -q "3 the comparison itself failed" "$T/help" ||
    fail "verify --help does not document exit 1 vs 3"
ok "verify --help documents exit 1 (differences) vs 3 (no verdict)"
