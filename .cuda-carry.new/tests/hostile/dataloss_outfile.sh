#!/usr/bin/env bash
# Single-file outputs (issue 9, data loss 2): logits --out/--hidden-out,
# profile --out, quantize --report/--alloc-out refuse an existing file
# without --force, and ALWAYS refuse a path that is one of the command's
# inputs (a model shard or config - also through a symlink or a hard link -,
# the calibration text, the tokenizer, the profile) or another output, with
# exit 2 before any work; nothing around them changes. Written via a
# temporary name of their own: a user's file named OUT.tmp survives.
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash"
need_fixture qwen3moe-a/bf16
need_fixture tiny-qwen35moe/bf16
W=$T/w
mkdir -p "$W"
cp -r "$FX/qwen3moe-a/bf16" "$W/m"
cp -r "$FX/tiny-qwen35moe/bf16" "$W/tiny"
cp "$FX/tiny-qwen35moe/devtext.txt" "$W/text.txt"
chmod -R u+w "$W"
M=$W/m
ln -s "$M/model.safetensors" "$W/link.f32"
ln "$M/config.json" "$W/hardlink.json"
echo "old logits" > "$W/old.f32"
echo "old report" > "$W/old.json"
echo "a user's own file" > "$W/r.json.tmp"
mkdir "$W/adir"
snapshot "$W" all

# logits: inputs (directly, via symlink, via hard link) are always refused.
for out in "$M/config.json" "$M/model.safetensors" "$W/link.f32" "$W/hardlink.json"; do
    expect 2 "input" "$BIN" logits "$M" --ids 1,2,3 --out "$out"
    expect 2 "input" "$BIN" logits "$M" --ids 1,2,3 --out "$W/new.f32" --hidden-out "$out"
done
unchanged "$W" all
[ ! -e "$W/new.f32" ] || fail "a refused logits run wrote --out"
expect 2 "already exists" "$BIN" logits "$M" --ids 1,2,3 --out "$W/old.f32"
expect 2 "two outputs" "$BIN" logits "$M" --ids 1,2,3 --out "$W/same.f32" --hidden-out "$W/same.f32"
expect 2 "is a directory" "$BIN" logits "$M" --ids 1,2,3 --out "$W/adir"
expect 2 "does not exist" "$BIN" logits "$M" --ids 1,2,3 --out "$W/nodir/x.f32"
unchanged "$W" all
ok "logits: inputs (also via symlink and hard link), existing files, a shared path, a directory refused"

# ... and what --force is for works: the file is replaced, atomically.
expect 0 "" "$BIN" logits "$M" --ids 1,2,3 --out "$W/old.f32" --force
V=$(sed -n 's/.*"vocab_size": *\([0-9]*\).*/\1/p' "$M/config.json")
[ "$(stat -c %s "$W/old.f32")" -eq $((3 * V * 4)) ] || fail "logits --force: wrong size"
ls "$W" | grep -q moekit-tmp && fail "temporary file left behind"
cp "$W/old.f32" "$W/saved.f32"
snapshot "$W" all
ok "logits --force replaces an existing output"

# quantize --report / --alloc-out: inputs refused before any work (no DST).
expect 2 "input" "$BIN" quantize "$M" "$W/q" --quiet --report "$M/config.json"
expect 2 "input" "$BIN" quantize "$M" "$W/q" --quiet --force --report "$W/hardlink.json"
expect 2 "already exists" "$BIN" quantize "$M" "$W/q" --quiet --report "$W/old.json"
expect 2 "is a directory" "$BIN" quantize "$M" "$W/q" --quiet --report "$W/adir"
[ ! -e "$W/q" ] && [ ! -e "$W/q.partial" ] || fail "a refused quantize left DST behind"
unchanged "$W" all
# A user's PATH.tmp is not the writer's temporary file.
expect 0 "" "$BIN" quantize "$M" "$W/q" --quiet --report "$W/r.json"
[ "$(cat "$W/r.json.tmp")" = "a user's own file" ] || fail "--report clobbered the user's r.json.tmp"
grep -q '"modules"\|"module"' "$W/r.json" || fail "--report not written"
rm -rf "$W/q" "$W/r.json"
unchanged "$W" all
ok "quantize --report: inputs, existing files and directories refused before work; PATH.tmp survives"

# profile: --out is never the calibration text, the tokenizer or --from.
expect 2 "input" "$BIN" profile "$W/tiny" --text "$W/text.txt" --out "$W/text.txt" --quiet
expect 2 "input" "$BIN" profile "$W/tiny" --text "$W/text.txt" --out "$W/tiny/tokenizer.json" --quiet
expect 2 "already exists" "$BIN" profile "$W/tiny" --text "$W/text.txt" --out "$W/old.json" --quiet
unchanged "$W" all
expect 0 "" "$BIN" profile "$W/tiny" --text "$W/text.txt" --tokens 512 --threads 2 --out "$W/p.json" --quiet
cp "$W/p.json" "$W/p.saved"
snapshot "$W" all
expect 2 "input" "$BIN" profile "$W/tiny" --from "$W/p.json" --target-bpw 4 --out "$W/p.json"
expect 2 "input" "$BIN" quantize "$W/tiny" "$W/q" --quiet --target-bpw 4 --profile "$W/p.json" \
    --alloc-out "$W/p.json" --force
expect 2 "two outputs" "$BIN" quantize "$W/tiny" "$W/q" --quiet --target-bpw 4 --profile "$W/p.json" \
    --alloc-out "$W/a.json" --report "$W/a.json"
expect 2 "already exists" "$BIN" quantize "$W/tiny" "$W/q" --quiet --target-bpw 4 --profile "$W/p.json" \
    --alloc-out "$W/old.json"
[ ! -e "$W/q" ] && [ ! -e "$W/q.partial" ] && [ ! -e "$W/a.json" ] || fail "a refused run left output behind"
unchanged "$W" all
cmp -s "$W/p.json" "$W/p.saved" || fail "the profile was overwritten"
expect 0 "" "$BIN" profile "$W/tiny" --from "$W/p.json" --target-bpw 4 --out "$W/old.json" --force
grep -q moekit-alloc "$W/old.json" || fail "profile --from --force did not write the allocation"
ok "profile/quantize: --text, tokenizer, --from/--profile never overwritten; --force replaces other files"
