#!/usr/bin/env bash
# `moekit run` on a model folder whose tokenizer is a tiktoken.model, as
# Kimi-K2 ships it (a DeepSeek-V3 checkpoint with a tiktoken tokenizer): the
# deepseekv3-a fixture (vocab 512) gets a rank file of the 256 bytes and a
# Kimi-style tokenizer_config.json (special tokens 256..511, [EOS] 257).
# From text, the run generates what it generates from the prompt's ids
# (moekit tokenize of the same folder: tiktoken's byte-pair rule itself is
# checked in tests/unit/test_tokenizer_tiktoken.c and against js-tiktoken in
# tests/cli/tokenize_tiktoken.sh), and the output is decoded to text.
set -euo pipefail
BIN=${MK_BIN:?}
. "${MK_SRC:?}/tests/cli/fixtures.bash"
need_fixtures
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-runtt-XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash" # fail, expect
SRC=$FX/deepseekv3-a/bf16
[ -f "$SRC/config.json" ] || { echo "skip: $SRC is missing"; exit 77; }

M="$T/kimi"
mkdir -p "$M"
cp "$SRC/config.json" "$M/"
ln -s "$SRC/model.safetensors" "$M/model.safetensors"
for b in $(seq 0 255); do printf '%s %d\n' "$(printf "\\x$(printf %02x "$b")" | base64)" "$b"; done >"$M/tiktoken.model"
cat >"$M/tokenizer_config.json" <<'JSON'
{"added_tokens_decoder": {"256": {"content": "[BOS]", "special": true},
                          "257": {"content": "[EOS]", "special": true},
                          "258": {"content": "<|im_end|>", "special": true}},
 "auto_map": {"AutoTokenizer": ["tokenization_kimi.TikTokenTokenizer", null]},
 "bos_token": "[BOS]", "eos_token": "[EOS]", "tokenizer_class": "TikTokenTokenizer"}
JSON

ids=$(printf '"Hi, Kimi"\n' | "$BIN" tokenize "$M" | tr -d '[]')
[ "$ids" = "72,105,44,32,75,105,109,105" ] || fail "prompt ids $ids (the rank file holds single bytes only)"
"$BIN" run "$M" --ids "$ids" --max-tokens 12 --json --threads 2 >"$T/ids.json"
"$BIN" run "$M" --prompt "Hi, Kimi" --max-tokens 12 --json --threads 2 >"$T/txt.json"
a=$(sed 's/.*"ids":\[//; s/\].*//' "$T/ids.json")
b=$(sed 's/.*"ids":\[//; s/\].*//' "$T/txt.json")
[ -n "$a" ] && [ "$a" = "$b" ] || fail "run from text generated [$b], from its ids [$a]"
grep -q '"text":' "$T/txt.json" || fail "no decoded text: $(cat "$T/txt.json")"
echo "ok: run on a tiktoken.model folder (generated $a)"
echo PASS
