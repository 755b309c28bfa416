#!/usr/bin/env bash
# ctest-labels: slow
# `moekit inspect x.gguf` reads a GGUF back: on moekit's Q4_K_M GGUF of qwen3moe-a and its F32
# GGUF of gpt-oss's released MXFP4 checkpoint, every tensor's name, ggml type and dimensions equal
# what llama.cpp's own GGUF reader lists (mk_llama info), as do the metadata keys; the report has
# no problems. A GGUF cut inside its header, one with another magic, and one whose tensor data is
# cut short: the first two exit 2 with one line naming the file and the field, the last is read
# (exit 0) with the tensors past the end listed as problems.
. "${MK_SRC:?}/tests/cli/gguf_llama.bash"
. "$MK_SRC/tests/cli/lib.bash" # expect
command -v node > /dev/null || fail "node is needed to read the JSON report (scripts/install-deps.sh)"
"$BIN" convert "$FX/qwen3moe-a/bf16" "$T/a.gguf" --to gguf --gguf-type q4_k_m --quiet
"$BIN" convert "$FX/gptoss-a/mxfp4" "$T/b.gguf" --to gguf --gguf-type f32 --quiet
for f in a b; do
    "$BIN" inspect "$T/$f.gguf" --json > "$T/$f.json"
    node -e '
const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
if (r.format !== "gguf" || r.version !== 3) { console.error("FAIL: header " + r.format + " " + r.version); process.exit(1); }
if (r.problems.length) { console.error("FAIL: problems " + JSON.stringify(r.problems)); process.exit(1); }
for (const t of r.tensors) console.log(t.name, t.type.toLowerCase(), t.ne.join(","));
for (const k of Object.keys(r.kv)) console.log("kv", k);
' "$T/$f.json" | sort > "$T/$f.mk"
    "$PEER/mk_llama" info "$T/$f.gguf" | awk '$1 == "kv" { print "kv", $2; next } { print $1, tolower($2), $3 }' |
        sort > "$T/$f.ll"
    cmp -s "$T/$f.mk" "$T/$f.ll" || { diff "$T/$f.mk" "$T/$f.ll" | head -10 >&2; fail "$f.gguf: moekit's reading differs from llama.cpp's"; }
    echo "ok: $f.gguf: $(grep -vc '^kv' "$T/$f.mk") tensors and $(grep -c '^kv' "$T/$f.mk") keys as llama.cpp reads them" \
         "($(grep -v '^kv' "$T/$f.mk" | awk '{print $2}' | sort -u | tr '\n' ' '))"
done
"$BIN" inspect "$T/b.gguf" > "$T/b.txt"
grep -q "architecture    gpt-oss" "$T/b.txt" && grep -q "MXFP4 *12 tensors" "$T/b.txt" ||
    { cat "$T/b.txt" >&2; fail "b.gguf: the text report lacks the architecture or the 12 MXFP4 tensors"; }

head -c 3000 "$T/a.gguf" > "$T/cut.gguf"
expect 2 "cut.gguf: .*past the end of the file" "$BIN" inspect "$T/cut.gguf"
{ printf 'GGUX'; tail -c +5 "$T/a.gguf"; } > "$T/magic.gguf"
expect 2 "magic.gguf: not a GGUF file" "$BIN" inspect "$T/magic.gguf"
size=$(stat -c %s "$T/a.gguf")
head -c $((size / 2)) "$T/a.gguf" > "$T/half.gguf"
"$BIN" inspect "$T/half.gguf" --json > "$T/half.json"
node -e '
const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const n = r.problems.filter((p) => p.code === "outside_file").length;
if (n < 1 || n >= r.tensors.length) { console.error("FAIL: " + n + " of " + r.tensors.length + " tensors outside"); process.exit(1); }
console.log("ok: half.gguf: " + n + " of " + r.tensors.length + " tensors listed past the end of the file");
' "$T/half.json"
# a NUL inside a string (general.name "bf16" -> "b\0f16"): reported, not dropped (jansson's reader, the
# CLI's, refuses "\u0000": the text report once printed nothing)
cp "$T/a.gguf" "$T/nul.gguf"
at=$(grep -abo 'general\.name' "$T/nul.gguf" | head -1 | cut -d: -f1)
[ -n "$at" ] || fail "a.gguf: no general.name"
printf '\000' | dd of="$T/nul.gguf" bs=1 seek=$((at + 12 + 4 + 8 + 1)) conv=notrunc status=none
"$BIN" inspect "$T/nul.gguf" > "$T/nul.txt"
grep -q 'general.name (str): "<4 bytes, not UTF-8 text>"' "$T/nul.txt" ||
    { head -12 "$T/nul.txt" >&2; fail "nul.gguf: general.name not reported as 4 bytes of non-text"; }
echo "ok: nul.gguf: a string with a NUL reported as such"
echo "gguf_inspect: all passed"
