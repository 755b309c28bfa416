#!/usr/bin/env bash
# moekit tokenize on the trained fixture: the reference prompts and
# continuations of tiny-qwen35moe/reference.json, --decode, --chat, flags,
# and every bad-input path (exit 2 with the stdin line number or the file).
set -euo pipefail
: "${MK_BIN:?}"
. "${MK_SRC:?}/tests/cli/fixtures.bash"
FIX=$TINYM
DIR="$FIX/bf16"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# expect_fail CODE NEEDLE CMD...: exit code and a message naming the problem.
expect_fail() {
    local code=$1 needle=$2 rc=0
    shift 2
    "$@" >"$TMP/out" 2>"$TMP/err" || rc=$?
    [ "$rc" = "$code" ] || fail "'$*': exit $rc, wanted $code ($(cat "$TMP/err"))"
    grep -qF -- "$needle" "$TMP/err" || fail "'$*': message '$(cat "$TMP/err")' lacks '$needle'"
}

# Reference prompts (HF tokenizers' ids) from the directory and from the file.
printf '"The list"\n"def "\n"Return the"\n' >"$TMP/prompts"
printf '[526,578]\n[1973,223]\n[407,268]\n' >"$TMP/want"
"$MK_BIN" tokenize "$DIR" <"$TMP/prompts" >"$TMP/got"
cmp -s "$TMP/got" "$TMP/want" || fail "prompt ids: $(cat "$TMP/got")"
"$MK_BIN" tokenize "$DIR/tokenizer.json" <"$TMP/prompts" >"$TMP/got"
cmp -s "$TMP/got" "$TMP/want" || fail "prompt ids via tokenizer.json"
# transformers writes model_max_length = int(1e30) for tokenizers without a
# limit (gpt-oss's tokenizer_config.json): valid JSON, read like any other
mkdir -p "$TMP/bigint"
cp "$DIR/tokenizer.json" "$TMP/bigint/"
sed 's/^{/{"model_max_length": 1000000000000000019884624838656,/' "$DIR/tokenizer_config.json" \
    >"$TMP/bigint/tokenizer_config.json"
grep -q 1000000000000000019884624838656 "$TMP/bigint/tokenizer_config.json" || fail "bigint config not made"
"$MK_BIN" tokenize "$TMP/bigint" <"$TMP/prompts" >"$TMP/got"
cmp -s "$TMP/got" "$TMP/want" || fail "prompt ids with model_max_length 1e30: $(cat "$TMP/got")"
printf '[{"role": "user", "content": "hi"}]\n' | "$MK_BIN" tokenize --chat "$TMP/bigint" >"$TMP/got" ||
    fail "--chat with model_max_length 1e30"

# A continuation decodes to the reference text; decode(encode(x)) == x.
echo '[645,297,1190,291,268,578,16,201,201,862]' | "$MK_BIN" tokenize --decode "$DIR" >"$TMP/got"
[ "$(cat "$TMP/got")" = '" number of elements in the list.\n\nIf"' ] || fail "decode: $(cat "$TMP/got")"
printf '"a\\nb\\t c  \\u00e9\\u4e2d\\ud83d\\ude00"\n""\n' >"$TMP/texts"
"$MK_BIN" tokenize "$DIR" <"$TMP/texts" | "$MK_BIN" tokenize --decode "$DIR" >"$TMP/back"
[ "$(sed -n 1p "$TMP/back")" = '"a\nb\t c  é中😀"' ] || fail "round trip: $(cat "$TMP/back")"
[ "$(sed -n 2p "$TMP/back")" = '""' ] || fail "empty round trip"

# Special tokens: recognised by default, plain text with --split-special,
# dropped on decode with --skip-special.
echo '"<|im_start|>user\nhi<|im_end|>"' | "$MK_BIN" tokenize "$DIR" >"$TMP/got"
grep -q '^\[1,.*,2\]$' "$TMP/got" || fail "special tokens: $(cat "$TMP/got")"
echo '"<|im_end|>"' | "$MK_BIN" tokenize --split-special "$DIR" >"$TMP/got"
! grep -q '\b2\b' "$TMP/got" || fail "--split-special: $(cat "$TMP/got")"
echo '[1,407,2]' | "$MK_BIN" tokenize --decode --skip-special "$DIR" >"$TMP/got"
[ "$(cat "$TMP/got")" = '"Return"' ] || fail "--skip-special: $(cat "$TMP/got")"

# Chat: the ChatML example HF rendered and encoded (reference.json).
echo '[{"role": "user", "content": "Return the list."}]' | "$MK_BIN" tokenize --chat "$DIR" >"$TMP/chat"
[ "$(cat "$TMP/chat")" = '"<|im_start|>user\nReturn the list.<|im_end|>\n<|im_start|>assistant\n"' ] ||
    fail "chat: $(cat "$TMP/chat")"
"$MK_BIN" tokenize "$DIR" <"$TMP/chat" >"$TMP/got"
[ "$(cat "$TMP/got")" = '[1,2468,201,407,268,578,16,2,201,1,388,383,640,201]' ] || fail "chat ids: $(cat "$TMP/got")"
echo '[{"role": "user", "content": "x"}]' | "$MK_BIN" tokenize --chat --template deepseek3 "$DIR" >"$TMP/got"
[ "$(cat "$TMP/got")" = '"<｜begin▁of▁sentence｜><｜User｜>x<｜Assistant｜>"' ] || fail "--template: $(cat "$TMP/got")"

# Help names every flag.
"$MK_BIN" tokenize --help >"$TMP/help"
for f in --decode --chat --no-add-special --split-special --skip-special --template --no-think --no-gen-prompt; do
    grep -q -- "$f" "$TMP/help" || fail "--help does not explain $f"
done

# Bad input: line numbers, file names, exit 2.
printf '"ok"\n{"not": "a string"}\n' >"$TMP/bad"
expect_fail 2 "stdin line 2" "$MK_BIN" tokenize "$DIR" <"$TMP/bad"
[ "$(wc -l <"$TMP/out")" = 1 ] || fail "the line before the bad one must be written"
printf '"ok"\n"unterminated\n' >"$TMP/bad"
expect_fail 2 "stdin line 2: invalid JSON" "$MK_BIN" tokenize "$DIR" <"$TMP/bad"
printf '\n' >"$TMP/bad"
expect_fail 2 "stdin line 1" "$MK_BIN" tokenize "$DIR" <"$TMP/bad"
printf '[1,2]\n[1,99999]\n' >"$TMP/bad"
expect_fail 2 "stdin line 2: token id 99999" "$MK_BIN" tokenize --decode "$DIR" <"$TMP/bad"
printf '[1,"x"]\n' >"$TMP/bad"
expect_fail 2 "stdin line 1: element 1" "$MK_BIN" tokenize --decode "$DIR" <"$TMP/bad"
printf '[{"role": "narrator", "content": "x"}]\n' >"$TMP/bad"
expect_fail 2 "stdin line 1: chat message 0" "$MK_BIN" tokenize --chat --template qwen3 "$DIR" <"$TMP/bad"
expect_fail 2 "/nonexistent/tokenizer.json" "$MK_BIN" tokenize /nonexistent/tokenizer.json </dev/null
expect_fail 2 "no tokenizer.json" "$MK_BIN" tokenize "$TMP" </dev/null
# Kimi-K2 ships tiktoken.model instead (tests/cli/tokenize_tiktoken.sh checks
# the ids): a broken one is refused naming the file, line or field
mkdir -p "$TMP/kimi" && : > "$TMP/kimi/tiktoken.model"
expect_fail 2 "no tokenizer_config.json beside it" "$MK_BIN" tokenize "$TMP/kimi" </dev/null
printf '{"tokenizer_class": "PreTrainedTokenizerFast"}' >"$TMP/kimi/tokenizer_config.json"
expect_fail 2 "read for Kimi's class only" "$MK_BIN" tokenize "$TMP/kimi" </dev/null
printf '{"tokenizer_class": "TikTokenTokenizer", "added_tokens_decoder": {"3": {"content": "[BOS]"}}}' \
    >"$TMP/kimi/tokenizer_config.json"
expect_fail 2 "tiktoken.model: no tokens" "$MK_BIN" tokenize "$TMP/kimi" </dev/null
for b in $(seq 0 255); do printf '%s %d\n' "$(printf "\\x$(printf %02x "$b")" | base64)" "$b"; done >"$TMP/kimi/tiktoken.model"
expect_fail 2 "added_tokens_decoder[\"3\"]': id 3 is a rank" "$MK_BIN" tokenize "$TMP/kimi" </dev/null
printf '{"tokenizer_class": "TikTokenTokenizer", "eos_token": "[EOS]", "added_tokens_decoder": {"257": {"content": "[EOS]"}}}' \
    >"$TMP/kimi/tokenizer_config.json"
[ "$(printf '"ab[EOS]"\n' | "$MK_BIN" tokenize "$TMP/kimi")" = "[97,98,257]" ] || { echo "FAIL: 256-byte tiktoken.model" >&2; exit 1; }
printf 'QQ== 300\n' >>"$TMP/kimi/tiktoken.model"
expect_fail 2 "tiktoken.model: line 257: rank 300 is not below the number of tokens" "$MK_BIN" tokenize "$TMP/kimi" </dev/null
printf 'QQ== 1\nQg== 2\n' >"$TMP/kimi/tiktoken.model"
expect_fail 2 "tiktoken.model: rank 0 is missing" "$MK_BIN" tokenize "$TMP/kimi" </dev/null
printf 'QQ= 0\n' >"$TMP/kimi/tiktoken.model"
expect_fail 2 "line 1: token \"QQ=\" is not base64" "$MK_BIN" tokenize "$TMP/kimi" </dev/null
printf 'QQ==\n' >"$TMP/kimi/tiktoken.model"
expect_fail 2 "line 1: expected" "$MK_BIN" tokenize "$TMP/kimi" </dev/null
printf 'QQ== 0\nQQ== 1\n' >"$TMP/kimi/tiktoken.model"
expect_fail 2 "the bytes of rank 1 appear twice" "$MK_BIN" tokenize "$TMP/kimi" </dev/null
printf 'QQ== 0\n' >"$TMP/kimi/tiktoken.model"
expect_fail 2 "byte 0x00 has no rank" "$MK_BIN" tokenize "$TMP/kimi" </dev/null
printf '{"model": {}}' >"$TMP/tokenizer.json"
expect_fail 2 "field 'model.vocab'" "$MK_BIN" tokenize "$TMP/tokenizer.json" </dev/null
expect_fail 2 "unknown chat template" "$MK_BIN" tokenize --chat --template nope "$DIR" </dev/null
expect_fail 2 "tokenize" "$MK_BIN" tokenize --bogus "$DIR" </dev/null
expect_fail 2 "expected one" "$MK_BIN" tokenize </dev/null

# --keep-going: a bad line (invalid JSON, a line over --max-line, a chat the
# template refuses) becomes {"error": ...} in its place, the others are
# encoded as without it, and the run still exits 2.
printf '"a"\nnot json\n"%s"\n"b"\n' "$(head -c 100 /dev/zero | tr '\0' x)" >"$TMP/kg"
rc=0
"$MK_BIN" tokenize --keep-going --max-line 50 "$DIR" <"$TMP/kg" >"$TMP/kg.out" 2>"$TMP/kg.err" || rc=$?
[ "$rc" = 2 ] || fail "--keep-going with bad lines: exit $rc, expected 2"
[ "$(sed -n 1p "$TMP/kg.out")" = "$(printf '"a"\n' | "$MK_BIN" tokenize "$DIR")" ] || fail "--keep-going line 1: $(cat "$TMP/kg.out")"
sed -n 2p "$TMP/kg.out" | grep -q '^{"error":"invalid JSON' || fail "--keep-going line 2: $(cat "$TMP/kg.out")"
sed -n 3p "$TMP/kg.out" | grep -q '^{"error":"the line is longer than 50 bytes' || fail "--keep-going line 3: $(cat "$TMP/kg.out")"
[ "$(sed -n 4p "$TMP/kg.out")" = "$(printf '"b"\n' | "$MK_BIN" tokenize "$DIR")" ] || fail "--keep-going line 4: $(cat "$TMP/kg.out")"
[ "$(wc -l <"$TMP/kg.out")" = 4 ] || fail "--keep-going wrote $(wc -l <"$TMP/kg.out") lines, expected 4"
grep -q "stdin line 2:" "$TMP/kg.err" || fail "--keep-going: stderr does not name line 2: $(cat "$TMP/kg.err")"
printf '[{"role": "user", "content": "x"}]\n[{"role": "tool", "content": "t"}]\n' |
    "$MK_BIN" tokenize --chat --keep-going --template minimax-m2 "$DIR" >"$TMP/kg.out" 2>/dev/null && fail "--keep-going: a refused chat exits 0"
sed -n 2p "$TMP/kg.out" | grep -q '^{"error":"chat message 0: a tool result' || fail "--keep-going chat: $(cat "$TMP/kg.out")"
echo "ok: --keep-going"
echo PASS
