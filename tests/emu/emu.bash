# Shared by tests/cli/cuda_emu_*.sh: build a host emulation of CUDA device
# code (tests/emu/*.cpp over cuda_emu.h) with the host's C++20 compiler.
#   emu_build OUT SOURCE [OVERRIDE_DIR]
# EMU_CXXFLAGS: more compiler flags (e.g. -DEMU_UCONTEXT), word-split.
# OVERRIDE_DIR: a folder searched before src/ (a control's edited copy of
# a kernel header). Warnings are errors, but for those device code may
# have and nvcc does not report there (unknown pragmas, sign comparisons
# with threadIdx, unused parameters).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/mk-emu-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
CXX=${CXX:-g++}
CUDA_INC=${CUDA_HOME:-/usr/local/cuda}/include
emu_build() { # OUT SOURCE [OVERRIDE_DIR [OBJECTS...]]
    local out=$1 src=$2 inc=()
    [ -n "${3:-}" ] && inc=(-I"$3")
    shift 2
    [ $# -gt 0 ] && shift
    # shellcheck disable=SC2086
    "$CXX" ${EMU_CXXFLAGS:-} -std=c++20 -O1 -Wall -Wextra -Werror -Wno-unused-parameter -Wno-unknown-pragmas -Wno-sign-compare -Wno-missing-field-initializers \
        -I"$ROOT/include" "${inc[@]}" -I"$ROOT/src" -I"$CUDA_INC" "$ROOT/tests/emu/$src" "$@" -o "$out" -lpthread
}
# The grouped GEMM emulations' reference objects (q8_ref.c over the CPU's
# int8 GEMM and dequantizer) into OUTDIR; exit 77 (skip) without the CUDA
# toolkit's headers, which cuda_impl.cuh includes.
emu_grouped_ref() {
    if [ ! -f "$CUDA_INC/cuda_fp16.h" ] || [ ! -f "$CUDA_INC/cuda_fp8.h" ]; then
        echo "skip: no CUDA headers at $CUDA_INC (set CUDA_HOME)"
        exit 77
    fi
    emu_objects "$1" "$ROOT/tests/emu/q8_ref.c" "$ROOT/src/kernels/kern_gemm_q8.c" "$ROOT/src/kernels/q8.c" \
        "$ROOT/src/core/wt.c" "$ROOT/src/core/dtype.c" "$ROOT/src/core/status.c" || fail "the reference does not build"
}
# C objects a harness links (its reference over the CPU's dequantizer): OUTDIR SOURCES...
emu_objects() {
    local dir=$1
    shift
    mkdir -p "$dir"
    (cd "$dir" && "${CC:-gcc}" -std=c11 -D_GNU_SOURCE -O1 -c -I"$ROOT/include" -I"$ROOT/src" -I"$ROOT/tests/unit" \
        -I"$ROOT/tests/emu" "$@")
}
