#!/usr/bin/env bash
# verify A B across layouts ("B is A written in B's layout and dtype"), on real fixtures:
#  - per-expert vs fused: every unit identical, expert units = layers x experts x 3 (config.json);
#  - HF vs its `convert --to mlx` (shifted norms, conv1d, switch_mlp; VL: vision skipped), both
#    directions through MLX, `--dtype f32`, FP8 vs its `convert --to hf`;
#  - one flipped byte in one expert's slice of a fused down_proj: exit 1 naming that expert unit;
#  - deleted tensors (an expert, a norm): exit 1 naming the missing units;
#  - HF vs `quantize --bits 4`: exit 1 at the default tolerance, 0 with --tolerance 0.2;
#  - unreadable B: exit 2, one line naming the file.
set -u
MK="${MK_BIN:?}"; . "${MK_SRC:?}/tests/cli/fixtures.bash"; need_fixtures
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
source "${MK_SRC:?}/tests/cli/lib.bash"
VL="$FX/qwen35moe-vl"

# verify ARGS...: run, keep stdout in $T/v, return verify's exit code
V() { "$MK" verify "$@" > "$T/v" 2> "$T/verr"; }
# summary field of the by-layout JSON in $T/v
J() { node -e 'const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).summary;
  const v = s[process.argv[2]]; console.log(typeof v === "object" ? JSON.stringify(v) : v);' "$T/v" "$1"; }

# ---- per-expert vs fused: identical unit by unit, every expert counted
V "$VL/bf16" "$VL/bf16-fused" --json; rc=$?
[ "$rc" -eq 0 ] || fail "per-expert vs fused: exit $rc"
[ "$(J mode)" = by-layout ] || fail "per-expert vs fused did not compare by layout"
want=$(node -e 'const c = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); const t = c.text_config || c;
  console.log(t.num_hidden_layers * (t.num_experts || t.num_local_experts) * 3)' "$VL/bf16/config.json")
[ "$(J experts_compared)" -eq "$want" ] || fail "expert units compared: $(J experts_compared), config says $want"
[ "$(J identical)" -eq "$(J compared)" ] || fail "per-expert vs fused: $(J identical) of $(J compared) identical"
[ "$(J skipped)" -eq 0 ] && [ "$(J missing)" -eq 0 ] || fail "per-expert vs fused: skipped/missing units"
V "$VL/bf16" "$VL/bf16-fused"; rc=$?
[ "$rc" -eq 0 ] || fail "per-expert vs fused (text): exit $rc"
grep -q '^ok  *model\.layers\.3\.mlp\.experts\.7\.up_proj\.weight  (identical)$' "$T/v" || fail "no per-expert unit line"
echo "ok: per-expert vs fused, $want expert units identical"

# ---- HF vs convert --to mlx
for m in qwen35moe-a qwen3moe-a deepseekv3-a; do
    "$MK" convert "$FX/$m/bf16" "$T/$m-mlx" --to mlx --quiet || fail "convert $m"
    V "$FX/$m/bf16" "$T/$m-mlx" --quiet; rc=$?
    [ "$rc" -eq 0 ] || fail "$m HF vs MLX: exit $rc: $(cat "$T/v")"
    grep -q 'A hf, B mlx.* 0 differ, 0 missing .*-> PASS' "$T/v" || fail "$m summary: $(cat "$T/v")"
done
# the norm shift is applied: MLX stores 1+w (other bytes), verify still calls the unit identical
h1=$("$MK" hash "$FX/qwen35moe-a/bf16" | awk '$1 == "model.layers.0.input_layernorm.weight" {print $4}')
h2=$("$MK" hash "$T/qwen35moe-a-mlx" | awk '$1 == "language_model.model.layers.0.input_layernorm.weight" {print $4}')
[ -n "$h1" ] && [ -n "$h2" ] && [ "$h1" != "$h2" ] || fail "MLX norm bytes should differ from HF ($h1 / $h2)"
V "$FX/qwen35moe-a/bf16" "$T/qwen35moe-a-mlx"
grep -q '^ok  *model\.layers\.0\.input_layernorm\.weight  (identical)$' "$T/v" || fail "shifted norm not identical"
grep -q '^ok  *model\.layers\.0\.linear_attn\.conv1d\.weight  (identical)$' "$T/v" || fail "conv1d not identical"
# and back: MLX -> convert --to hf is MLX in HF layout (shift -1)
"$MK" convert "$T/qwen35moe-a-mlx" "$T/a35-back" --to hf --quiet || fail "convert back to hf"
V "$T/qwen35moe-a-mlx" "$T/a35-back" --quiet || fail "MLX vs its HF conversion: $(cat "$T/v")"
grep -q 'A mlx, B hf' "$T/v" || fail "layouts not reported: $(cat "$T/v")"
echo "ok: HF vs MLX (qwen35moe-a, qwen3moe-a, deepseekv3-a) and back"

# vision-language: the vision tower is dropped by --to mlx: skipped, not failed
"$MK" convert "$VL/bf16" "$T/vl-mlx" --to mlx --quiet || fail "convert vl"
V "$VL/bf16" "$T/vl-mlx"; rc=$?
[ "$rc" -eq 0 ] || fail "VL HF vs MLX: exit $rc"
nvis=$(grep -c '^skip  *model\.visual\..*(only in A: vision tower, not compared)$' "$T/v")
[ "$nvis" -gt 0 ] || fail "no vision unit reported as skipped"
! grep -q '^FAIL' "$T/v" || fail "VL HF vs MLX has failures"
grep -q "$nvis skipped ($nvis vision)" "$T/v" || fail "summary does not count $nvis vision skips: $(tail -1 "$T/v")"
V "$VL/bf16" "$T/vl-mlx" --json || fail "VL json"
[ "$(J skipped_reasons)" = "{\"vision\":$nvis,\"mtp\":0,\"tied lm_head\":0,\"buffer\":0}" ] ||
    fail "skip reasons: $(J skipped_reasons)"
echo "ok: VL HF vs MLX, $nvis vision units skipped"

# multi-token prediction dropped by --to mlx: skipped (synthetic VL checkpoint with mtp.*)
"$MK" synth "$T/mtp" --arch qwen3_5_moe --preset tiny --format bf16 --vl --mtp --quiet --threads 2 || fail "synth"
"$MK" convert "$T/mtp" "$T/mtp-mlx" --to mlx --quiet || fail "convert mtp"
V "$T/mtp" "$T/mtp-mlx" --json || fail "HF+MTP vs MLX: exit $?"
node -e 'const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).summary;
  if (!(s.skipped_reasons.mtp > 0 && s.skipped_reasons.vision > 0 && s.skipped === s.skipped_reasons.mtp +
        s.skipped_reasons.vision && s.failed === 0 && s.missing === 0)) throw new Error(JSON.stringify(s));' "$T/v" ||
    fail "mtp/vision skips"
# lm_head absent where embeddings are tied: skipped; absent while untied: missing
cp -r "$FX/qwen3moe-a/bf16" "$T/tied"; chmod -R u+w "$T/tied"
sed -i 's/"tie_word_embeddings": false/"tie_word_embeddings": true/' "$T/tied/config.json"
grep -q '"tie_word_embeddings": true' "$T/tied/config.json" || fail "could not tie the config"
"$MK" convert "$T/tied" "$T/tied-mlx" --to mlx --quiet || fail "convert tied"
V "$T/tied" "$T/tied-mlx" || fail "tied HF vs MLX without lm_head: $(cat "$T/v")"
grep -q '^skip  *lm_head\.weight  (only in A: lm_head, tied' "$T/v" || fail "tied lm_head not skipped"
# both configs untied (configs that disagree on tying are refused, exit 2, below)
sed -i 's/"tie_word_embeddings": true/"tie_word_embeddings": false/' "$T/tied-mlx/config.json" "$T/tied/config.json"
V "$T/tied" "$T/tied-mlx" --quiet; rc=$?
[ "$rc" -eq 1 ] && grep -q '^FAIL  *lm_head\.weight  (only in A: lm_head.weight BF16' "$T/v" ||
    fail "untied side without lm_head should fail (exit $rc): $(cat "$T/v")"
sed -i 's/"tie_word_embeddings": false/"tie_word_embeddings": true/' "$T/tied/config.json"
V "$T/tied" "$T/tied-mlx" --quiet; rc=$?
[ "$rc" -eq 2 ] && grep -q 'tie_word_embeddings differs' "$T/verr" ||
    fail "configs disagreeing on tie_word_embeddings should be refused (exit $rc): $(cat "$T/verr")"
echo "ok: mtp, vision and tied lm_head skipped; untied missing lm_head fails"

# ---- dtype and FP8
"$MK" convert "$FX/qwen35moe-a/bf16" "$T/a35-f32" --to mlx --dtype f32 --quiet || fail "convert f32"
V "$FX/qwen35moe-a/bf16" "$T/a35-f32" --quiet || fail "HF bf16 vs MLX f32: $(cat "$T/v")"
"$MK" convert "$FX/qwen3moe-odd/fp8" "$T/odd-hf" --to hf --quiet || fail "convert fp8 to hf"
V "$FX/qwen3moe-odd/fp8" "$T/odd-hf" --json || fail "FP8 vs its HF conversion: exit $?"
[ "$(J identical)" -eq "$(J compared)" ] || fail "FP8 -> bf16 not identical unit by unit"
echo "ok: --dtype f32, FP8 vs convert --to hf"

# ---- corruption: one byte of expert 5's slice of layer 2's fused down_proj
cp -r "$VL/bf16-fused" "$T/flip"; chmod -R u+w "$T/flip"
off=$(node -e '
const fs = require("fs"), f = process.argv[1], fd = fs.openSync(f, "r"), b8 = Buffer.alloc(8);
fs.readSync(fd, b8, 0, 8, 0);
const n = Number(b8.readBigUInt64LE(0)), hb = Buffer.alloc(n);
fs.readSync(fd, hb, 0, n, 8);
const t = JSON.parse(hb.toString())["model.language_model.layers.2.mlp.experts.down_proj"];
if (!t || t.dtype !== "BF16" || t.shape.length !== 3) throw new Error("no fused down_proj");
const per = t.shape[1] * t.shape[2];            // values of one expert [H, I]
console.log(8 + n + t.data_offsets[0] + (5 * per + 77) * 2 + 1);  // high byte of value 77 of expert 5
' "$T/flip/model.safetensors") || fail "offset"
old=$(od -An -tu1 -j "$off" -N1 "$T/flip/model.safetensors" | tr -d ' ')
printf "\\x$(printf %02x $((old ^ 64)))" | dd of="$T/flip/model.safetensors" bs=1 seek="$off" conv=notrunc status=none
V "$VL/bf16" "$T/flip" --quiet; rc=$?
[ "$rc" -eq 1 ] || fail "flipped expert byte: exit $rc, expected 1"
[ "$(grep -c '^FAIL' "$T/v")" -eq 1 ] || fail "exactly one unit should fail: $(cat "$T/v")"
grep -q '^FAIL  *model\.layers\.2\.mlp\.experts\.5\.down_proj\.weight .*experts\.down_proj BF16 \[8,256,128\]\[5\]' "$T/v" ||
    fail "failure does not name expert 5 of layer 2: $(cat "$T/v")"
V "$VL/bf16-fused" "$T/flip" --by-layout --quiet; rc=$?
[ "$rc" -eq 1 ] || fail "fused vs flipped --by-layout: exit $rc"
grep -q '^FAIL  *model\.layers\.2\.mlp\.experts\.5\.down_proj\.weight ' "$T/v" || fail "--by-layout: $(cat "$T/v")"
echo "ok: flipped byte -> model.layers.2.mlp.experts.5.down_proj.weight"

# ---- deleted tensors: the file rebuilt without an expert and a norm
cp -r "$VL/bf16" "$T/del"; chmod -R u+w "$T/del"
node -e '
const fs = require("fs"), f = process.argv[1], buf = fs.readFileSync(f);
const n = Number(buf.readBigUInt64LE(0)), h = JSON.parse(buf.subarray(8, 8 + n).toString());
const drop = new Set(process.argv.slice(2)), out = {}, parts = [];
let at = 0;
if (h.__metadata__) out.__metadata__ = h.__metadata__;
const names = Object.keys(h).filter(k => k !== "__metadata__").sort((a, b) => h[a].data_offsets[0] - h[b].data_offsets[0]);
for (const k of names) {
  const v = h[k];
  if (drop.has(k)) { drop.delete(k); continue; }
  const d = buf.subarray(8 + n + v.data_offsets[0], 8 + n + v.data_offsets[1]);
  out[k] = {dtype: v.dtype, shape: v.shape, data_offsets: [at, at + d.length]};
  parts.push(d); at += d.length;
}
if (drop.size) throw new Error("not found: " + [...drop]);
let hs = JSON.stringify(out); while ((hs.length + 8) % 8) hs += " ";
const len = Buffer.alloc(8); len.writeBigUInt64LE(BigInt(hs.length));
fs.writeFileSync(f, Buffer.concat([len, Buffer.from(hs), ...parts]));
' "$T/del/model.safetensors" model.language_model.layers.1.mlp.experts.3.up_proj.weight \
  model.language_model.layers.0.post_attention_layernorm.weight || fail "rebuild without tensors"
"$MK" hash "$T/del" >/dev/null || fail "rebuilt checkpoint does not read"
V "$VL/bf16" "$T/del" --quiet; rc=$?
[ "$rc" -eq 1 ] || fail "deleted tensors: exit $rc, expected 1"
[ "$(grep -c '^FAIL' "$T/v")" -eq 2 ] || fail "exactly two units should be missing: $(cat "$T/v")"
grep -q '^FAIL  *model\.layers\.1\.mlp\.experts\.3\.up_proj\.weight  (only in A: ' "$T/v" || fail "missing expert: $(cat "$T/v")"
grep -q '^FAIL  *model\.layers\.0\.post_attention_layernorm\.weight  (only in A: ' "$T/v" || fail "missing norm: $(cat "$T/v")"
grep -q '2 missing (2 only in A, 0 only in B)' "$T/v" || fail "summary: $(tail -1 "$T/v")"
V "$T/del" "$VL/bf16-fused" --quiet; rc=$?
[ "$rc" -eq 1 ] || fail "reverse: exit $rc"
grep -q '^FAIL  *model\.layers\.1\.mlp\.experts\.3\.up_proj\.weight  (only in B: .*experts\.gate_up_proj BF16 \[8,256,256\]\[3\]\[128:256\])' \
    "$T/v" || fail "reverse missing expert: $(cat "$T/v")"
echo "ok: deleted expert and norm named as missing units"

# ---- quantized B needs an explicit tolerance
"$MK" quantize "$FX/qwen35moe-a/bf16" "$T/q4" --bits 4 --quiet >/dev/null 2>&1 || fail "quantize"
V "$FX/qwen35moe-a/bf16" "$T/q4" --quiet; rc=$?
[ "$rc" -eq 1 ] || fail "HF vs 4-bit at tolerance 0: exit $rc, expected 1"
grep -q '^FAIL  *model\.layers\.0\.mlp\.experts\.0\.down_proj\.weight .*affine 4-bit g64 \[8,256,128\]\[0\]' "$T/v" ||
    fail "4-bit failure line: $(head -3 "$T/v")"
V "$FX/qwen35moe-a/bf16" "$T/q4" --quiet --tolerance 0.2; rc=$?
[ "$rc" -eq 0 ] || fail "HF vs 4-bit at tolerance 0.2: exit $rc: $(cat "$T/v")"
grep -q ' 0 differ, ' "$T/v" || fail "tolerance summary: $(cat "$T/v")"
echo "ok: quantized B: exit 1 at tolerance 0, 0 at 0.2"

# ---- bad input: exit 2, one line naming the file
mkdir "$T/bad"; cp "$VL/bf16/config.json" "$T/bad/"
head -c 100 "$VL/bf16/model.safetensors" > "$T/bad/model.safetensors"
expect 2 "bad/model.safetensors" "$MK" verify "$VL/bf16" "$T/bad"
expect 2 "bad/model.safetensors" "$MK" verify "$VL/bf16" "$T/bad" --by-layout
mkdir "$T/badcfg"; cp "$VL/bf16-fused/model.safetensors" "$T/badcfg/"; echo '{"model_type": ' > "$T/badcfg/config.json"
expect 2 "badcfg/config.json" "$MK" verify "$VL/bf16" "$T/badcfg"
expect 2 "different\|is qwen3_moe\|two layouts" "$MK" verify "$FX/qwen3moe-a/bf16" "$T/deepseekv3-a-mlx"
echo "ok: unreadable B and another model: exit 2, one line"
echo "1 passed, 0 failed"
