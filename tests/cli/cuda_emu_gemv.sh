#!/usr/bin/env bash
# The CUDA GEMV kernels (src/cuda/cuda_gemv_kernel.cuh over cuda_impl.cuh's
# dot products, views from cuda_view.cuh) run on the CPU by a host emulation
# (tests/emu/gemv_emu.cpp over tests/emu/cuda_emu.h) in every weight format
# the device takes, affine 4/8-bit, bf16/f16/f32, block-scaled FP8 E4M3,
# MXFP4 and NVFP4, both kernel generations and every staging of x: each y
# within test_cuda_gemv's bound of the double reference over the CPU's
# dequantizer, k_gemv_n bitwise k_gemv; int8 activations (k_gemv_q8) on
# the affine kinds: x staged to the bits of the CPU's quantizer (q8.c),
# each y within the bound of the double product with that quantized x. Needs the CUDA toolkit's headers
# (cuda_fp16.h, cuda_fp8.h: their host conversions); skipped without them.
# A control: E8M0 scales decoded one power of two too high must fail.
# k_gemv_q8 with its rows primed before the wait (mk_cuda_set_q8_early)
# bitwise the default; a control primes the wrong chunks.
# The emulations build their own code (not the build type's): they run in
# the release suite only.
# ctest-labels: slow
. "$(dirname "$0")/../emu/emu.bash"
if [ ! -f "$CUDA_INC/cuda_fp16.h" ] || [ ! -f "$CUDA_INC/cuda_fp8.h" ]; then
    echo "skip: no CUDA headers at $CUDA_INC (set CUDA_HOME)"
    exit 77
fi
emu_objects "$T/obj" "$ROOT/tests/emu/gemv_ref.c" "$ROOT/src/kernels/q8.c" "$ROOT/src/core/wt.c" "$ROOT/src/core/dtype.c" \
    "$ROOT/src/core/status.c" || fail "the reference does not build"
OBJ=("$T"/obj/*.o)
emu_build "$T/emu" gemv_emu.cpp "" "${OBJ[@]}" || fail "the emulation does not build"
"$T/emu" || fail "the emulated GEMV differs from the reference"
mkdir -p "$T/src/cuda"
sed 's/__uint_as_float(b << 23)/__uint_as_float((b + 1) << 23)/' "$ROOT/src/cuda/cuda_impl.cuh" \
    > "$T/src/cuda/cuda_impl.cuh"
cmp -s "$ROOT/src/cuda/cuda_impl.cuh" "$T/src/cuda/cuda_impl.cuh" && fail "the control's edit did not apply"
emu_build "$T/emu_bad" gemv_emu.cpp "$T/src" "${OBJ[@]}" || fail "the control does not build"
if "$T/emu_bad" mxfp4 > "$T/bad.log"; then fail "the emulation passed a broken E8M0 decode"; fi
grep -q "FAIL mxfp4" "$T/bad.log" || fail "the control failed elsewhere than MXFP4: $(head -3 "$T/bad.log")"
# a second control: the int8 x of 4-bit rows packed with the even and odd values swapped (the
# masked nibbles then meet the shifted ones' x) must fail the 4-bit products, no 8-bit case
sed -e 's/w.x = byte(0) | byte(2) << 8/w.x = byte(1) | byte(3) << 8/' \
    -e 's/w.y = byte(1) | byte(3) << 8/w.y = byte(0) | byte(2) << 8/' "$ROOT/src/cuda/cuda_q8x.cuh" > "$T/src/cuda/cuda_q8x.cuh"
cmp -s "$ROOT/src/cuda/cuda_q8x.cuh" "$T/src/cuda/cuda_q8x.cuh" && fail "the q8 control's edit did not apply"
rm "$T/src/cuda/cuda_impl.cuh"
emu_build "$T/emu_bad8" gemv_emu.cpp "$T/src" "${OBJ[@]}" || fail "the q8 control does not build"
if "$T/emu_bad8" q8 > "$T/bad8.log"; then fail "the emulation passed int8 x in the wrong order"; fi
grep -q "FAIL q8 affine4 g64 bf16 37x2048: matrix 0" "$T/bad8.log" ||
    fail "the q8 control failed elsewhere: $(head -3 "$T/bad8.log")"
grep -q "FAIL q8 affine8" "$T/bad8.log" && fail "the q8 control (4-bit layout only) failed an 8-bit case"
# a third control: the rows primed early (mk_cuda_set_q8_early) with the lanes' chunks swapped in pairs
# must differ from the late priming (the first of k_gemv_q8's two priming calls is the early one)
rm -f "$T/src/cuda/cuda_q8x.cuh"
sed '0,/mkc_q8_prime_rows<GEMV_ROWS>(ws, rows, lane, rs, pre);/s//mkc_q8_prime_rows<GEMV_ROWS>(ws, rows, lane ^ 1, rs, pre);/' \
    "$ROOT/src/cuda/cuda_gemv_kernel.cuh" > "$T/src/cuda/cuda_gemv_kernel.cuh"
cmp -s "$ROOT/src/cuda/cuda_gemv_kernel.cuh" "$T/src/cuda/cuda_gemv_kernel.cuh" && fail "the early control's edit did not apply"
emu_build "$T/emu_bade" gemv_emu.cpp "$T/src" "${OBJ[@]}" || fail "the early control does not build"
if "$T/emu_bade" q8 > "$T/bade.log"; then fail "the emulation passed early-primed rows from the wrong chunks"; fi
grep -q "differs with its rows primed early" "$T/bade.log" || fail "the early control failed elsewhere: $(head -3 "$T/bade.log")"
echo "ok: the emulated GEMV kernels match the reference in every format; a broken E8M0 decode, int8 x in the wrong order and early-primed rows from the wrong chunks are caught"
