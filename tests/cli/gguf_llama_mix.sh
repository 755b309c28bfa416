#!/usr/bin/env bash
# ctest-labels: slow
# `convert --to gguf` against llama.cpp (gguf_llama.bash says how): the layer rules of the mixes
# Q4_K_M / Q5_K_M on a synthetic qwen3_moe large enough to exercise them.
. "${MK_SRC:?}/tests/cli/gguf_llama.bash"
# The mixes' layer rules need rows of whole super-blocks and more layers than the fixtures: the
# 30B-A3B shapes cut to 4 layers and 2 experts (not 8, whose rule makes attn_v / attn_k Q8_0):
# "more bits" (Q6_K) attn_v and ffn_down in layers 2 and 3 only, output Q6_K, the rest Q4_K / Q5_K
"$BIN" synth "$T/big" --arch qwen3_moe --preset 30b-a3b --layers 4 --experts 2 --vocab 512 --format bf16 --quiet
for ty in bf16 q4_k_m q5_k_m; do
    "$BIN" convert "$T/big" "$T/big.$ty.gguf" --to gguf --gguf-type "$ty" --quiet
done
rm -rf "$T/big"
for k in "q4_k_m - Q4_K_M" "q5_k_m - Q5_K_M"; do
    set -- $k
    same_as_lq big "$T/big.bf16.gguf" "$@"
    "$PEER/mk_llama" info "$T/big.$1.gguf" | awk '$1 !~ /^kv/ { print $1, $2 }' > "$T/types"
    for want in "blk.2.attn_v.weight q6_K" "blk.3.ffn_down_exps.weight q6_K" "blk.1.ffn_down_exps.weight" \
                "output.weight q6_K"; do
        grep -q "^$want" "$T/types" || fail "big $1: no '$want' (the mix rule was not exercised)"
    done
    grep -qx "blk.1.ffn_down_exps.weight q6_K" "$T/types" && fail "big $1: layer 1's ffn_down is Q6_K"
    rm -f "$T/big.$1.gguf" "$T/big.$1.lq.gguf"
done
rm -f "$T/big.bf16.gguf"
echo "gguf_llama_mix: all passed"
