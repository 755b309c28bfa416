#!/usr/bin/env bash
# moekit tokenize --chat with the chat templates GLM-4.5/4.6 (glm4_moe),
# GLM-4.7(-Flash), MiniMax-M2 and gpt-oss (harmony) ship, against the
# templates themselves.
#
# The reference templates are the released chat_template.jinja files as
# llama.cpp's source ships them in models/templates (GLM-4.6.jinja,
# GLM-4.7-Flash.jinja, MiniMax-M2.jinja, openai-gpt-oss-120b.jinja): the test-only llama.cpp peer
# that scripts/install-deps.d/llama.sh installs into .peers/llama.cpp
# ($MK_PEERS overrides .peers); they are not copied into this repository.
# @huggingface/jinja (scripts/install-deps.d/tokenizer.sh) renders each
# conversation of tests/tokenizer/chats.jsonl with them, and
# moekit must produce the same text from a model folder holding only that
# chat_template.jinja: first the template is recognised, then rendered by
# moekit's C renderer. Where a template raises (a tool result without a tool
# call) moekit must refuse; where it silently drops a message (a second
# system message) moekit refuses too, and the check confirms the template
# really left that text out. Done with and without the generation prompt, and
# with enable_thinking=false where the template reads it. gpt-oss writes
# today's date: both sides use UTC, and a run that straddles midnight is redone.
# Without node, @huggingface/jinja or the llama.cpp peer it skips, saying why.
set -euo pipefail

: "${MK_BIN:?MK_BIN must point to the moekit binary}"
: "${MK_SRC:?MK_SRC must point to the repository}"
REF="$MK_SRC/tests/tokenizer/ref_chat.mjs"
CHATS="$MK_SRC/tests/tokenizer/chats.jsonl"
TPL="${MK_PEERS:-$MK_SRC/.peers}/llama.cpp/models/templates"
MODS="${MK_TOKENIZERS:-$MK_SRC/.tokenizers}/node_modules"

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*"; exit 77; }

command -v node >/dev/null || skip "node is not installed (Node.js >= 18 runs @huggingface/jinja)"
[ -f "$MODS/@huggingface/jinja/package.json" ] ||
    skip "@huggingface/jinja is not installed in $MODS; run: (cd $MK_SRC && bash scripts/install-deps.d/tokenizer.sh)"
[ -f "$TPL/GLM-4.6.jinja" ] ||
    skip "the llama.cpp peer is not installed ($TPL/GLM-4.6.jinja missing): run scripts/install-deps.d/llama.sh" \
         "(needs npm and network once)"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# moekit, one conversation per run: a refusal is recorded, not fatal.
moekit_lines() { # dir flags... < chats
    local dir=$1 line
    shift
    while IFS= read -r line; do
        if ! printf '%s\n' "$line" | "$MK_BIN" tokenize --chat "$@" "$dir" 2>"$TMP/err"; then
            node -e 'process.stdout.write(JSON.stringify({refused: require("fs").readFileSync(process.argv[1], "utf8")}) + "\n")' "$TMP/err"
        fi
    done <"$CHATS"
}

check() { # name template kind flags...
    local name=$1 file=$2 kind=$3
    shift 3
    local dir="$TMP/$name" tries=0
    mkdir -p "$dir"
    cp "$TPL/$file" "$dir/chat_template.jinja"
    # the template is recognised as the family it is
    printf '[{"role": "user", "content": "x"}]\n' | "$MK_BIN" tokenize --chat "$dir" >"$TMP/a"
    printf '[{"role": "user", "content": "x"}]\n' | "$MK_BIN" tokenize --chat --template "$kind" "$dir" >"$TMP/b"
    cmp -s "$TMP/a" "$TMP/b" || fail "$name: $file is not detected as $kind"
    while :; do
        local d0 d1
        d0=$(date -u +%F)
        TZ=UTC node "$REF" "$dir/chat_template.jinja" "$@" <"$CHATS" >"$TMP/$name.ref"
        moekit_lines "$dir" "$@" >"$TMP/$name.got"
        d1=$(date -u +%F)
        [ "$d0" = "$d1" ] && break
        tries=$((tries + 1))
        [ $tries -lt 3 ] || fail "$name: the date kept changing"
    done
    node "$REF" compare "$CHATS" "$TMP/$name.ref" "$TMP/$name.got" ||
        fail "$name: moekit's rendering differs from the template's (lines above)"
    echo "ok: $name ($(wc -l <"$CHATS") conversations${*:+, $*})"
}

check glm4 GLM-4.6.jinja glm4
check glm4-nothink GLM-4.6.jinja glm4 --no-think
check glm4-nogen GLM-4.6.jinja glm4 --no-gen-prompt
check glm4.7 GLM-4.7-Flash.jinja glm4.7
check glm4.7-nothink GLM-4.7-Flash.jinja glm4.7 --no-think
check glm4.7-nogen GLM-4.7-Flash.jinja glm4.7 --no-gen-prompt
check minimax-m2 MiniMax-M2.jinja minimax-m2
check minimax-m2-nogen MiniMax-M2.jinja minimax-m2 --no-gen-prompt
check harmony openai-gpt-oss-120b.jinja harmony
check harmony-nogen openai-gpt-oss-120b.jinja harmony --no-gen-prompt

# A GLM template moekit does not render is refused, not guessed.
mkdir -p "$TMP/glm-other"
printf '[gMASK]<sop>{%% for m in messages %%}<|{{ m.role }}|>{{ m.content }}{%% endfor %%}<|assistant|><think>' \
    >"$TMP/glm-other/chat_template.jinja"
if printf '[{"role": "user", "content": "x"}]\n' | "$MK_BIN" tokenize --chat "$TMP/glm-other" 2>"$TMP/err"; then
    fail "an unknown GLM template was rendered"
fi
grep -q "other than GLM-4.5/4.6's and GLM-4.7's" "$TMP/err" || fail "unknown GLM template: $(cat "$TMP/err")"
echo PASS
