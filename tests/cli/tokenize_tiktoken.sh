#!/usr/bin/env bash
# moekit tokenize on tiktoken-format tokenizers (Kimi-K2's layout) against an
# independent implementation.
#
# The reference is js-tiktoken (a JavaScript port of OpenAI's tiktoken); its
# cl100k_base and o200k_base ranks are written out as tiktoken.model files
# with a tokenizer_config.json laid out as Kimi-K2's (tests/tokenizer/
# ref_tiktoken.mjs write), so moekit reads the format Kimi ships and splits
# with Kimi's pattern, while js-tiktoken encodes with its own byte-pair code
# and the same pattern in JavaScript. Checked line by line over
# tests/tokenizer/corpus.jsonl plus the tiny fixture's devtext.txt:
#   1. encode ids == js-tiktoken's ids (special tokens in the text matched, as
#      Kimi's encode allows them), text cut into chunks as Kimi's encode cuts
#      it (two generated lines cross the cuts)
#   2. moekit --decode of those ids == js-tiktoken's decode == the input
#   3. --split-special: special-token text stays text
#   4. a chat prompt's ids (--chat-ids, ChatML): the template's markers are
#      Kimi's special tokens, a user's "<|im_end|>" is plain text
# Without node or js-tiktoken (scripts/install-deps.d/tokenizer.sh) it skips,
# saying why.
set -euo pipefail

: "${MK_BIN:?MK_BIN must point to the moekit binary}"
: "${MK_SRC:?MK_SRC must point to the repository}"
. "$MK_SRC/tests/cli/fixtures.bash"
REF="$MK_SRC/tests/tokenizer/ref_tiktoken.mjs"
CORPUS="$MK_SRC/tests/tokenizer/corpus.jsonl"
MODS="${MK_TOKENIZERS:-$MK_SRC/.tokenizers}/node_modules"

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*"; exit 77; }

command -v node >/dev/null || skip "node is not installed (Node.js >= 18 runs the reference tokenizer)"
[ -f "$MODS/js-tiktoken/package.json" ] ||
    skip "js-tiktoken is not installed in $MODS; run: (cd $MK_SRC && bash scripts/install-deps.d/tokenizer.sh)"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

cp "$CORPUS" "$TMP/corpus"
if [ -f "$TINYM/devtext.txt" ]; then
    node -e 'process.stdout.write(JSON.stringify(require("fs").readFileSync(process.argv[1], "utf8")) + "\n")' \
        "$TINYM/devtext.txt" >>"$TMP/corpus"
fi

# Kimi's encode cuts text into 400,000-character chunks and cuts runs of
# non-whitespace after 25,000 characters: two lines cross those cuts inside
# a piece ("words," repeated: the character after the first 25,000 is an s;
# "words " repeated: likewise), so the ids show whether the cuts are made.
node -e '
const w = (s) => process.stdout.write(JSON.stringify(s) + "\n");
w("words,".repeat(5000));
w("words ".repeat(66700));' >>"$TMP/corpus"

for ranks in cl100k_base o200k_base; do
    dir="$TMP/$ranks"
    node "$REF" write "$ranks" "$dir"
    "$MK_BIN" tokenize "$dir" <"$TMP/corpus" >"$TMP/$ranks.ids"
    "$MK_BIN" tokenize --decode "$dir" <"$TMP/$ranks.ids" >"$TMP/$ranks.txt"
    node "$REF" check "$ranks" "$dir" "$TMP/corpus" "$TMP/$ranks.ids" "$TMP/$ranks.txt" ||
        fail "$ranks: moekit differs from js-tiktoken (lines above)"
    echo "ok: $ranks ranks with Kimi's pattern ($(wc -l <"$TMP/corpus") lines: encode, decode, round trip)"
    # the rank file given by name gives the same ids
    "$MK_BIN" tokenize "$dir/tiktoken.model" <"$CORPUS" | cmp -s - <(head -n "$(wc -l <"$CORPUS")" "$TMP/$ranks.ids") ||
        fail "$ranks: tokenize DIR/tiktoken.model differs from tokenize DIR"
done

dir="$TMP/cl100k_base"
nb=$(wc -l <"$dir/tiktoken.model")
im_end=$((nb + 2))
# Special tokens named in tokenizer_config.json match in plain encode ...
# (both lines in one run: each load of the ranks costs a second or more)
printf '"a<|im_end|>b"\n"<|reserved_token_%d|>"\n' $((nb + 5)) | "$MK_BIN" tokenize "$dir" >"$TMP/sp"
got=$(sed -n 1p "$TMP/sp")
[[ "$got" == *"$im_end"* ]] || fail "<|im_end|> (id $im_end) not recognised in plain encode: $got"
# ... and reserved ones by Kimi's name for them
got=$(sed -n 2p "$TMP/sp")
[ "$got" = "[$((nb + 5))]" ] || fail "reserved special token $((nb + 5)) not recognised: $got"
# --split-special: never
got=$(printf '"a<|im_end|>b"\n' | "$MK_BIN" tokenize --split-special "$dir")
[[ "$got" != *"$im_end"* ]] || fail "--split-special still produced <|im_end|> ($im_end): $got"
# decode --skip-special drops them
got=$(printf '[64, %d, 65]\n' "$im_end" | "$MK_BIN" tokenize --decode --skip-special "$dir")
[ "$got" = '"ab"' ] || fail "--skip-special kept a special token: $got"
# EOS / BOS from tokenizer_config.json
got=$(printf '[%d]\n' $((nb + 1)) | "$MK_BIN" tokenize --decode "$dir")
[ "$got" = '"[EOS]"' ] || fail "id $((nb + 1)) decodes to $got, expected [EOS]"

# A chat prompt: the template's markers are control tokens, the same text in
# a user message is not.
printf '[{"role": "user", "content": "hi<|im_end|>"}]\n' >"$TMP/chat"
"$MK_BIN" tokenize --chat-ids --template chatml "$dir" <"$TMP/chat" >"$TMP/chat.ids"
n_end=$(grep -o "\b$im_end\b" "$TMP/chat.ids" | wc -l)
[ "$n_end" -eq 1 ] || fail "chat prompt holds <|im_end|> ($im_end) $n_end times, expected once (the template's): $(cat "$TMP/chat.ids")"
echo "ok: special tokens only where the rules allow (plain encode, --split-special, chat)"
echo PASS
