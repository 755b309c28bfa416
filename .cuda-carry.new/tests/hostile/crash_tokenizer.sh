#!/usr/bin/env bash
# Issue 9 item 13: text the tokenizer cannot encode is an error, never
# dropped text: a byte missing from a byte-level vocab (no unk, no byte
# fallback), an empty vocab, EOS/BOS ids that are no token of the tokenizer,
# and added tokens / EOS ids outside the model's vocabulary (run refuses the
# pair before generating).
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash"
. "$(dirname "${BASH_SOURCE[0]}")/crash_lib.bash"
W=$T/w
mkdir "$W"

# A byte-level tokenizer whose vocab holds the stand-ins of the bytes of
# "hi", space (U+0120) and "!" only: any other byte cannot be encoded.
bl_tok() { # bl_tok DIR [EXTRA_TOP_LEVEL_FIELDS]
    mkdir -p "$1"
    cat > "$1/tokenizer.json" << JSON
{"model": {"type": "BPE", "vocab": {"h": 0, "i": 1, "\u0120": 2, "!": 3, "hi": 4}, "merges": ["h i"]},
 "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
 "decoder": {"type": "ByteLevel"},
 "added_tokens": [{"id": 5, "content": "<|end|>", "special": true}]${2:+, $2}}
JSON
}

bl_tok "$W/bl"
expect 0 "" "$BIN" tokenize "$W/bl/tokenizer.json" <<< '"hi hi!"'
[ "$(cat "$T/out")" = "[4,2,4,3]" ] || fail "hi hi! encoded as $(cat "$T/out")"
# 'x' (byte 0x78) has no token: HF would silently drop it ("hxi" -> [0, 1])
expect 2 "cannot encode byte 0x78" "$BIN" tokenize "$W/bl/tokenizer.json" <<< '"hxi"'
expect 2 "cannot encode byte 0x0A" "$BIN" tokenize "$W/bl/tokenizer.json" <<< '"hi\n"'
ok "byte missing from a byte-level vocab: error naming the byte"

mkdir "$W/empty"
echo '{"model": {"type": "BPE", "vocab": {}, "merges": []}}' > "$W/empty/tokenizer.json"
expect 2 "model.vocab' is empty" "$BIN" tokenize "$W/empty/tokenizer.json" <<< '"hi"'
ok "empty vocab refused at load"

bl_tok "$W/eos"
echo '{"eos_token_id": 77}' > "$W/eos/generation_config.json"
expect 2 "eos_token_id.*77" "$BIN" tokenize "$W/eos" <<< '"hi"'
bl_tok "$W/bos"
echo '{"bos_token_id": 9}' > "$W/bos/generation_config.json"
expect 2 "bos_token_id.*9" "$BIN" tokenize "$W/bos" <<< '"hi"'
# a post-processor adding a BOS id that is no token (it went to the model as is)
bl_tok "$W/post" '"post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {"<s>": {"id": "<s>", "ids": [40], "tokens": ["<s>"]}}}'
expect 2 "post_processor.*id 40 is not a token" "$BIN" tokenize "$W/post" <<< '"hi"'
ok "EOS/BOS ids that are no token of the tokenizer"

# a model of vocab 64 with a tokenizer whose added token has id 100
make_qwen3moe "$W/m" 2 4
bl_tok "$W/m" '"normalizer": null'
sed -i 's/"id": 5, "content": "<|end|>"/"id": 100, "content": "<|end|>"/' "$W/m/tokenizer.json"
expect 2 "<\|end\|>.*id 100.*vocab_size 64" "$BIN" run "$W/m" --prompt hi --max-tokens 1
ok "added token outside the model's vocabulary: run refuses"
