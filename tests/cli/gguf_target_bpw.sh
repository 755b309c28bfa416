#!/usr/bin/env bash
# ctest-labels: slow
# `convert --to gguf --target-bpw X --profile P`: moekit's allocator picks a ggml type per tensor
# (Q4_K / Q5_K / Q6_K / Q8_0, each layer's experts of a projection one type) from `moekit
# profile`'s measurements, on the trained tiny model (512 calibration tokens):
#   - the file keeps the budget: bits of its 2-D weights (read back by llama.cpp's GGUF reader,
#     sizes from the ggml types) <= X per weight, at X = 5.0 and 6.5, and the larger budget
#     stores more; the smaller mixes at least two quantized types;
#   - every tensor is byte-identical to llama-quantize's (no importance matrix) from moekit's BF16
#     GGUF given the same per-tensor types (--tensor-type-file), and llama.cpp runs the file;
#   - --target-bpw without --profile, with --gguf-type or --to mlx, below the least the widths
#     allow, and a profile of another model exit 2 naming the cause.
. "${MK_SRC:?}/tests/cli/gguf_llama.bash"
. "$MK_SRC/tests/cli/lib.bash" # expect
TINY=$TINYM/bf16
"$BIN" profile "$TINY" --text "$TINYM/devtext.txt" --tokens 512 --threads 2 --quiet --out "$T/p.json" >/dev/null

# bits per weight of FILE's 2-D weights (ssm_conv1d aside: not a linear module), from its types
file_bpw() {
    "$PEER/mk_llama" info "$1" | awk '
    function bpe(t) { if (t == "f32") return 32; if (t == "f16" || t == "bf16") return 16; if (t == "q8_0") return 8.5;
                      if (t == "q4_0") return 4.5; if (t == "q5_0") return 5.5; if (t == "q5_1") return 6;
                      if (t == "q4_K") return 4.5; if (t == "q5_K") return 5.5; if (t == "q6_K") return 6.5625;
                      print "unknown type " t > "/dev/stderr"; exit 1 }
    $1 != "kv" { n = split($3, d, ","); if (n < 2 || $1 ~ /conv1d/) next; p = 1; for (i = 1; i <= n; i++) p *= d[i]
                 P += p; B += p * bpe($2) }
    END { printf "%.4f", B / P }'
}
"$BIN" convert "$TINY" "$T/bf16.gguf" --to gguf --gguf-type bf16 --quiet
prev=0
for x in 5.0 6.5; do
    "$BIN" convert "$TINY" "$T/a$x.gguf" --to gguf --target-bpw "$x" --profile "$T/p.json" --quiet
    b=$(file_bpw "$T/a$x.gguf")
    le "$b" "$x" || fail "--target-bpw $x: the file stores $b bits per weight"
    awk -v a="$b" -v p="$prev" 'BEGIN { exit !(a > p) }' || fail "--target-bpw $x stores $b bpw, not more than $prev"
    prev=$b
    "$PEER/mk_llama" info "$T/a$x.gguf" | awk '$1 != "kv" && $2 != "f32" { print "^" $1 "$=" tolower($2) }' |
        sed 's/\./\\./g' > "$T/types"
    kinds=$(cut -d= -f2 "$T/types" | sort -u | tr '\n' ' ')
    [ "$x" != 5.0 ] || [ "$(cut -d= -f2 "$T/types" | sort -u | wc -l)" -ge 2 ] || fail "--target-bpw 5.0: one type only ($kinds)"
    "$PEER/llama-quantize" --pure --tensor-type-file "$T/types" "$T/bf16.gguf" "$T/a$x.lq.gguf" Q8_0 2 >"$T/lq.log" 2>&1 ||
        { tail -5 "$T/lq.log" >&2; fail "--target-bpw $x: llama-quantize with moekit's types failed"; }
    "$PEER/mk_llama" cmp "$T/a$x.gguf" "$T/a$x.lq.gguf" >"$T/cmp" ||
        { head -20 "$T/cmp" >&2; fail "--target-bpw $x: moekit's GGUF differs from llama-quantize's with the same types"; }
    "$PEER/mk_llama" logits "$T/a$x.gguf" <(echo 1 2 3 4 5 6 7 8) "$T/ll.f32" 2 >/dev/null 2>"$T/err" ||
        { cat "$T/err" >&2; fail "--target-bpw $x: llama.cpp could not run the file"; }
    echo "ok: --target-bpw $x: $b bits per weight stored ($kinds), every tensor byte-identical to llama-quantize's" \
         "with those types ($(tail -1 "$T/cmp")), llama.cpp runs it"
done

expect 2 "go together" "$BIN" convert "$TINY" "$T/x.gguf" --to gguf --target-bpw 5
expect 2 "drop --gguf-type" "$BIN" convert "$TINY" "$T/x.gguf" --to gguf --target-bpw 5 --profile "$T/p.json" --gguf-type q8_0
expect 2 "is for --to gguf" "$BIN" convert "$TINY" "$T/x" --to mlx --target-bpw 5 --profile "$T/p.json"
expect 2 "below the least" "$BIN" convert "$TINY" "$T/x.gguf" --to gguf --target-bpw 4.6 --profile "$T/p.json"
expect 2 "no tensor of this model" "$BIN" convert "$FX/qwen3moe-a/bf16" "$T/x.gguf" --to gguf --target-bpw 5 --quiet \
    --profile "$T/p.json"
[ ! -e "$T/x.gguf" ] && [ ! -e "$T/x" ] || fail "a refused convert left output behind"
echo "gguf_target_bpw: all passed"
