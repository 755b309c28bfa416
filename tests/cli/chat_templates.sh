#!/usr/bin/env bash
# moekit tokenize --chat with the chat templates GLM-4.5/4.6 (glm4_moe),
# GLM-4.7(-Flash), MiniMax-M2, gpt-oss (harmony), Kimi-K2-Instruct and
# DeepSeek-V3.2 ship, against the templates themselves.
#
# The reference templates are the released chat_template.jinja files as
# llama.cpp's source ships them in models/templates (GLM-4.6.jinja,
# GLM-4.7-Flash.jinja, MiniMax-M2.jinja, openai-gpt-oss-120b.jinja,
# Kimi-K2-Instruct.jinja, deepseek-ai-DeepSeek-V3.2.jinja): the test-only llama.cpp peer
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

# Each template is first recognised as the family it is; then every case's
# conversations go through one moekit run (--keep-going: a refusal is
# {"error": ...} in its line), and one node process renders them all with the
# templates and compares.
: >"$TMP/jobs"
check() { # name template kind flags... ($CTX: further template variables, JSON)
    local name=$1 file=$2 kind=$3
    shift 3
    local dir="$TMP/$file.d" rc=0
    if [ ! -d "$dir" ]; then
        mkdir -p "$dir"
        cp "$TPL/$file" "$dir/chat_template.jinja"
        printf '[{"role": "user", "content": "x"}]\n' | "$MK_BIN" tokenize --chat "$dir" >"$TMP/a"
        printf '[{"role": "user", "content": "x"}]\n' | "$MK_BIN" tokenize --chat --template "$kind" "$dir" >"$TMP/b"
        cmp -s "$TMP/a" "$TMP/b" || fail "$name: $file is not detected as $kind"
    fi
    "$MK_BIN" tokenize --chat --keep-going "$@" "$dir" <"$CHATS" >"$TMP/$name.got" 2>/dev/null || rc=$?
    [ "$rc" = 0 ] || [ "$rc" = 2 ] || fail "$name: moekit tokenize --chat exited $rc"
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$dir/chat_template.jinja" "$TMP/$name.got" "$*" "${CTX:-}" >>"$TMP/jobs"
}

checks() {
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
    check kimi-k2 Kimi-K2-Instruct.jinja kimi-k2
    # the BOS its tokenizer_config.json names
    local ds='{"bos_token": "<｜begin▁of▁sentence｜>"}'
    CTX=$ds check deepseek3.2 deepseek-ai-DeepSeek-V3.2.jinja deepseek3.2
    CTX=$ds check deepseek3.2-nothink deepseek-ai-DeepSeek-V3.2.jinja deepseek3.2 --no-think
    CTX=$ds check deepseek3.2-nogen deepseek-ai-DeepSeek-V3.2.jinja deepseek3.2 --no-gen-prompt
    check kimi-k2-nogen Kimi-K2-Instruct.jinja kimi-k2 --no-gen-prompt
}

tries=0
while :; do
    : >"$TMP/jobs"
    d0=$(date -u +%F)
    checks
    ok=1
    TZ=UTC node "$REF" jobs "$CHATS" "$TMP/jobs" >"$TMP/cmp" || ok=0
    d1=$(date -u +%F)
    if [ "$d0" = "$d1" ]; then
        [ $ok = 1 ] || { cat "$TMP/cmp"; fail "moekit's rendering differs from the template's"; }
        break
    fi
    tries=$((tries + 1))
    [ $tries -lt 3 ] || fail "the date kept changing"
done
cat "$TMP/cmp"
[ "$(grep -c '^ok: ' "$TMP/cmp")" = 15 ] || fail "expected 15 cases to pass"

# A GLM template moekit does not render is refused, not guessed.
mkdir -p "$TMP/glm-other"
printf '[gMASK]<sop>{%% for m in messages %%}<|{{ m.role }}|>{{ m.content }}{%% endfor %%}<|assistant|><think>' \
    >"$TMP/glm-other/chat_template.jinja"
if printf '[{"role": "user", "content": "x"}]\n' | "$MK_BIN" tokenize --chat "$TMP/glm-other" 2>"$TMP/err"; then
    fail "an unknown GLM template was rendered"
fi
grep -q "other than GLM-4.5/4.6's and GLM-4.7's" "$TMP/err" || fail "unknown GLM template: $(cat "$TMP/err")"
# Kimi templates moekit does not render (an earlier Kimi-K2 one, with another
# default system message; Kimi-K2-Thinking's) are refused, not guessed.
for f in moonshotai-Kimi-K2.jinja Kimi-K2-Thinking.jinja; do
    mkdir -p "$TMP/$f.other"
    cp "$TPL/$f" "$TMP/$f.other/chat_template.jinja"
    if printf '[{"role": "user", "content": "x"}]\n' | "$MK_BIN" tokenize --chat "$TMP/$f.other" 2>"$TMP/err"; then
        fail "$f was rendered as a template moekit knows"
    fi
    grep -q "other than Kimi-K2-Instruct's" "$TMP/err" || fail "$f: $(cat "$TMP/err")"
done
echo PASS
