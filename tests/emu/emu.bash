# Shared by tests/cli/cuda_emu_*.sh: build a host emulation of CUDA device
# code (tests/emu/*.cpp over cuda_emu.h) with the host's C++20 compiler.
#   emu_build OUT SOURCE [OVERRIDE_DIR]
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
emu_build() {
    local inc=()
    [ -n "${3:-}" ] && inc=(-I"$3")
    "$CXX" -std=c++20 -O1 -Wall -Wextra -Werror -Wno-unused-parameter -Wno-unknown-pragmas -Wno-sign-compare \
        -I"$ROOT/include" "${inc[@]}" -I"$ROOT/src" "$ROOT/tests/emu/$2" -o "$1" -lpthread
}
