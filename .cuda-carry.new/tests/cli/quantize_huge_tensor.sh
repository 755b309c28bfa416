#!/usr/bin/env bash
# ctest-labels: slow
# One tensor larger than 4 GiB: the issue's example, a 512 x 2048 x 4096 bf16
# expert stack (8 GiB, 2^32 elements), in a bare safetensors file (sparse, so
# it costs no disk). The rows of the independent 4-bit g64 bf16 test vectors
# (tests/data/quant, computed from MLX's algorithm by tests/gen, not by
# moekit) are written at rows that start below, at, and past the 4 GiB byte
# offset and at the very end; `moekit quantize --max-memory 64M` must chunk
# the tensor, keep its peak resident set under the bound (plus 16 MiB for the
# program), and write, at exactly those rows of the packed weights, scales
# and biases, the vector's bytes. Zero rows elsewhere are checked too (MLX
# turns a zero group into scale -1e-7 stored as bf16, bias 0, codes 0).
set -euo pipefail
BIN=${MK_BIN:?}
SRC=${MK_SRC:?}
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-qhuge-XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$SRC/tests/cli/lib.bash"

VEC=$SRC/tests/data/quant/affine_b4_g64_bf16.bin
IDX=$SRC/tests/data/quant/index.json
# section offsets of the vector case, from its index
read -r in_off wq_off sc_off bi_off vrows vcols < <(node -e '
const idx = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const c = idx.cases.find(c => c.name === "affine_b4_g64_bf16");
const s = c.sections;
console.log(s.input[0], s.wq[0], s.scales[0], s.biases[0], c.rows, c.cols);
' "$IDX")
[ "$vcols" -eq 128 ] || fail "vector case has $vcols columns, this test places 128"

E=512 R=2048 C=4096
ROWS=$((E * R))             # 1,048,576 rows of 4096 bf16 = 8 KiB each
NBYTES=$((ROWS * C * 2))    # 8 GiB
[ "$NBYTES" -gt $((1 << 32)) ] || fail "tensor not above 4 GiB"

# bare safetensors: 8-byte little-endian header length, JSON padded to 8 bytes
hdr="{\"w\":{\"dtype\":\"BF16\",\"shape\":[$E,$R,$C],\"data_offsets\":[0,$NBYTES]}}"
while [ $(( ${#hdr} % 8 )) -ne 0 ]; do hdr="$hdr "; done
hl=${#hdr}
{
    printf "$(printf '\\x%02x' $((hl & 255)) $(((hl >> 8) & 255)) 0 0 0 0 0 0)"
    printf '%s' "$hdr"
} > "$T/in.safetensors"
truncate -s $((8 + hl + NBYTES)) "$T/in.safetensors"

# where vector row k goes: straddling nothing but ending at 4 GiB, starting at
# 4 GiB, one in the middle of the upper half, and the last rows of the tensor
FOUR=$(((1 << 32) / (C * 2)))
targets=($((FOUR - 1)) $FOUR $((FOUR + 1)) $((FOUR + 12345)) $((ROWS - 3)) $((ROWS - 2)) $((ROWS - 1)))
for k in "${!targets[@]}"; do
    r=${targets[$k]}
    dd if="$VEC" of="$T/in.safetensors" bs=1 count=$((vcols * 2)) skip=$((in_off + k * vcols * 2)) \
        seek=$((8 + hl + r * C * 2)) conv=notrunc status=none iflag=skip_bytes,count_bytes oflag=seek_bytes
done

"$BIN" quantize "$T/in.safetensors" "$T/q" --bits 4 --group-size 64 --max-memory 64M --threads 2 --stats --quiet > "$T/stats"
peak=$(awk '$1 == "peak_rss_bytes" { print $2 }' "$T/stats")
chunk=$(awk '$1 == "chunk_elems" { print $2 }' "$T/stats")
echo "8 GiB tensor, --max-memory 64M: chunks of $chunk values, peak RSS $peak B"
[ "$chunk" -lt $((ROWS * C)) ] || fail "tensor not chunked"
if [ "$(awk '$1 == "sanitizer" { print $2 }' "$T/stats")" != 1 ]; then
    [ "$peak" -le $(((64 + 16) * 1024 * 1024)) ] || fail "peak RSS $peak above 64 MiB + 16 MiB"
fi

# locate the three output tensors in DST's safetensors file
OUT=$(ls "$T"/q/*.safetensors)
[ "$(echo "$OUT" | wc -l)" -eq 1 ] || fail "expected one output file: $OUT"
read -r base wq_at sc_at bi_at wq_sh sc_sh < <(node -e '
const fs = require("fs");
const fd = fs.openSync(process.argv[1], "r");
const b8 = Buffer.alloc(8); fs.readSync(fd, b8, 0, 8, 0);
const n = Number(b8.readBigUInt64LE(0));
const hb = Buffer.alloc(n); fs.readSync(fd, hb, 0, n, 8);
const h = JSON.parse(hb.toString("utf8"));
const t = k => { if (!h[k]) throw new Error("no tensor " + k); return h[k]; };
const w = t("w"), s = t("w.scales"), b = t("w.biases");
if (w.dtype !== "U32" || s.dtype !== "BF16" || b.dtype !== "BF16") throw new Error("dtypes " + w.dtype + s.dtype + b.dtype);
console.log(8 + n, w.data_offsets[0], s.data_offsets[0], b.data_offsets[0], w.shape.join("x"), s.shape.join("x"));
' "$OUT")
[ "$wq_sh" = "512x2048x512" ] || fail "packed shape $wq_sh"
[ "$sc_sh" = "512x2048x64" ] || fail "scales shape $sc_sh"

WQ_ROW=$((C / 8 * 4)) SC_ROW=$((C / 64 * 2))    # bytes per output row
vwq=$((vcols / 8 * 4)) vsc=$((vcols / 64 * 2))   # bytes of one vector row
slice() { dd if="$1" bs=64K skip="$2" count="$3" iflag=skip_bytes,count_bytes status=none; }  # FILE OFF LEN
same() { # FILE_OFF VEC_OFF LEN WHAT
    [ "$(slice "$OUT" "$1" "$3" | wc -c)" -eq "$3" ] || fail "$4: output too short"
    cmp -s <(slice "$OUT" "$1" "$3") <(slice "$VEC" "$2" "$3") ||
        fail "$4 differ from the independent vector"
}
for k in "${!targets[@]}"; do
    r=${targets[$k]}
    same $((base + wq_at + r * WQ_ROW)) $((wq_off + k * vwq)) $vwq "row $r (byte $((r * C * 2)) of the input): packed words"
    same $((base + sc_at + r * SC_ROW)) $((sc_off + k * vsc)) $vsc "row $r: scales"
    same $((base + bi_at + r * SC_ROW)) $((bi_off + k * vsc)) $vsc "row $r: biases"
done
echo "ok: ${#targets[@]} vector rows at and past 4 GiB quantized bit for bit"

# a zero group past 4 GiB and the last group of the tensor: codes 0, bias 0,
# scale -1e-7 in bf16 (0xb3d7: -1e-7 rounded to nearest even)
hex_at() { slice "$OUT" "$1" "$2" | od -v -An -tx1 | tr -d ' \n'; }
zero_group() { # ROW GROUP
    local r=$1 g=$2 got
    got=$(hex_at $((base + wq_at + r * WQ_ROW + g * 32)) 32)
    [ "$got" = "$(printf '0%.0s' $(seq 64))" ] || fail "row $r group $g: codes $got, expected 0"
    got=$(hex_at $((base + sc_at + r * SC_ROW + g * 2)) 2)
    [ "$got" = d7b3 ] || fail "row $r group $g: scale bytes $got, expected d7b3 (bf16 -1e-7)"
    got=$(hex_at $((base + bi_at + r * SC_ROW + g * 2)) 2)
    [ "$got" = 0000 ] || fail "row $r group $g: bias bytes $got, expected 0000"
}
zero_group $FOUR 63
zero_group $((FOUR + 777)) 5
zero_group $((ROWS - 1)) 63
echo "quantize_huge_tensor: all passed"
