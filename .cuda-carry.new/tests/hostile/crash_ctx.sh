#!/usr/bin/env bash
# Issue 9 item 18: a context is checked before it is allocated. run --ctx and
# eval --window beyond max_position_embeddings are refused unless
# --force-ctx; a KV cache larger than the memory available is refused with
# the bytes needed and available (it was allocated, then failed "no memory"
# or was zeroed page by page); tokenize refuses a line longer than its
# limit instead of reading it whole.
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash"
. "$(dirname "${BASH_SOURCE[0]}")/crash_lib.bash"
W=$T/w
mkdir "$W"
HOSTILE_TIMEOUT=60

make_qwen3moe "$W/m" 2 4 # max_position_embeddings 256
cat > "$W/m/tokenizer.json" << 'JSON'
{"model": {"type": "BPE", "vocab": {"h": 0, "i": 1, "\u0120": 2, "!": 3, "hi": 4}, "merges": ["h i"]},
 "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
 "decoder": {"type": "ByteLevel"}, "added_tokens": []}
JSON

expect 0 "" "$BIN" run "$W/m" --ids 1,2 --max-tokens 1 --ctx 256
expect 2 "--ctx 1024 exceeds the model's max_position_embeddings 256" \
    "$BIN" run "$W/m" --ids 1,2 --max-tokens 1 --ctx 1024
expect 0 "" "$BIN" run "$W/m" --ids 1,2 --max-tokens 1 --ctx 1024 --force-ctx
ok "run --ctx vs max_position_embeddings (--force-ctx overrides)"

for ((i = 0; i < 400; i++)); do printf 'hi '; done > "$W/text.txt"
expect 0 "" "$BIN" eval "$W/m" --text "$W/text.txt" --window 128
expect 2 "--window 512 exceeds the model's max_position_embeddings 256" \
    "$BIN" eval "$W/m" --text "$W/text.txt" --window 512
expect 0 "" "$BIN" eval "$W/m" --text "$W/text.txt" --window 512 --force-ctx
ok "eval --window vs max_position_embeddings"

# 2^26 positions x 512 bytes/token = 32 GiB of KV cache: refused before any
# allocation, naming the bytes. The address space is capped so the check has
# a known bound on any machine (not under ASan, which needs terabytes of it).
if sanitized; then
    echo "skip: KV-cache memory refusal under a sanitizer (no address-space cap possible)"
else
    (
        ulimit -v 4000000
        expect 2 "needs [0-9]+ bytes \(KV cache 512 bytes/token x 67108864.*only [0-9]+ bytes of memory are available" \
            "$BIN" run "$W/m" --ids 1,2 --max-tokens 1 --ctx 67108864 --force-ctx
    )
    ok "KV cache larger than the memory available: refused with bytes needed vs available"
fi

# tokenize: one line over the limit is refused; lines within it still work
expect 0 "" "$BIN" tokenize --max-line 16 "$W/m" <<< '"hi hi"'
[ "$(cat "$T/out")" = "[4,2,4]" ] || fail "tokenize gave $(cat "$T/out")"
{ printf '"'; for ((i = 0; i < 100; i++)); do printf 'hi '; done; printf '"\n'; } > "$W/long.txt"
expect 2 "line 1: the line is longer than 16 bytes" "$BIN" tokenize --max-line 16 "$W/m" < "$W/long.txt"
head -c $((65 << 20)) /dev/zero | tr '\0' 'h' > "$W/huge.txt"
expect 2 "line 1: the line is longer than 67108864 bytes" "$BIN" tokenize "$W/m" < "$W/huge.txt"
ok "tokenize: line size limit (default 64 MiB, --max-line)"
