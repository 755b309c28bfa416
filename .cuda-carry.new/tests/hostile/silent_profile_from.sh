#!/usr/bin/env bash
# Issue 9 item 12: `profile --from P` checks the profile's config hash and
# refuses a profile of another model, even one whose module names and shapes
# all agree (here: the same weights under a config with another rms_norm_eps,
# i.e. a different model). Baseline: allocated from it, exit 0.
source "$(dirname "$0")/lib.bash"
need_fixture tiny-qwen35moe/bf16
TQ=$FX/tiny-qwen35moe/bf16
head -c 6000 "$MK_SRC/README.md" > "$T/text.txt"
"$BIN" profile "$TQ" --text "$T/text.txt" --window 32 --tokens 200 --quiet --out "$T/p.json" \
    > /dev/null 2>&1 || fail "profiling $TQ"
grep -q '"config_xxh3_64": *"[0-9a-f]\{16\}"' "$T/p.json" || fail "profile records no config hash"

mkdir "$T/other"
for f in "$TQ"/*; do ln -s "$f" "$T/other/"; done
rm "$T/other/config.json"
sed -e 's/"rms_norm_eps": [^,]*/"rms_norm_eps": 1e-05/' "$TQ/config.json" > "$T/other/config.json"
cmp -s "$TQ/config.json" "$T/other/config.json" && fail "config unchanged"

snapshot "$T/other" other
expect 2 "profile was measured on .*config.json hashes to [0-9a-f]{16}, but .*other/config.json hashes to [0-9a-f]{16}: a profile of another model" \
    "$BIN" profile "$T/other" --from "$T/p.json" --target-bpw 4.25 --out "$T/a.json"
[ ! -e "$T/a.json" ] || fail "an allocation was written from another model's profile"
unchanged "$T/other" other
ok "profile --from: another model's profile refused (config hash), nothing written"

# the profile's own model still allocates from it
expect 0 "" "$BIN" profile "$TQ" --from "$T/p.json" --target-bpw 4.25 --out "$T/a2.json"
[ -s "$T/a2.json" ] || fail "no allocation written"
ok "profile --from on its own model: allocation written"
