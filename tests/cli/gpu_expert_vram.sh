#!/usr/bin/env bash
# --gpu-expert-vram (issue 14, models larger than VRAM): run, logits and eval
# document it; without --backend cuda it is refused (exit 2, naming the flag
# and what it needs) instead of being ignored; a malformed size is exit 2.
# With a GPU: `--gpu-expert-vram 0` (every MoE layer's experts in pinned
# host memory, read by the GPU over the bus) gives logits byte-identical to
# the default placement (all in device memory) on the demo model, and the
# CUDA backend's logits stay within the fixtures' bound of the CPU's (the
# test prints the reason and stops there on machines without one).
# --gpu-expert-cache likewise: documented, refused without --backend cuda,
# a malformed size is exit 2, and with a GPU the logits through the VRAM
# cache of the host layers' hottest experts are byte-identical.
set -euo pipefail
BIN=${MK_BIN:?}
. "$(dirname "$0")/fixtures.bash"
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-gev-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
M=$TINYM/bf16
for c in run logits eval; do
    help=$("$BIN" "$c" --help 2>&1) || true # whole, then searched: grep -q on a pipe would cut it (SIGPIPE)
    grep -q -- "--gpu-expert-vram SIZE|auto" <<< "$help" || fail "$c --help does not document --gpu-expert-vram"
    grep -q -- "--gpu-expert-cache SIZE" <<< "$help" || fail "$c --help does not document --gpu-expert-cache"
done
# refused: exit 2, the message names what is wrong, no output left
refused() { # WHAT MESSAGE COMMAND...
    local what=$1 msg=$2 rc
    shift 2
    rm -f "$T/a.f32"
    set +e
    "$@" 2> "$T/err"
    rc=$?
    set -e
    [ $rc = 2 ] || fail "$what: exit $rc, expected 2"
    grep -q -- "$msg" "$T/err" || fail "$what: the message does not say '$msg': $(cat "$T/err")"
    [ ! -e "$T/a.f32" ] || fail "$what: a refused run left an output"
}
refused "--gpu-expert-cache without --backend cuda" \
    "--gpu-expert-cache keeps experts for the CUDA backend: give --backend cuda" \
    "$BIN" logits "$M" --ids 1,2,3 --out "$T/a.f32" --gpu-expert-cache 1M
refused "malformed --gpu-expert-cache" "--gpu-expert-cache: expected a size" \
    "$BIN" logits "$M" --ids 1,2,3 --out "$T/a.f32" --gpu-expert-cache lots
refused "--gpu-expert-vram without --backend cuda" \
    "--gpu-expert-vram places experts for the CUDA backend: give --backend cuda" \
    "$BIN" logits "$M" --ids 1,2,3 --out "$T/a.f32" --gpu-expert-vram 4G
refused "malformed --gpu-expert-vram" "--gpu-expert-vram: expected a size" \
    "$BIN" run "$M" --ids 1,2,3 --max-tokens 2 --gpu-expert-vram 12Q
# with a GPU
if ! "$BIN" logits "$M" --ids 1,2,3 --out "$T/probe.f32" --backend cuda 2> "$T/probe.err"; then
    echo "no GPU here ($(tail -1 "$T/probe.err")): the placement checks need one"
    exit 0
fi
IDS=$(seq -s, 7 97 4000) # the demo model's vocabulary is 4096
"$BIN" logits "$M" --ids "$IDS" --out "$T/dev.f32" --backend cuda --prefill-chunk 1 2> "$T/dev.err" ||
    fail "logits on CUDA: $(tail -2 "$T/dev.err")"
"$BIN" logits "$M" --ids "$IDS" --out "$T/host.f32" --backend cuda --prefill-chunk 1 --gpu-expert-vram 0 \
    2> "$T/host.err" || fail "logits on CUDA, experts in host memory: $(tail -2 "$T/host.err")"
cmp "$T/dev.f32" "$T/host.f32" || fail "experts in host memory give other logits than in device memory"
# a VRAM cache of the host layers' hottest experts: read from device memory
# once copied (counts every 16 one-token steps), the same bytes: the same logits
"$BIN" logits "$M" --ids "$IDS" --out "$T/xc.f32" --backend cuda --prefill-chunk 1 --gpu-expert-vram 0 \
    --gpu-expert-cache 1M 2> "$T/xc.err" || fail "logits on CUDA with an expert cache: $(tail -2 "$T/xc.err")"
! grep -q "no expert cache" "$T/xc.err" || fail "the expert cache was not made: $(cat "$T/xc.err")"
cmp "$T/dev.f32" "$T/xc.f32" || fail "experts read through the VRAM cache give other logits"
# greedy decode: recorded steps replayed (the cache's ticks at each replay)
"$BIN" run "$M" --ids 407,268 --max-tokens 64 --json --backend cuda --gpu-expert-vram 0 > "$T/run0.json" \
    2> "$T/run0.err" || fail "run on CUDA, experts in host memory: $(tail -2 "$T/run0.err")"
"$BIN" run "$M" --ids 407,268 --max-tokens 64 --json --backend cuda --gpu-expert-vram 0 --gpu-expert-cache 1M \
    --stats > "$T/run1.json" 2> "$T/run1.err" || fail "run on CUDA with an expert cache: $(tail -2 "$T/run1.err")"
cmp "$T/run0.json" "$T/run1.json" || fail "greedy tokens through the VRAM cache differ"
# ... and the cache was there and used: slots, copies and a share of reads from it above 0
xline=$(grep "^\[gpu experts\]" "$T/run1.err") || fail "run --stats printed no [gpu experts] line: $(cat "$T/run1.err")"
echo "$xline"
[[ $xline =~ expert\ cache\ ([0-9]+)\ slots,\ ([0-9]+)\ copies,\ ([0-9.]+)\ of ]] || fail "unparsed: $xline"
[ "${BASH_REMATCH[1]}" -gt 0 ] && [ "${BASH_REMATCH[2]}" -gt 0 ] || fail "the expert cache was not made or never filled: $xline"
awk -v h="${BASH_REMATCH[3]}" 'BEGIN { exit !(h > 0) }' || fail "no routed expert was read from the cache: $xline"
"$BIN" logits "$M" --ids "$IDS" --backend cuda --prefill-chunk 1 --gpu-expert-vram 0 --verify --verify-tol 1e-4 > "$T/verify" 2>&1 ||
    fail "--verify with experts in host memory: $(tail -3 "$T/verify")"
echo "ok: $(tail -1 "$T/verify")"
# a 4-bit model's prefill of more than 64 tokens: the grouped MoE slot on the int8 GEMM (the
# default where the engine's prefill is int8), its cp.async copies reading the experts over the bus
# when they are in host memory: the same bytes, so the same logits as in device memory
Q=$T/q4
"$BIN" quantize "$M" "$Q" --bits 4 --group-size 64 --threads 2 --quiet > /dev/null || fail "quantizing the demo model"
LONG=$(seq -s, 5 13 4000) # 308 tokens: one chunk, past the one-token steps' sizes
"$BIN" logits "$Q" --ids "$LONG" --out "$T/q4dev.f32" --backend cuda 2> "$T/q4dev.err" ||
    fail "4-bit logits on CUDA: $(tail -2 "$T/q4dev.err")"
"$BIN" logits "$Q" --ids "$LONG" --out "$T/q4host.f32" --backend cuda --gpu-expert-vram 0 2> "$T/q4host.err" ||
    fail "4-bit logits on CUDA, experts in host memory: $(tail -2 "$T/q4host.err")"
cmp "$T/q4dev.f32" "$T/q4host.f32" || fail "4-bit prefill: experts in host memory give other logits than in device memory"
echo "ok: a 4-bit prefill of 308 tokens gives the same logits with its experts in host memory"
