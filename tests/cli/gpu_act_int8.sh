#!/usr/bin/env bash
# --act-int8 on the CUDA backend (issue 14): the device's decode products over
# MLX affine weights follow the flag (on by default, as a run's --help says),
# and compute the CPU's int8 rule. On the demo model quantized to 4 bits, one
# token a step (--prefill-chunk 1: every product a decode product):
# - the GPU's default logits are its --act-int8 on logits, bitwise, and
#   MK_ACT_INT8=0 gives its --act-int8 off logits, bitwise;
# - the GPU on int8 is within 1e-4 (rel L2) of the CPU on int8, and the GPU
#   on float within 1e-5 of the CPU on float: each the same rule up to float
#   rounding (and, on int8, the rare value rounded to the other integer by
#   it);
# - control: int8 and float are apart by more than 10x that bound on each
#   backend, so the checks above tell the two rules apart.
# Without a GPU: the test says so and stops (exit 0).
set -euo pipefail
BIN=${MK_BIN:?}
. "$(dirname "$0")/fixtures.bash"
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-gi8-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
"$BIN" run --help 2>&1 | grep -q -- "with --backend cuda" || fail "run --help does not say --act-int8's default on CUDA"
if ! "$BIN" logits "$TINYM/bf16" --ids 1,2,3 --out "$T/probe.f32" --backend cuda 2> "$T/probe.err"; then
    echo "no GPU here ($(tail -1 "$T/probe.err")): the int8 checks need one"
    exit 0
fi
"$BIN" quantize "$TINYM/bf16" "$T/q4" --bits 4 --group-size 64 --threads 2 --quiet > /dev/null
IDS=$(seq -s, 7 131 4000) # the demo model's vocabulary is 4096
lg() { # NAME ARGS...
    local name=$1
    shift
    "$BIN" logits "$T/q4" --ids "$IDS" --out "$T/$name.f32" --prefill-chunk 1 --threads 2 "$@" 2> "$T/$name.err" ||
        fail "logits $*: $(tail -2 "$T/$name.err")"
}
rel() { # A B: rel L2 of A against B
    paste <(od -An -v -f -w4 "$T/$1.f32") <(od -An -v -f -w4 "$T/$2.f32") |
        awk '{ d = $1 - $2; e += d * d; r += $2 * $2 } END { printf "%.3g", sqrt(e / r) }'
}
below() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }
lg cpu8 --act-int8 on
lg cpuf --act-int8 off
lg gdef --backend cuda
lg g8 --backend cuda --act-int8 on
lg gf --backend cuda --act-int8 off
MK_ACT_INT8=0 lg genv0 --backend cuda
cmp -s "$T/gdef.f32" "$T/g8.f32" || fail "the GPU's default is not --act-int8 on"
cmp -s "$T/genv0.f32" "$T/gf.f32" || fail "MK_ACT_INT8=0 is not --act-int8 off on the GPU"
r8=$(rel g8 cpu8) rf=$(rel gf cpuf) gap_g=$(rel g8 gf) gap_c=$(rel cpu8 cpuf)
echo "rel L2: GPU int8 vs CPU int8 $r8, GPU float vs CPU float $rf; int8 vs float: GPU $gap_g, CPU $gap_c"
below "$r8" 1e-4 || fail "the GPU on int8 activations is $r8 from the CPU's int8 logits (bound 1e-4)"
below "$rf" 1e-5 || fail "the GPU on float activations is $rf from the CPU's float logits (bound 1e-5)"
below 1e-3 "$gap_g" || fail "the GPU's int8 and float logits are only $gap_g apart: the switch did not reach it"
below 1e-3 "$gap_c" || fail "the CPU's int8 and float logits are only $gap_c apart"
echo "gpu_act_int8: ok"
