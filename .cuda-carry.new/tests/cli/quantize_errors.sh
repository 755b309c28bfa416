#!/usr/bin/env bash
# quantize from the command line: bad input and bad flags exit 2 with one
# line on stderr naming the cause (file, tensor, flag) and leave neither DST
# nor DST.partial behind: a NaN in a weight (a bare file and a model
# checkpoint; --allow-nonfinite quantizes anyway), widths and group sizes a
# mode does not support, --dtype f16 for a Gated DeltaNet family, an
# existing DST, a malformed --override, flag combinations that contradict.
set -euo pipefail
BIN=${MK_BIN:?}
. "${MK_SRC:?}/tests/cli/fixtures.bash"
need_fixtures
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-qerr-XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash" # fail, expect
command -v node > /dev/null || fail "node is needed to locate tensor data (scripts/install-deps.sh)"

no_dst() { [ ! -e "$1" ] && [ ! -e "$1.partial" ] || fail "$1 or $1.partial left behind"; }

# absolute file offset of tensor $2's data in safetensors file $1
offset_of() {
    node -e '
const fs = require("fs"), fd = fs.openSync(process.argv[1], "r"), b8 = Buffer.alloc(8);
fs.readSync(fd, b8, 0, 8, 0);
const n = Number(b8.readBigUInt64LE(0)), h = Buffer.alloc(n);
fs.readSync(fd, h, 0, n, 8);
const t = JSON.parse(h.toString("utf8"))[process.argv[2]];
if (!t) { console.error("no tensor " + process.argv[2]); process.exit(1); }
console.log(8 + n + t.data_offsets[0]);
' "$1" "$2"
}
put_nan() { # file tensor element: a bf16 quiet NaN at that element
    local off
    off=$(($(offset_of "$1" "$2") + 2 * $3))
    printf '\xc0\x7f' | dd of="$1" bs=1 seek="$off" conv=notrunc status=none
}

# a bare file with one bf16 NaN
"$BIN" synth "$T/syn" --arch qwen3_5_moe --preset tiny --format bf16 --quiet
cp "$T/syn/model.safetensors" "$T/bare.safetensors"
put_nan "$T/bare.safetensors" model.layers.0.mlp.experts.1.up_proj.weight 77
expect 2 "model.layers.0.mlp.experts.1.up_proj.weight.*NaN/Inf" "$BIN" quantize "$T/bare.safetensors" "$T/a" --quiet
no_dst "$T/a"
# the same NaN in a checkpoint: named by its source tensor and its MLX module
cp -r "$T/syn" "$T/nan"
put_nan "$T/nan/model.safetensors" model.layers.0.mlp.experts.1.up_proj.weight 77
expect 2 "experts.1.up_proj.weight.*switch_mlp.up_proj" "$BIN" quantize "$T/nan" "$T/a" --quiet --threads 2
no_dst "$T/a"
"$BIN" quantize "$T/nan" "$T/ok" --quiet --allow-nonfinite > /dev/null || fail "--allow-nonfinite"
[ -s "$T/ok/model.safetensors" ] || fail "--allow-nonfinite wrote nothing"
echo "ok: NaN weights refused naming the tensor, no DST; --allow-nonfinite quantizes"

Q=$FX/qwen35moe-a/bf16
expect 2 "bits 7 not supported" "$BIN" quantize "$Q" "$T/a" --bits 7
expect 2 "group size 48 not supported" "$BIN" quantize "$Q" "$T/a" --group-size 48
expect 2 "mxfp4" "$BIN" quantize "$Q" "$T/a" --mode mxfp4 --bits 8
expect 2 "expected affine, mxfp4" "$BIN" quantize "$Q" "$T/a" --mode int4
expect 2 "overflows float16" "$BIN" quantize "$Q" "$T/a" --dtype f16
expect 2 "overflows float16" "$BIN" quantize "$FX/qwen3next-a/bf16" "$T/a" --dtype f16
expect 2 "does not compile" "$BIN" quantize "$Q" "$T/a" --override '(=4'
expect 2 "REGEX=BITS" "$BIN" quantize "$Q" "$T/a" --override 'q_proj'
expect 2 "bits 3 not supported by mode mxfp4" "$BIN" quantize "$Q" "$T/a" --override 'q_proj=3:32:mxfp4'
expect 2 "expected mixed_2_6" "$BIN" quantize "$Q" "$T/a" --recipe mixed_5_5
expect 2 "drop --bits" "$BIN" quantize "$Q" "$T/a" --recipe mixed_3_6 --bits 4
expect 2 "go together" "$BIN" quantize "$Q" "$T/a" --target-bpw 4
expect 2 "expected SRC and DST" "$BIN" quantize "$Q"
expect 2 "not a directory" "$BIN" quantize "$T/none" "$T/a"
no_dst "$T/a"
mkdir "$T/exists"
expect 2 "already exists" "$BIN" quantize "$Q" "$T/exists" --quiet
[ -z "$(ls -A "$T/exists")" ] || fail "existing DST was written into"
"$BIN" quantize "$Q" "$T/exists" --quiet --force > /dev/null || fail "--force"
"$BIN" quantize "$Q" "$T/f16" --dtype f16 --force-f16 --quiet > /dev/null || fail "--force-f16"
echo "ok: bad widths, groups, modes, dtype, overrides, flags and an existing DST"
echo "quantize_errors: all passed"
