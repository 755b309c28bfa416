#!/usr/bin/env bash
# Issue 9 item 6: a write error on stdout (`> /dev/full`, a full disk) is an
# error: every command that prints to stdout exits 1 with a message on stderr
# instead of 0 with a truncated report, manifest or JSON. Baseline: all exit 0.
source "$(dirname "$0")/lib.bash"
[ -w /dev/full ] || { echo "skip: no /dev/full"; exit 0; }
need_fixture qwen3moe-a/bf16
need_fixture tiny-qwen35moe/bf16
M=$FX/qwen3moe-a/bf16
TQ=$FX/tiny-qwen35moe/bf16
head -c 3000 "$MK_SRC/README.md" > "$T/text.txt"

# full CMD...: CMD with stdout on /dev/full exits 1 naming standard output.
full() {
    expect 1 "standard output.*(No space|incomplete)" bash -c '"$@" > /dev/full' _ "$BIN" "$@"
    ok "$* > /dev/full: exit 1"
}

full --help
full --version
for c in inspect hash tokenize logits eval run profile quantize verify convert synth reshard; do
    full "$c" --help
done
full inspect "$M"
full inspect "$M" --json
full hash "$M"
printf '"hello world"\n' > "$T/lines"
expect 1 "(standard output|stdout).*No space" bash -c '"$@" < "$0" > /dev/full' "$T/lines" "$BIN" tokenize "$TQ"
ok "tokenize > /dev/full: exit 1"
full eval "$TQ" --text "$T/text.txt" --window 32 --tokens 100
full eval "$TQ" --text "$T/text.txt" --window 32 --tokens 100 --json
full run "$TQ" --prompt hi --max-tokens 5
full run "$TQ" --ids 1,2,3 --max-tokens 5
full run "$TQ" --prompt hi --max-tokens 5 --json
full profile "$TQ" --text "$T/text.txt" --out "$T/p.json" --window 32 --tokens 100
full quantize "$M" "$T/q"
full verify "$M" "$M"
full verify "$M" "$M" --json
full convert "$M" "$T/c" --to mlx --stats
