#!/usr/bin/env bash
# convert / quantize --pack-experts from the command line: --help says what
# it does; the counters and inspect report every expert as one contiguous
# block, 4 KiB-aligned when the expert's size allows; a packed run killed
# mid-shard resumes byte-identical to an uninterrupted one, and a journal
# left by an unpacked run is not resumed into a packed output (nor the
# other way round); --experts fused with --pack-experts is refused.
set -euo pipefail
BIN=${MK_BIN:?}
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-pack-XXXXXX")
trap 'rm -rf "$T"' EXIT
# shellcheck source=lib.bash
. "$(dirname "$0")/lib.bash"

"$BIN" convert --help > "$T/h1"
"$BIN" quantize --help > "$T/h2"
grep -q -- "--pack-experts  *each routed expert" "$T/h1" || fail "convert --help does not explain --pack-experts"
grep -q -- "--pack-experts  *each routed expert" "$T/h2" || fail "quantize --help does not explain --pack-experts"

# tiny qwen3_moe: each bf16 expert is 3 x (I x H) x 2 bytes
"$BIN" synth "$T/src" --arch qwen3_moe --preset tiny --format bf16 --layers 2 --experts 8 --quiet
"$BIN" convert "$T/src" "$T/ref" --to hf --pack-experts --shard-size 1M --stats > "$T/st" 2> "$T/err"
np=$(awk '$1 == "experts_packed" { print $2 }' "$T/st")
na=$(awk '$1 == "experts_aligned" { print $2 }' "$T/st")
[ "$np" = 16 ] || fail "expected 16 packed experts, got '$np'"
grep -q "packed layout: 16 experts" "$T/err" || { cat "$T/err" >&2; fail "no packed-layout line on stderr"; }
"$BIN" inspect "$T/ref" > "$T/insp"
grep -q "expert reads    16 of 16 experts one contiguous block (one read each), $na of them 4 KiB-aligned" \
    "$T/insp" || { cat "$T/insp" >&2; fail "inspect does not report the packed layout"; }
"$BIN" inspect --json "$T/ref" > "$T/json"
bytes=$(grep -o '"bytes_per_expert": *[0-9]*' "$T/json" | grep -o '[0-9]*$')
if [ $((bytes % 4096)) -eq 0 ]; then
    [ "$na" = 16 ] || fail "experts of $bytes bytes (a multiple of 4096): only $na of 16 aligned"
else
    grep -q "not a multiple of 4096" "$T/err" || fail "unaligned experts ($bytes bytes) not reported"
fi
echo "ok: 16 experts of $bytes bytes packed, $na aligned, reported by convert and inspect"

# resume: killed inside a shard and after a journal entry, then rerun
for point in item:5 journal:1; do
    rm -rf "$T/res" "$T/res.partial"
    set +e
    MK_CONVERT_CRASH=$point sh -c '"$@"; exit $?' sh "$BIN" convert "$T/src" "$T/res" --to hf --pack-experts \
        --shard-size 1M --quiet 2>/dev/null
    rc=$?
    set -e
    [ $rc -eq 137 ] || fail "crash at $point: exit $rc, expected 137"
    "$BIN" convert "$T/src" "$T/res" --to hf --pack-experts --shard-size 1M --quiet
    diff -r "$T/ref" "$T/res" >/dev/null || fail "packed output resumed after $point differs"
    echo "ok: packed convert killed at $point resumed byte-identical"
done

# an unpacked run's journal is not resumed by a packed run
rm -rf "$T/res" "$T/res.partial"
set +e
MK_CONVERT_CRASH=journal:1 sh -c '"$@"; exit $?' sh "$BIN" convert "$T/src" "$T/res" --to hf --shard-size 1M \
    --quiet 2>/dev/null
set -e
"$BIN" convert "$T/src" "$T/res" --to hf --pack-experts --shard-size 1M --quiet
diff -r "$T/ref" "$T/res" >/dev/null || fail "a packed run resumed an unpacked run's shards"
echo "ok: an unpacked journal is not resumed into a packed output"

# quantize: one block per expert; the note says mlx-lm cannot load it (qwen3_moe)
"$BIN" quantize "$T/src" "$T/q4" --pack-experts --quiet 2> "$T/qerr"
! grep -q "packed layout" "$T/qerr" || fail "quantize --quiet printed the packed-layout summary"
grep -q "mlx-lm cannot load" "$T/qerr" || { cat "$T/qerr" >&2; fail "quantize: no note on mlx-lm"; }
"$BIN" inspect "$T/q4" > "$T/insp2"
grep -q "expert reads    16 of 16 experts one contiguous block" "$T/insp2" || fail "inspect: quantized packed experts not contiguous"
echo "ok: quantize --pack-experts"

# quantize --pack-experts of a compressed-tensors INT4 source: its experts pass through quantized
# (repacked to MLX affine), each written as one block too (they stayed stacked and nothing was
# packed before), and the packed output computes the unpacked one's logits bit for bit
"$BIN" synth "$T/ct" --arch qwen3_moe --preset tiny --format ct-int4 --layers 2 --experts 8 --quiet
"$BIN" quantize "$T/ct" "$T/ctq" --quiet
"$BIN" quantize "$T/ct" "$T/ctp" --pack-experts 2> "$T/cterr" > /dev/null
grep -q "packed layout: 16 experts" "$T/cterr" || { cat "$T/cterr" >&2; fail "quantize --pack-experts of CT-INT4: not 16 packed experts"; }
"$BIN" inspect "$T/ctp" > "$T/insp3"
grep -q "expert reads    16 of 16 experts one contiguous block" "$T/insp3" ||
    { cat "$T/insp3" >&2; fail "inspect: CT-INT4 experts quantized --pack-experts not contiguous"; }
"$BIN" logits "$T/ctq" --ids 1,2,3,4,5 --out "$T/ctq.f32" --threads 1
"$BIN" logits "$T/ctp" --ids 1,2,3,4,5 --out "$T/ctp.f32" --threads 1
cmp -s "$T/ctq.f32" "$T/ctp.f32" || fail "CT-INT4 quantized packed and unpacked compute other logits"
echo "ok: quantize --pack-experts of a compressed-tensors INT4 source packs its experts"

expect 2 "pack-experts" "$BIN" convert "$T/src" "$T/fused" --to hf --experts fused --pack-experts --quiet
[ ! -e "$T/fused" ] || fail "DST written after a refused --pack-experts --experts fused"
echo "ok: --experts fused with --pack-experts refused"
