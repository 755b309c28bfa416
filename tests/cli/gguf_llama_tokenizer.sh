#!/usr/bin/env bash
# ctest-labels: slow
# `convert --to gguf` against llama.cpp (gguf_llama.bash says how): on a synthetic qwen3_moe with
# the trained tiny model's tokenizer.json (vocab 4096) the gpt2 vocabulary, merges and
# pre-tokenizer written into the GGUF make llama.cpp tokenize text exactly as moekit's tokenizer does.
. "${MK_SRC:?}/tests/cli/gguf_llama.bash"
# tokenizer: a synthetic qwen3_moe with the tiny trained model's tokenizer
"$BIN" synth "$T/syn" --arch qwen3_moe --preset tiny --vocab 4096 --format bf16 --quiet
cp "$TINYM/bf16/tokenizer.json" "$TINYM/bf16/tokenizer_config.json" "$T/syn/"
"$BIN" convert "$T/syn" "$T/syn.gguf" --to gguf --quiet
"$PEER/mk_llama" info "$T/syn.gguf" > "$T/info"
for k in "tokenizer.ggml.model str 4 bytes" "tokenizer.ggml.pre str 5 bytes" "tokenizer.ggml.tokens array of 4096" \
         "tokenizer.ggml.merges array of 3837" "tokenizer.ggml.eos_token_id u32 2" \
         "tokenizer.ggml.padding_token_id u32 0" "tokenizer.chat_template str 196 bytes"; do
    grep -qx "kv $k" "$T/info" || fail "syn.gguf: no '$k' (llama.cpp reads: $(grep tokenizer "$T/info" | tr '\n' ';'))"
done
{ head -n 60 "$TINYM/devtext.txt"; printf 'h\303\251llo w\303\266rld \342\200\224 \346\227\245\346\234\254 ?!  \t tabs   and    spaces\n\n\n12345 6789\n'; } > "$T/text"
"$PEER/mk_llama" tokenize "$T/syn.gguf" "$T/text" 2>/dev/null | tr ' ' '\n' > "$T/ll.tok"
awk 'BEGIN { ORS = ""; print "\"" } { gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); gsub(/\t/, "\\t"); print $0 "\\n" }
     END { print "\"\n" }' "$T/text" | "$BIN" tokenize "$TINYM/bf16" | tr -d '[]' | tr ',' '\n' > "$T/mk.tok"
n=$(wc -l < "$T/mk.tok")
[ "$n" -gt 500 ] || fail "tokenizer: only $n tokens from moekit"
cmp -s "$T/ll.tok" "$T/mk.tok" || { diff "$T/ll.tok" "$T/mk.tok" | head -5 >&2; fail "tokenizer: llama.cpp's ids differ from moekit's"; }
echo "ok: tokenizer: llama.cpp on moekit's GGUF gives moekit's $n ids on $(wc -c < "$T/text") bytes of text"
echo "gguf_llama_tokenizer: all passed"
