#!/usr/bin/env bash
# `moekit convert --to gguf` without llama.cpp: the nothing-lost rules for a
# one-file output and its errors (tests/cli/gguf_llama_*.sh checks the file
# against llama.cpp itself).
#   - a vision-language checkpoint, a qwen3_moe llama.cpp would compute
#     differently (norm_topk_prob false), --gguf-type without --to gguf, a bad
#     --gguf-type are refused with one line, exit 2, and leave neither DST nor
#     DST.partial/; --verify reads the file back and passes
#   - an existing DST is never replaced without --force (its bytes stay);
#     with --force it is; SRC's own files are never an output
#   - the file is GGUF version 3 with the expected tensor and key counts
#   - the same command gives the same bytes (deterministic), also when killed
#     anywhere and run again (the rerun resumes or finishes)
set -euo pipefail
BIN=${MK_BIN:?}
. "${MK_SRC:?}/tests/cli/fixtures.bash"
need_fixtures
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-cgguf-XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$MK_SRC/tests/cli/lib.bash"
src=$FX/qwen3moe-odd/bf16

nothing_left() { [ ! -e "$1" ] && [ ! -e "$1.partial" ] || fail "$1 or $1.partial left behind"; }

expect 2 "vision-language checkpoint is not supported yet" "$BIN" convert "$FX/qwen35moe-vl/bf16" "$T/vl.gguf" \
    --to gguf --quiet
nothing_left "$T/vl.gguf"
expect 2 "applies to --to gguf only" "$BIN" convert "$src" "$T/hf" --to hf --gguf-type q8_0 --quiet
nothing_left "$T/hf"
expect 2 "expected f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k, q4_k_m or q5_k_m" "$BIN" convert "$src" "$T/x.gguf" --to gguf --gguf-type q3_k
nothing_left "$T/x.gguf"
mkdir "$T/nonorm"
sed 's/"norm_topk_prob": true/"norm_topk_prob": false/' "$src/config.json" > "$T/nonorm/config.json"
ln -s "$src/model.safetensors" "$T/nonorm/model.safetensors"
expect 2 "always renormalizes" "$BIN" convert "$T/nonorm" "$T/nn.gguf" --to gguf --quiet
nothing_left "$T/nn.gguf"
# --verify reads the GGUF back (test_gguf_verify: it catches a flipped byte): passes, one file
"$BIN" convert "$src" "$T/v.gguf" --to gguf --gguf-type q4_k_m --verify 2> "$T/verr" ||
    { cat "$T/verr" >&2; fail "--to gguf --verify failed"; }
grep -q "verify: GGUF header as planned; 27 tensors equal to what the source gives" "$T/verr" ||
    { cat "$T/verr" >&2; fail "--to gguf --verify: no verify line for 27 tensors"; }
[ -f "$T/v.gguf" ] && [ ! -e "$T/v.gguf.partial" ] || fail "v.gguf missing or its .partial left"

"$BIN" convert "$src" "$T/a.gguf" --to gguf --gguf-type q8_0 --quiet
[ -f "$T/a.gguf" ] && [ ! -e "$T/a.gguf.partial" ] || fail "a.gguf missing or its .partial left"
# "GGUF", version 3, 27 tensors (2 layers x 12 + 3), 19 keys: 4 general, 13 qwen3moe, and with no
# tokenizer.json tokenizer.ggml.model "none" + qwen3moe.vocab_size
[ "$(head -c 4 "$T/a.gguf")" = "GGUF" ] || fail "a.gguf: no GGUF magic"
hdr=$(od -An -v -w20 -tu4 -j4 -N20 "$T/a.gguf" | tr -s ' ' | sed 's/^ //')
[ "$hdr" = "3 27 0 19 0" ] || fail "a.gguf: header (version, tensors, keys) is '$hdr', expected '3 27 0 19 0'"
"$BIN" convert "$src" "$T/b.gguf" --to gguf --gguf-type q8_0 --quiet
cmp -s "$T/a.gguf" "$T/b.gguf" || fail "two runs of the same command wrote different bytes"

sum=$(sha256sum < "$T/a.gguf")
expect 2 "exists" "$BIN" convert "$src" "$T/a.gguf" --to gguf --quiet
[ "$(sha256sum < "$T/a.gguf")" = "$sum" ] || fail "a.gguf changed without --force"
[ ! -e "$T/a.gguf.partial" ] || fail "a.gguf.partial left after the refusal"
"$BIN" convert "$src" "$T/a.gguf" --to gguf --gguf-type q4_0 --force --quiet
[ "$(sha256sum < "$T/a.gguf")" != "$sum" ] || fail "--force did not replace a.gguf"
[ ! -e "$T/a.gguf.partial" ] || fail "a.gguf.partial left after --force"

# killed (SIGKILL, test hook) inside the data, before and after the final move: the rerun of the
# same command finishes with the same bytes and leaves no DST.partial/
"$BIN" convert "$src" "$T/ref.gguf" --to gguf --gguf-type q4_0 --quiet
for point in item:1 item:5 shard:1 commit:1 committed:1; do
    set +e
    MK_CONVERT_CRASH=$point sh -c '"$@"; exit $?' sh "$BIN" convert "$src" "$T/r.gguf" --to gguf --gguf-type q4_0 \
        --quiet 2>/dev/null
    rc=$?
    set -e
    [ $rc -eq 137 ] || fail "crash at $point: exit $rc, expected 137 (SIGKILL)"
    [ "$point" = committed:1 ] || [ ! -e "$T/r.gguf" ] || fail "r.gguf exists after a crash at $point"
    "$BIN" convert "$src" "$T/r.gguf" --to gguf --gguf-type q4_0 --quiet || fail "rerun after $point failed"
    cmp -s "$T/r.gguf" "$T/ref.gguf" || fail "resumed r.gguf after $point differs from an uninterrupted run"
    [ ! -e "$T/r.gguf.partial" ] || fail "r.gguf.partial left after the rerun ($point)"
    rm -f "$T/r.gguf"
    echo "ok: killed at $point, rerun byte-identical"
done

# the same for the K-quant mix (Q4_K_M's per-tensor types, Q5_0/Q8_0 fallbacks): killed inside the data
"$BIN" convert "$src" "$T/refk.gguf" --to gguf --gguf-type q4_k_m --quiet
set +e
MK_CONVERT_CRASH=item:5 sh -c '"$@"; exit $?' sh "$BIN" convert "$src" "$T/rk.gguf" --to gguf --gguf-type q4_k_m \
    --quiet 2>/dev/null
rc=$?
set -e
[ $rc -eq 137 ] || fail "q4_k_m crash at item:5: exit $rc, expected 137 (SIGKILL)"
[ ! -e "$T/rk.gguf" ] || fail "rk.gguf exists after a crash"
"$BIN" convert "$src" "$T/rk.gguf" --to gguf --gguf-type q4_k_m --quiet || fail "q4_k_m rerun failed"
cmp -s "$T/rk.gguf" "$T/refk.gguf" || fail "resumed q4_k_m rk.gguf differs from an uninterrupted run"
echo "ok: q4_k_m killed at item:5, rerun byte-identical"

cp -r "$src" "$T/src"
sum=$(sha256sum < "$T/src/model.safetensors")
expect 2 "never writes over its inputs" "$BIN" convert "$T/src" "$T/src/model.safetensors" --to gguf --force --quiet
[ "$(sha256sum < "$T/src/model.safetensors")" = "$sum" ] || fail "SRC's model.safetensors was overwritten"
echo "convert_gguf: all passed"
