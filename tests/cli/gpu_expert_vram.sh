#!/usr/bin/env bash
# --gpu-expert-vram (issue 14, models larger than VRAM): run, logits and eval
# document it; without --backend cuda it is refused (exit 2, naming the flag
# and what it needs) instead of being ignored; a malformed size is exit 2.
# With a GPU: `--gpu-expert-vram 0` (every MoE layer's experts in pinned
# host memory, read by the GPU over the bus) gives logits byte-identical to
# the default placement (all in device memory) on the demo model, and the
# CUDA backend's logits stay within the fixtures' bound of the CPU's (the
# test prints the reason and stops there on machines without one).
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
done
set +e
"$BIN" logits "$M" --ids 1,2,3 --out "$T/a.f32" --gpu-expert-vram 4G 2> "$T/err"
rc=$?
set -e
[ $rc = 2 ] || fail "--gpu-expert-vram without --backend cuda: exit $rc, expected 2"
grep -q -- "--gpu-expert-vram places experts for the CUDA backend: give --backend cuda" "$T/err" ||
    fail "refusal does not say what is needed: $(cat "$T/err")"
[ ! -e "$T/a.f32" ] || fail "a refused run left an output"
set +e
"$BIN" run "$M" --ids 1,2,3 --max-tokens 2 --gpu-expert-vram 12Q 2> "$T/err"
rc=$?
set -e
[ $rc = 2 ] || fail "malformed --gpu-expert-vram: exit $rc, expected 2"
grep -q -- "--gpu-expert-vram: expected a size" "$T/err" || fail "malformed size not named: $(cat "$T/err")"
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
"$BIN" logits "$M" --ids "$IDS" --backend cuda --prefill-chunk 1 --gpu-expert-vram 0 --verify --verify-tol 1e-4 > "$T/verify" 2>&1 ||
    fail "--verify with experts in host memory: $(tail -3 "$T/verify")"
echo "ok: $(tail -1 "$T/verify")"
