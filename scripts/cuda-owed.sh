#!/usr/bin/env bash
# What the CUDA code written without a GPU (sessions 15-17) owes the device,
# in the order to run it (docs/CUDA.md's "not yet run on the device"
# sections): run on the lent machine as scripts/cuda-device-run.sh's
# MK_AFTER, after it built build-cuda/ with
#   MK_TESTS="test_cuda_gemv test_cuda_moe test_backend_ops test_expert_stream"
#   MK_TARGETS="moekit_cli test_engine_fixtures test_engine_batch bench_decode bench_cuda_moe"
# (test_backend_ops: session 17's batch slots matmul_each, attention_each,
# conv1d_silu_each, gdn_each and test_cuda_replay_after_growth on CUDA)
# and with the fixtures packed by `scripts/cuda-fixtures.sh pack .cuda-fx ...`
# (the device carries 64 MiB: split the fixtures over calls if need be).
#   scripts/cuda-owed.sh tests FX_TAR     fixtures' _cuda cases, the CLI's CUDA tests
#   scripts/cuda-owed.sh bench30          30B-shape measurements for bench/RESULTS.md (batch 1, 8, 32)
#   scripts/cuda-owed.sh bench35          35B-shape (hybrid) prefill and the FP8/MXFP4 GEMV
#   scripts/cuda-owed.sh staged           session 19's switches on an 8-layer 30B cut: decode with
#                                         the staged-weight GEMV / MoE kernels, prefill with each
#                                         int8 kernel, the GEMV alone on the decode's shapes, an
#                                         ncu breakdown (ncu_sum.log) with both switches on
#   scripts/cuda-owed.sh fold [FX_TAR]   session 20's norm steps folded into their readers
#                                         (MK_CUDA_NORM_FOLD) on the 8-layer cut, decode at short and
#                                         2048-token contexts, off/on interleaved; ncu with it;
#                                         with FX_TAR first the fixtures' _cuda cases with it on
#   scripts/cuda-owed.sh chunks          prefill 2048 on the 8-layer cut in chunks of 512 / 1024 /
#                                         2048 (split and int8 GEMM)
#   scripts/cuda-owed.sh q8              session 22's int8-activation GEMV (MK_CUDA_ACT_INT8): the
#                                         GEMV alone float / int8 x (bench_cuda_moe --gemv, built with
#                                         MK_NO_BENCH unset or in MK_TARGETS), decode on the 8-layer
#                                         cut off/on interleaved, and with the norm fold
#   scripts/cuda-owed.sh tile2           the tiled prefill attention's generations (MK_OWED_GENS, default
#                                         "2 3 2 3": MK_CUDA_ATTN_TILE interleaved): the cut's prefill
#                                         (chunks 512 / 2048, split / int8 GEMM), ncu of each generation
#   scripts/cuda-owed.sh pncu            ncu of a 2048-token prefill of the 8-layer cut, per kernel
#   scripts/cuda-owed.sh s36             session 36: the cut's prefill under the tiled attention's
#                                         generations 4 and 5, the q/k norms a warp a row, the int8
#                                         GEMMs on wgmma, and all, interleaved (s36.log); ncu of the
#                                         int8 GEMM kernels
#   scripts/cuda-owed.sh dec             session 24's decode: the 8-layer cut and the full-depth 30B, short
#                                         and after 2048 tokens, MK_CUDA_QK_FOLD 0/1 interleaved
#                                         (dec.log); then ncu per kernel of the cut's decode (ncu_dec.log)
#   scripts/cuda-owed.sh pfull           ncu --set full of the prefill's tensor-core attention (k_attn_tile3)
#                                         and split grouped GEMM (k_grp_mm), two launches each, at the
#                                         cut's last 512-token chunk (ncu_pfull.log); MK_OWED_KERNELS
#                                         other kernels (k_grp_mm_q8p: the int8 GEMM's, the default)
#   scripts/cuda-owed.sh s25             session 25's prefill: the default (int8 GEMM) against the split GEMM,
#                                         the pipelined int8 GEMM in 4 / 3 stages, chunks of 2048 / 512
#                                         (s25.log); ncu --set full of k_grp_mm_q8p in 4 and 3 stages
#   scripts/cuda-owed.sh base            a session's baseline: the cut's decode (short, after 2048 tokens)
#                                         and default 2048-token prefill, twice each (base.log)
#   scripts/cuda-owed.sh dnsys           the cut's decode timeline as replayed (nsys, graph nodes traced):
#                                         nsys_dec_trace.csv.xz for per-kernel critical-path sums
#   scripts/cuda-owed.sh gqa [FX_TAR]     session 26's decode attention grouped by kv head (MK_CUDA_ATTN_GQA)
#                                         against k_attn on the cut, short / 2048 / 8192 tokens, and the
#                                         int8 rows primed early (MK_CUDA_Q8_EARLY) short (gqa.log); with
#                                         FX_TAR first the fixtures' _cuda cases with both on
#   scripts/cuda-owed.sh la              session 27's decode lookahead (MK_LOOKAHEAD=0/1) on the cut, short
#                                         and after 2048 tokens (la.log)
#   scripts/cuda-owed.sh warm            the decode timed after 4 untimed decode steps (MK_BENCH_WARM=4) against
#                                         the old timing (0), lookahead off/on: the cut, the full-depth 30B
#   scripts/cuda-owed.sh s31             the residual step folded into the router only (MK_CUDA_NORM_FOLD=2) and
#                                         the one-wave gate/up (bench_decode_gu3) against the default (s31.log)
#   scripts/cuda-owed.sh batch           batched decode (8, 32) with the grouped attention (k_attn_gqa_each)
#                                         against k_attn_each, interleaved (batch.log)
#   scripts/cuda-owed.sh steady          MK_CUDA_Q8_EARLY and MK_CUDA_QK_FOLD 0/1 on the cut in steady state (steady.log)
#   scripts/cuda-owed.sh s32             the switches judged with the old timing, in steady state: GEMV_STAGED,
#                                         MOE_STAGED, STEP_PREFETCH (1, 2, 3), NORM_FOLD=1 against the default
#                                         on the cut, short and after 2048 tokens; MK_CUDA_Q8_EARLY=0 against
#                                         the default at full depth (s32.log)
#   scripts/cuda-owed.sh fold32          the norm folds with their loads batched (session 32): MK_CUDA_NORM_FOLD
#                                         0 / 1 / 2 interleaved, the cut short and after 2048 tokens, the
#                                         full-depth 30B (fold32.log)
#   scripts/cuda-owed.sh qk32            the q/k norms folded into the grouped attention (session 32's
#                                         k_attn_gqa<.., true>): MK_CUDA_QK_FOLD 0 / 1 interleaved, the cut
#                                         short and after 2048 tokens, the full-depth 30B (qk32.log)
#   scripts/cuda-owed.sh lansys          the cut's decode under nsys with the host's CUDA calls traced,
#                                         MK_LOOKAHEAD 1 and 0: API and GPU traces as CSV (la*_*.csv.xz)
#   scripts/cuda-owed.sh gqafd           the full-depth 30B decode, MK_CUDA_ATTN_GQA 0/1 interleaved, short and
#                                         after 2048 tokens (gqafd.log)
#   scripts/cuda-owed.sh rncu            ncu's source view of the decode's router and gate/up (session 32's
#                                         next): per CUDA source line and SASS instruction, instructions
#                                         executed and warp stall samples, 2 launches each at position ~64
#                                         (ncu_src_*.csv.xz; the binaries carry -lineinfo); MK_OWED_KERNELS
#                                         names others (e.g. k_gateup_q8s with MK_CUDA_GATEUP_STAGED=1)
#   scripts/cuda-owed.sh s33             session 33's staged int8 kernels: MK_CUDA_GATEUP_STAGED and
#                                         MK_CUDA_GEMV_STAGED each alone and both against the default, the cut
#                                         short (twice) and after 2048 tokens, the full-depth 30B (s33.log)
#   scripts/cuda-owed.sh ab              two builds' bench_decode interleaved: build-cuda/ against
#                                         MK_OWED_OLD (a folder of another build's binaries, e.g. a
#                                         .cuda-pre unpacked), each with its env MK_OWED_ENV_NEW /
#                                         MK_OWED_ENV_OLD; the cut short (twice) and after 2048 tokens,
#                                         the full-depth 30B twice (ab$MK_OWED_TAG.log)
#   scripts/cuda-owed.sh pab             two builds' prefill of the cut interleaved (build-cuda/ against
#                                         MK_OWED_OLD, each with its env MK_OWED_ENV_NEW / MK_OWED_ENV_OLD
#                                         as in ab; three rounds, 2048 tokens in the default chunks;
#                                         pab$MK_OWED_TAG.log)
#   scripts/cuda-owed.sh dncu            ncu --set full of one decode layer's kernels of the cut (the
#                                         attention, router, MoE and GEMV kernels near position 64):
#                                         stall reasons, occupancy, memory throughput (ncu_decode.log)
#                                         (split and int8 GEMM)
#   scripts/cuda-owed.sh fd              session 25's full-depth 30B prefill (default against session 24's
#                                         split GEMM in chunks of 512) and decode; the int8 GEMM's SASS
#                                         opcode histogram (fd.log)
#   scripts/cuda-owed.sh int8            session 23's int8 default on the full-depth 30B shape: decode
#                                         with the default (int8 since session 23) against
#                                         MK_CUDA_ACT_INT8=0, interleaved, short and after 2048 tokens;
#                                         with the CLI's GPU int8 test (cli.gpu_act_int8) first
# (one call each: a call may run 600 s, and making a model takes minutes).
# Models are made in /tmp as bench/bench_cuda_decode.sh makes them (the
# ct-int4 source removed after quantizing: the disk is 64 GiB). Logs go to
# $OUT. Exit 1 when a check fails or is skipped (the measurements never
# fail it).
set -uo pipefail
what=${1:?usage: see the header}
out=${OUT:-/tmp}
rc=0
# The full-depth 30B shape (MLX 4-bit g64 from a ct-int4 synth) in /tmp/mk-owed-30b, made once a
# machine with MOEKIT (the int4 source removed after: the disk is 64 GiB); the making's output in
# $out/synth.log
# nsys on PATH (the device image has it only inside Nsight Compute)
owed_nsys() {
    if ! command -v nsys > /dev/null; then
        local ns
        ns=$(find /opt /usr/local /usr/lib -name nsys -type f -perm -u+x 2> /dev/null | head -1)
        [ -n "$ns" ] && export PATH=$PATH:$(dirname "$ns")
    fi
    command -v nsys
}
owed_30b() { # MOEKIT
    local m=/tmp/mk-owed-30b nt
    nt=$(nproc)
    [ -e $m/config.json ] && return 0
    {
        "$1" synth $m.ct --arch qwen3_moe --preset 30b-a3b --format ct-int4 --threads "$nt" --quiet --force &&
            "$1" quantize $m.ct $m --bits 4 --group-size 64 --threads "$nt" --max-memory 8G --quiet --force
    } > "$out/synth.log" 2>&1
    local r=$?
    rm -rf $m.ct
    return $r
}
# One switch's values interleaved on the three decode runs (session 32's sweeps; B, W, m set by the
# mode): VAR "SHORT" "LONG" "FULL": the cut at positions 16-271, the cut after 2048 tokens, the
# full-depth 30B, each with VAR=v for every v of its list in turn
owed_dec() { # WHERE BIN ENV LABEL: one bench_decode run of BIN/ under ENV (assignments), WHERE
    # cut (positions 16-271 of the 8-layer cut), cut2048 (after a 2048-token prompt) or full (the
    # full-depth 30B in $m, positions 16-143)
    case $1 in
    cut)
        echo "== 8-layer 30B cut decode, positions 16-271, $4"
        env $3 timeout 60 "$2"/bench_decode $W/m8 16 256 16 cuda 2>&1 | grep -E "^decode|^step"
        ;;
    cut2048)
        echo "== 8-layer 30B cut decode after 2048 tokens, $4"
        env $3 timeout 90 "$2"/bench_decode $W/m8 2048 64 16 cuda 2>&1 | grep -E "^decode|^step"
        ;;
    full)
        echo "== full-depth 30B decode, positions 16-143, $4"
        env $3 timeout 90 "$2"/bench_decode $m 16 128 16 cuda 2>&1 | grep -E "^decode|^step|^bound"
        ;;
    esac
}
owed_sweep() { # VAR SHORT LONG FULL
    local f
    nvidia-smi --query-gpu=name --format=csv,noheader
    for f in $2; do owed_dec cut $B "$1=$f" "$1=$f"; done
    for f in $3; do owed_dec cut2048 $B "$1=$f" "$1=$f"; done
    for f in $4; do owed_dec full $B "$1=$f" "$1=$f"; done
}
case $what in
tests)
    fx=${2:?the tar of the fixtures}
    # every fixture on the GPU path: PDL on, DeepSeek-V3's routing in the fused
    # step (MLA under replay), the chunked GDN prefill on the hybrids
    bash scripts/cuda-fixtures.sh test "$fx" '*_cuda' || rc=1
    # the CLI's CUDA cases: expert placement and the VRAM expert cache,
    # serve on CUDA with its streamed-experts round
    (cd build-cuda && MK_BIN=$PWD/moekit ctest -R 'cli.gpu_expert_vram|cli.serve_batch_cuda' --output-on-failure) \
        2>&1 | tee "$out/cli_cuda.log" || rc=1
    # a skipped case (exit 77) counts as passed in ctest: here it is a failure
    if grep -qE "Not Run|Skipped|^skip|no GPU here" "$out/cli_cuda.log"; then
        echo "a CLI CUDA case was skipped"
        rc=1
    fi
    # batched decode on CUDA (session 17: the batched MoE step, GEMV,
    # attention and recurrent slots) against each sequence alone, on the
    # fixtures of the tar (qwen35moe-a and deepseekv3-a are its cases)
    bx=$(mktemp -d /tmp/mk-bx-XXXXXX)
    tar -xJf "$fx" -C "$bx" && ln -sfn "$PWD/models/tiny-qwen35moe" "$bx/tiny-qwen35moe"
    MK_FIXTURES=$bx timeout 300 ./build-cuda/test_engine_batch > "$out/test_engine_batch.log" 2>&1
    grep -E "^\[ +(OK|FAILED|SKIPPED) +\] test_cuda|SKIP" "$out/test_engine_batch.log"
    grep -qE "^\[ +OK +\] test_cuda_qwen35moe" "$out/test_engine_batch.log" &&
        grep -qE "^\[ +OK +\] test_cuda_deepseekv3" "$out/test_engine_batch.log" || {
        echo "test_engine_batch's CUDA cases did not pass"
        rc=1
    }
    ;;
fd)
    # session 25's full-depth prefill: the default (int8 GEMM as the engine's prefill, chunks of 2048)
    # against session 24's (split GEMM, chunks of 512), interleaved, with the decode after the prompt;
    # the short decode; then the SASS opcode histogram of the 4-bit g64 bf16 int8 GEMM (cuobjdump)
    B=./build-cuda/moekit D=./build-cuda/bench_decode nt=$(nproc) m=/tmp/mk-owed-30b
    owed_30b $B
    {
        for g in def split def split; do
            echo "== full-depth 30B, prefill 2048 then 64 decode tokens, $g"
            if [ $g = def ]; then
                timeout 100 $D $m 2048 64 16 cuda 2>&1 | grep -E "^prefill|^decode|^bound|^gemm"
            else
                MK_CUDA_GEMM=split MK_BENCH_CHUNK=512 timeout 100 $D $m 2048 64 16 cuda 2>&1 | grep -E "^prefill|^decode"
            fi
        done
        echo "== full-depth 30B decode, positions 16-143"
        timeout 90 $D $m 16 128 16 cuda 2>&1 | grep -E "^decode|^bound|^device|^step"
        echo "== SASS opcode histogram of k_grp_mm_q8p<4, 1, 64, 3>"
        o=$(find build-cuda -name 'cuda_grouped.cu.o' | head -1)
        command -v cuobjdump > /dev/null || PATH=$PATH:/usr/local/cuda/bin
        cuobjdump -sass "$o" 2> /dev/null | awk '
            /Function : / { f = ($0 ~ /k_grp_mm_q8pILi4ELi1ELi64ELi3E/) }
            f && /\/\*[0-9a-f]+\*\// {
                s = $0; sub(/.*\*\/ +/, "", s); sub(/^@!?P[0-9T] +/, "", s); split(s, w, /[ ;]/); op = w[1];
                if (op != "") { n[op]++; t++ }
            }
            END { for (k in n) printf "%6d %s\n", n[k], k; printf "%6d total\n", t }' | sort -rn | head -45
    } 2>&1 | tee "$out/fd.log"
    ;;
gqafd)
    # session 26: the full-depth 30B decode with the attention grouped by kv head (MK_CUDA_ATTN_GQA)
    # against k_attn, interleaved, short and after 2048 tokens (gqafd.log); synth.log: the model's making
    B=./build-cuda/moekit D=./build-cuda/bench_decode nt=$(nproc) m=/tmp/mk-owed-30b
    owed_30b $B
    {
        nvidia-smi --query-gpu=name --format=csv,noheader
        for f in ${MK_OWED_PAIRS:-0 1 0 1}; do
            echo "== full-depth 30B decode, positions 16-143, MK_CUDA_ATTN_GQA=$f"
            MK_CUDA_ATTN_GQA=$f timeout 90 $D $m 16 128 16 cuda 2>&1 | grep -E "^decode|^bound|^step|^device"
        done
        for f in 0 1; do
            echo "== full-depth 30B decode after 2048 tokens, MK_CUDA_ATTN_GQA=$f"
            MK_CUDA_ATTN_GQA=$f timeout 120 $D $m 2048 64 16 cuda 2>&1 | grep -E "^decode|^prefill|^step"
        done
    } 2>&1 | tee "$out/gqafd.log"
    ;;
int8)
    # FX_TAR (optional, as `tests`' argument): gptoss-a's attention layers checked too
    fxd=
    if [ -n "${2:-}" ]; then
        fxd=$(mktemp -d /tmp/mk-i8fx-XXXXXX)
        tar -xJf "$2" -C "$fxd"
    fi
    # the script itself (ctest would set MK_FIXTURES to the configured folder)
    MK_FIXTURES=$fxd MK_BIN=$PWD/build-cuda/moekit MK_SRC=$PWD bash tests/cli/gpu_act_int8.sh 2>&1 | tee "$out/cli_int8.log"
    grep -q "gpu_act_int8: ok" "$out/cli_int8.log" || rc=1
    [ -n "${MK_OWED_NOBENCH:-}" ] && exit $rc # the test alone
    B=./build-cuda/moekit D=./build-cuda/bench_decode nt=$(nproc) m=/tmp/mk-owed-30b
    owed_30b $B
    {
        # def: the variable empty, which bench_decode reads as unset (the default)
        for f in def 0 def 0; do
            echo "== 30B decode, MK_CUDA_ACT_INT8=$f"
            MK_CUDA_ACT_INT8=${f#def} timeout 90 $D $m 16 128 16 cuda 2>&1 | grep -E "^decode|^bound|^device|^step"
        done
        for f in def 0; do
            echo "== 30B decode after 2048 tokens, MK_CUDA_ACT_INT8=$f"
            MK_CUDA_ACT_INT8=${f#def} timeout 120 $D $m 2048 64 16 cuda 2>&1 | grep -E "^decode|^prefill"
        done
    } 2>&1 | tee "$out/int8.log"
    ;;
bench30 | bench35)
    B=./build-cuda/moekit D=./build-cuda/bench_decode nt=$(nproc)
    mk() { # DIR ARCH PRESET
        [ -e "$1/config.json" ] && return 0
        $B synth "$1.ct" --arch "$2" --preset "$3" --format ct-int4 --threads "$nt" --quiet --force &&
            $B quantize "$1.ct" "$1" --bits 4 --group-size 64 --threads "$nt" --max-memory 8G --quiet --force
        local r=$?
        rm -rf "$1.ct"
        return $r
    }
    if [ "$what" = bench30 ]; then
        m=/tmp/mk-owed-30b
        mk "$m" qwen3_moe 30b-a3b > "$out/synth.log" 2>&1 || { tail -5 "$out/synth.log"; exit 1; }
        {
            echo "== 30B decode, default (PDL on); the MoE step's PDL off; the rest of the step's off; both off"
            $D "$m" 16 128 16 cuda
            MK_CUDA_MOE_PDL=0 $D "$m" 16 128 16 cuda
            MK_CUDA_STEP_PDL=0 $D "$m" 16 128 16 cuda
            MK_CUDA_MOE_PDL=0 MK_CUDA_STEP_PDL=0 $D "$m" 16 128 16 cuda
            $D "$m" 16 128 16 cuda
            echo "== 30B decode: the step's L2 prefetches none, GEMV rows, attention's cache rows, both"
            for pf in 0 1 2 3 0; do MK_CUDA_STEP_PREFETCH=$pf $D "$m" 16 128 16 cuda; done
            echo "== 30B decode after a 2048-token prompt: prefetches none, attention's, both; step PDL off"
            MK_CUDA_STEP_PREFETCH=0 $D "$m" 2048 64 16 cuda
            MK_CUDA_STEP_PREFETCH=2 $D "$m" 2048 64 16 cuda
            MK_CUDA_STEP_PREFETCH=3 $D "$m" 2048 64 16 cuda
            MK_CUDA_STEP_PDL=0 $D "$m" 2048 64 16 cuda
            echo "== 30B, experts past 8 GiB in host memory; then 6 GiB + a 2 GiB VRAM expert cache (equal memory)"
            MK_CUDA_EXPERT_VRAM=$((8 << 30)) $D "$m" 16 256 16 cuda
            MK_CUDA_EXPERT_VRAM=$((6 << 30)) MK_CUDA_EXPERT_CACHE=$((2 << 30)) $D "$m" 16 256 16 cuda
            echo "== 30B batched decode, 8 and 32 sequences (session 17: weights read once per step)"
            MK_BENCH_BATCH=8 $D "$m" 16 64 16 cuda
            MK_BENCH_BATCH=32 $D "$m" 16 64 16 cuda
        } 2>&1 | tee "$out/bench30.log"
    else
        q=/tmp/mk-owed-35b
        mk "$q" qwen3_5_moe 35b-a3b > "$out/synth.log" 2>&1 || { tail -5 "$out/synth.log"; exit 1; }
        {
            echo "== 35B hybrid prefill 2048: chunked GDN; then the token loop"
            $D "$q" 2048 16 16 cuda
            MK_CUDA_GDN_CHUNKED=0 $D "$q" 2048 16 16 cuda
        } 2>&1 | tee "$out/bench35.log"
        echo "== GEMV of FP8 and MXFP4 against the copy roofline"
        ./build-cuda/bench_cuda_moe --gemv 2>&1 | tee "$out/bench_cuda_moe.log"
    fi
    ;;
staged | fold | chunks | q8 | pncu | dncu | dec | pfull | tile2 | s25 | base | dnsys | gqa | la | lansys | warm | s31 | batch | steady | s32 | fold32 | qk32 | rncu | s33 | ab | pab | s36)
    B=./build-cuda W=/tmp/mk-owed-cut nt=$(nproc)
    mkdir -p $W
    [ -e $W/m8/config.json ] || {
        $B/moekit synth $W/ct8 --arch qwen3_moe --preset 30b-a3b --format ct-int4 --layers 8 --threads $nt \
            --quiet --force && $B/moekit quantize $W/ct8 $W/m8 --bits 4 --group-size 64 --threads $nt --quiet \
            --force > /dev/null 2>&1
        rm -rf $W/ct8
    }
    if [ "$what" = fold ]; then
        # the fixtures' _cuda cases with both switches on (FX_TAR as `tests`' argument, if given)
        if [ -n "${2:-}" ]; then
            MK_CUDA_NORM_FOLD=1 bash scripts/cuda-fixtures.sh test "$2" '*_cuda' || rc=1
        fi
        {
            # MK_OWED_QUICK=1 (a call with little device time left): two pairs, one
            # pair after 2048 tokens, no ncu
            short="0 1 0 1 0 1" long="0 1 0 1"
            [ -n "${MK_OWED_QUICK:-}" ] && short="0 1 0 1" long="0 1"
            for f in $short; do
                echo "== 8-layer 30B cut decode, MK_CUDA_NORM_FOLD=$f"
                MK_CUDA_NORM_FOLD=$f timeout 60 $B/bench_decode $W/m8 16 256 16 cuda 2>&1 | grep -E "^decode|bound"
            done
            for f in $long; do
                echo "== 8-layer 30B cut decode after 2048 tokens, MK_CUDA_NORM_FOLD=$f"
                MK_CUDA_NORM_FOLD=$f timeout 90 $B/bench_decode $W/m8 2048 64 16 cuda 2>&1 |
                    grep -E "^decode"
            done
        } 2>&1 | tee "$out/fold.log"
        if [ -z "${MK_OWED_QUICK:-}" ] && command -v ncu > /dev/null; then
            MK_CUDA_NORM_FOLD=1 timeout 150 ncu --clock-control none --cache-control none \
                --metrics gpu__time_duration.sum --print-summary per-kernel \
                $B/bench_decode $W/m8 64 3 $nt cuda-nograph > "$out/ncu_fold.log" 2>&1
            echo "ncu: rc $? (ncu_fold.log)"
        fi
        exit $rc
    fi
    if [ "$what" = q8 ]; then
        {
            echo "== the GEMV alone, float x and int8 x"
            timeout 120 ./build-cuda/bench_cuda_moe --gemv 2>&1 | grep -E "^device|^gemv|^copy"
            for f in 0 1 0 1; do
                echo "== 8-layer 30B cut decode, MK_CUDA_ACT_INT8=$f"
                MK_CUDA_ACT_INT8=$f timeout 60 $B/bench_decode $W/m8 16 256 16 cuda 2>&1 | grep -E "^decode|bound"
            done
            for f in 0 1; do
                echo "== 8-layer 30B cut decode, MK_CUDA_NORM_FOLD=1 MK_CUDA_ACT_INT8=$f"
                MK_CUDA_NORM_FOLD=1 MK_CUDA_ACT_INT8=$f timeout 60 $B/bench_decode $W/m8 16 256 16 cuda 2>&1 |
                    grep -E "^decode|bound"
            done
        } 2>&1 | tee "$out/q8.log"
        exit $rc
    fi
    if [ "$what" = s25 ]; then
        # session 25: the default prefill (auto: the int8 GEMM, as the engine's prefill) against
        # session 24's (split GEMM, chunks of 512), the pipelined int8 GEMM in 4 and 3 stages
        # (MK_CUDA_Q8P_STAGES), chunks of 2048 (the new CUDA default) and 512; then ncu --set full
        # of one layer's k_grp_mm_q8p launches in 4 and 3 stages (ncu_q8p_4.log, ncu_q8p_3.log)
        {
            for ch in 2048 512; do
                for st in ${MK_OWED_STAGES:-4 3 4 3}; do
                    echo "== 8-layer 30B cut, prefill 2048 in chunks of $ch, default GEMM, MK_CUDA_Q8P_STAGES=$st"
                    MK_CUDA_Q8P_STAGES=$st MK_BENCH_CHUNK=$ch timeout 100 $B/bench_decode $W/m8 2048 4 16 cuda 2>&1 |
                        grep -E "^prefill|^gemm"
                done
                echo "== 8-layer 30B cut, prefill 2048 in chunks of $ch, MK_CUDA_GEMM=split"
                MK_CUDA_GEMM=split MK_BENCH_CHUNK=$ch timeout 100 $B/bench_decode $W/m8 2048 4 16 cuda 2>&1 |
                    grep -E "^prefill"
            done
        } 2>&1 | tee "$out/s25.log"
        [ -n "${MK_OWED_QUICK:-}" ] && exit $rc
        for st in 4 3; do
            # chunks of 2048, ~7 int8 GEMM launches a layer (q, k, v, o, the router, gate/up, down): skip 8
            # starts inside layer 1, skip 12 at its gate/up
            MK_CUDA_Q8P_STAGES=$st timeout 150 ncu --set full --clock-control none --kernel-name "regex:^k_grp_mm_q8p\$" \
                --launch-skip ${MK_OWED_SKIP:-8} --launch-count ${MK_OWED_COUNT:-4} \
                $B/bench_decode $W/m8 2048 1 $nt cuda-nograph > "$out/ncu_q8p_$st.raw" 2>&1
            echo "ncu stages $st: rc $?"
            grep -E "^  [a-z_v].*\(|Duration|Throughput|Pipe|Occupancy|Registers|Eligible|Issued|Stall|Bank|Shared|Grid Size|Warp Cycles" \
                "$out/ncu_q8p_$st.raw" > "$out/ncu_q8p_$st.log"
            rm -f "$out/ncu_q8p_$st.raw"
        done
        exit $rc
    fi
    if [ "$what" = base ]; then
        # a session's baseline on whatever card came: the cut's decode (short, after 2048 tokens) and
        # its default 2048-token prefill, twice each (base.log)
        {
            nvidia-smi --query-gpu=name --format=csv,noheader
            for i in 1 2; do
                echo "== 8-layer 30B cut decode, positions 16-271"
                timeout 60 $B/bench_decode $W/m8 16 256 16 cuda 2>&1 | grep -E "^decode|^bound"
                echo "== 8-layer 30B cut, prefill 2048 (default), then decode 64"
                timeout 100 $B/bench_decode $W/m8 2048 64 16 cuda 2>&1 | grep -E "^prefill|^decode|^gemm"
            done
        } 2>&1 | tee "$out/base.log"
        exit $rc
    fi
    if [ "$what" = dnsys ]; then
        # the decode step's timeline as replayed (graph nodes traced one by one): the cut, prompt 64,
        # 48 decode tokens; the GPU trace as CSV (xz) for per-kernel critical-path sums on the host
        owed_nsys || { echo "no nsys here"; exit 1; }
        # MK_OWED_PROMPTS: the prompt lengths (default 64), a trace each
        for pl in ${MK_OWED_PROMPTS:-64}; do
            timeout 200 nsys profile -o "$out/dec" --force-overwrite true -t cuda --cuda-graph-trace=node \
                $B/bench_decode $W/m8 $pl 48 $nt cuda > "$out/nsys_run.log" 2>&1
            echo "nsys prompt $pl: rc $?"
            # nsight-compute's bundled nsys leaves a .qdstrm when its importer cannot run: the importer
            # (another folder) needs libdw.so.1, which the device's image lacks: MK_OWED_NSYS_DEBS=DIR
            # (a carried folder of Debian's libdw1 and libelf1 .debs, `apt-get download libdw1 libelf1`)
            if [ ! -f "$out/dec.nsys-rep" ] && [ -f "$out/dec.qdstrm" ]; then
                qi=$(find /opt /usr/local -name QdstrmImporter -type f 2> /dev/null | head -1)
                lib=
                if [ -n "${MK_OWED_NSYS_DEBS:-}" ]; then
                    mkdir -p /tmp/mk-nsys-libs
                    for d in "$MK_OWED_NSYS_DEBS"/*.deb; do dpkg -x "$d" /tmp/mk-nsys-libs; done
                    lib=/tmp/mk-nsys-libs/usr/lib/x86_64-linux-gnu
                fi
                [ -n "$qi" ] && LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} "$qi" -i "$out/dec.qdstrm" \
                    > "$out/importer.log" 2>&1
            fi
            grep -E "^decode|^device" "$out/nsys_run.log"
            nsys stats --force-export=true --report cuda_gpu_trace --format csv "$out/dec.nsys-rep" \
                > "$out/nsys_dec_$pl.csv" 2> "$out/nsys_stats.err"
            xz -9 "$out/nsys_dec_$pl.csv"
            rm -f "$out/dec.nsys-rep" "$out/dec.sqlite" "$out/dec.qdstrm"
        done
        rm -f "$out/build.log" "$out/configure.log"
        exit $rc
    fi
    if [ "$what" = steady ]; then
        # session 31: the switches judged with the old timing (one-off costs in the decode), again in
        # steady state: the int8 rows primed early (MK_CUDA_Q8_EARLY) and the q/k norms folded into
        # the attention (MK_CUDA_QK_FOLD; declined where k_attn_gqa runs, so expected neutral), the cut
        # short and after 2048 tokens, interleaved (steady.log)
        {
            nvidia-smi --query-gpu=name --format=csv,noheader
            for v in MK_CUDA_Q8_EARLY MK_CUDA_QK_FOLD; do
                for f in 0 1 0 1; do
                    echo "== 8-layer 30B cut decode, positions 16-271, $v=$f"
                    env "$v=$f" timeout 60 $B/bench_decode $W/m8 16 256 16 cuda 2>&1 | grep -E "^decode|^step"
                done
                for f in 0 1; do
                    echo "== 8-layer 30B cut decode after 2048 tokens, $v=$f"
                    env "$v=$f" timeout 90 $B/bench_decode $W/m8 2048 64 16 cuda 2>&1 | grep -E "^decode|^step"
                done
            done
        } 2>&1 | tee "$out/steady.log"
        exit $rc
    fi
    if [ "$what" = s32 ]; then
        # session 32: every switch judged on the cut with the old timing (one-off costs of 27-41 ms in
        # the decode), again in steady state against the default, interleaved (s32.log)
        m=/tmp/mk-owed-30b
        owed_30b $B/moekit
        sw="def MK_CUDA_GEMV_STAGED=1 MK_CUDA_MOE_STAGED=1 MK_CUDA_STEP_PREFETCH=1 MK_CUDA_STEP_PREFETCH=2"
        sw="$sw MK_CUDA_STEP_PREFETCH=3 MK_CUDA_NORM_FOLD=1"
        {
            nvidia-smi --query-gpu=name --format=csv,noheader
            for r in 1 2; do
                for v in $sw; do
                    echo "== 8-layer 30B cut decode, positions 16-271, $v"
                    [ $v = def ] && v=MK_NONE=0
                    env "$v" timeout 60 $B/bench_decode $W/m8 16 256 16 cuda 2>&1 | grep -E "^decode|^step"
                done
            done
            for v in $sw; do
                echo "== 8-layer 30B cut decode after 2048 tokens, $v"
                [ $v = def ] && v=MK_NONE=0
                env "$v" timeout 90 $B/bench_decode $W/m8 2048 64 16 cuda 2>&1 | grep -E "^decode|^step"
            done
            for f in 0 def 0 def; do
                echo "== full-depth 30B decode, positions 16-143, MK_CUDA_Q8_EARLY=$f"
                v=MK_CUDA_Q8_EARLY=$f
                [ $f = def ] && v=MK_NONE=0
                env "$v" timeout 90 $B/bench_decode $m 16 128 16 cuda 2>&1 | grep -E "^decode|^step|^bound"
            done
        } 2>&1 | tee "$out/s32.log"
        exit $rc
    fi
    if [ "$what" = fold32 ]; then
        # session 32: the residual folds (mkc_addnorm_stage / _finish) with each thread's loads issued
        # at once, against the separate k_add_rmsnorm (0), interleaved (fold32.log)
        m=/tmp/mk-owed-30b
        owed_30b $B/moekit
        owed_sweep MK_CUDA_NORM_FOLD "0 1 2 0 1 2" "0 1 2" "0 1 2 0 1 2" 2>&1 | tee "$out/fold32.log"
        exit $rc
    fi
    if [ "$what" = qk32 ]; then
        # session 32: the q/k norms folded into the grouped attention, off and on interleaved (qk32.log)
        m=/tmp/mk-owed-30b
        owed_30b $B/moekit
        owed_sweep MK_CUDA_QK_FOLD "0 1 0 1" "0 1" "0 1 0 1" 2>&1 | tee "$out/qk32.log"
        exit $rc
    fi
    if [ "$what" = s33 ]; then
        # session 33: the int8 gate/up's rows staged (MK_CUDA_GATEUP_STAGED, k_gateup_q8s) and the int8
        # decode GEMVs' rows staged before their wait (MK_CUDA_GEMV_STAGED, k_gemv_q8s), each alone and
        # both, against the default, interleaved (s33.log)
        m=/tmp/mk-owed-30b
        owed_30b $B/moekit
        {
            nvidia-smi --query-gpu=name --format=csv,noheader
            sets=("MK_CUDA_GATEUP_STAGED=0 MK_CUDA_GEMV_STAGED=0" "MK_CUDA_GATEUP_STAGED=1 MK_CUDA_GEMV_STAGED=0"
                "MK_CUDA_GATEUP_STAGED=0 MK_CUDA_GEMV_STAGED=1" "MK_CUDA_GATEUP_STAGED=1 MK_CUDA_GEMV_STAGED=1")
            for rep in 1 2; do
                for e in "${sets[@]}"; do owed_dec cut $B "$e" "$e"; done
            done
            for e in "${sets[0]}" "${sets[3]}"; do owed_dec cut2048 $B "$e" "$e"; done
            for e in "${sets[0]}" "${sets[3]}" "${sets[1]}" "${sets[2]}" "${sets[0]}" "${sets[3]}"; do
                owed_dec full $B "$e" "$e"
            done
        } 2>&1 | tee "$out/s33.log"
        exit $rc
    fi
    if [ "$what" = ab ]; then
        # two builds interleaved (each with its own env): what a change that is in every kernel (no
        # switch) is worth
        m=/tmp/mk-owed-30b
        owed_30b $B/moekit
        O=${MK_OWED_OLD:?MK_OWED_OLD names the folder of the other binaries}
        en=${MK_OWED_ENV_NEW:-} eo=${MK_OWED_ENV_OLD:-}
        {
            nvidia-smi --query-gpu=name --format=csv,noheader
            for rep in 1 2; do
                for d in "$B|$en" "$O|$eo"; do owed_dec cut "${d%%|*}" "${d#*|}" "${d%%|*} ${d#*|}"; done
            done
            for d in "$B|$en" "$O|$eo"; do owed_dec cut2048 "${d%%|*}" "${d#*|}" "${d%%|*} ${d#*|}"; done
            for d in "$B|$en" "$O|$eo" "$B|$en" "$O|$eo"; do
                owed_dec full "${d%%|*}" "${d#*|}" "${d%%|*} ${d#*|}"
            done
        } 2>&1 | tee "$out/ab${MK_OWED_TAG:-}.log"
        exit $rc
    fi
    if [ "$what" = s36 ]; then
        # session 36: the cut's 2048-token prefill (chunks of 2048, int8 GEMM) under each switch written in
        # sessions 35-36 and all of them, three interleaved rounds (s36.log); then ncu of the int8 GEMMs
        # (k_grp_mm_q8p against k_grp_mm_q8w), one prefill each
        cfgs=("" "MK_CUDA_ATTN_TILE=4" "MK_CUDA_ATTN_TILE=5" "MK_CUDA_QK_ROWS_WARP=1" "MK_CUDA_Q8_WGMMA=1"
            "MK_CUDA_ATTN_TILE=5 MK_CUDA_QK_ROWS_WARP=1 MK_CUDA_Q8_WGMMA=1")
        {
            nvidia-smi --query-gpu=name --format=csv,noheader
            for rep in 1 2 3; do
                for cf in "${cfgs[@]}"; do
                    echo "== 8-layer 30B cut prefill 2048, ${cf:-defaults}"
                    env $cf timeout 60 $B/bench_decode $W/m8 2048 4 16 cuda 2>&1 | grep -E "^prefill"
                done
            done
        } 2>&1 | tee "$out/s36.log"
        if command -v ncu > /dev/null; then
            # (bench_decode's exit status under ncu is 1 after the profiled prefill; the summary is whole)
            for wg in 0 1; do
                MK_CUDA_Q8_WGMMA=$wg timeout 90 ncu --clock-control none --kernel-name regex:k_grp_mm_q8 \
                    --metrics gpu__time_duration.sum --print-summary per-kernel \
                    $B/bench_decode $W/m8 2048 1 $nt cuda-nograph > "$out/ncu_s36_wg$wg.log" 2>&1
                echo "ncu MK_CUDA_Q8_WGMMA=$wg: rc $?"
                grep -E "k_grp_mm|duration" "$out/ncu_s36_wg$wg.log" | head -12
            done
        fi
        exit $rc
    fi
    if [ "$what" = pab ]; then
        O=${MK_OWED_OLD:?MK_OWED_OLD names the folder of the other binaries}
        en=${MK_OWED_ENV_NEW:-} eo=${MK_OWED_ENV_OLD:-}
        {
            nvidia-smi --query-gpu=name --format=csv,noheader
            for rep in 1 2 3; do
                for d in "$B|$en" "$O|$eo"; do
                    echo "== 8-layer 30B cut prefill 2048, ${d%%|*} ${d#*|}"
                    env ${d#*|} timeout 90 "${d%%|*}"/bench_decode $W/m8 2048 4 16 cuda 2>&1 | grep -E "^prefill|^gemm"
                done
            done
        } 2>&1 | tee "$out/pab${MK_OWED_TAG:-}.log"
        exit $rc
    fi
    if [ "$what" = batch ]; then
        # session 31: batched decode with the attention grouped by kv head (k_attn_gqa_each, the default)
        # against k_attn_each (MK_CUDA_ATTN_GQA=0), interleaved: the cut at batch 8 and 32 (batch.log)
        {
            nvidia-smi --query-gpu=name --format=csv,noheader
            for bt in 8 32; do
                for f in 1 0 1 0; do
                    echo "== 8-layer 30B cut, batch $bt, positions 16-143, MK_CUDA_ATTN_GQA=$f"
                    MK_BENCH_BATCH=$bt MK_CUDA_ATTN_GQA=$f timeout 90 $B/bench_decode $W/m8 16 128 16 cuda 2>&1 |
                        grep -E "^batch|^decode"
                done
            done
        } 2>&1 | tee "$out/batch.log"
        exit $rc
    fi
    if [ "$what" = s31 ]; then
        # session 31: the residual step folded into the MoE router only (MK_CUDA_NORM_FOLD=2) and the
        # gate/up kernel in one wave (bench_decode_gu3: launch bounds of 3 blocks an SM, relinked by
        # scripts/cuda-relink.sh) against the default, interleaved: the cut short and after 2048
        # tokens, then the full-depth 30B (s31.log); the decode timed after the warm-up steps
        m=/tmp/mk-owed-30b
        owed_30b $B/moekit
        run() { # LABEL MODEL P D: default, fold 2, gu3
            for r in 1 2; do
                for v in def fold2 gu3; do
                    D=$B/bench_decode f=
                    [ $v = fold2 ] && f=2
                    [ $v = gu3 ] && D=$B/bench_decode_gu3
                    [ -x "$D" ] || continue
                    echo "== $1, $v"
                    MK_CUDA_NORM_FOLD=$f timeout 90 $D $2 $3 $4 16 cuda 2>&1 | grep -E "^decode|^step|^bound"
                done
            done
        }
        {
            nvidia-smi --query-gpu=name --format=csv,noheader
            run "8-layer 30B cut decode, positions 16-271" $W/m8 16 256
            run "8-layer 30B cut decode after 2048 tokens" $W/m8 2048 64
            run "full-depth 30B decode, positions 16-143" $m 16 128
        } 2>&1 | tee "$out/s31.log"
        exit $rc
    fi
    if [ "$what" = warm ]; then
        # session 31: the decode's one-off costs (eager step, recording, lazy kernel loads) kept out of
        # the timed decode (bench_decode MK_BENCH_WARM, default 4) against the old timing (0), with the
        # lookahead off and on: the cut short and after 2048 tokens, then the full-depth 30B (warm.log)
        {
            nvidia-smi --query-gpu=name --format=csv,noheader
            for r in 1 2; do
                for w in 0 4; do
                    for f in 0 1; do
                        echo "== 8-layer 30B cut decode, positions 16-271, MK_BENCH_WARM=$w MK_LOOKAHEAD=$f"
                        MK_BENCH_WARM=$w MK_LOOKAHEAD=$f timeout 60 $B/bench_decode $W/m8 16 256 16 cuda 2>&1 |
                            grep -E "^warm|^decode|^step|^bound"
                    done
                done
            done
            for w in 0 4; do
                for f in 0 1; do
                    echo "== 8-layer 30B cut decode after 2048 tokens, MK_BENCH_WARM=$w MK_LOOKAHEAD=$f"
                    MK_BENCH_WARM=$w MK_LOOKAHEAD=$f timeout 90 $B/bench_decode $W/m8 2048 64 16 cuda 2>&1 |
                        grep -E "^warm|^decode|^step"
                done
            done
            m=/tmp/mk-owed-30b
            owed_30b $B/moekit
            for w in 0 4 4; do
                for f in 0 1; do
                    echo "== full-depth 30B decode, positions 16-143, MK_BENCH_WARM=$w MK_LOOKAHEAD=$f"
                    MK_BENCH_WARM=$w MK_LOOKAHEAD=$f timeout 90 $B/bench_decode $m 16 128 16 cuda 2>&1 |
                        grep -E "^warm|^decode|^step|^bound"
                done
            done
        } 2>&1 | tee "$out/warm.log"
        exit $rc
    fi
    if [ "$what" = lansys ]; then
        # session 31: why the decode lookahead does not shorten the time between steps: the cut's
        # decode (prompt 64, 48 tokens) under nsys with the host's CUDA calls traced, MK_LOOKAHEAD 0
        # and 1; each run's API trace and GPU trace (graphs whole) as CSV (xz): when the host queues
        # step n+1's graph against when step n's ends, and which call blocks
        owed_nsys || { echo "no nsys here"; exit 1; }
        for f in 1 0; do
            MK_LOOKAHEAD=$f timeout 200 nsys profile -o "$out/la$f" --force-overwrite true -t cuda \
                --cuda-graph-trace=graph $B/bench_decode $W/m8 64 48 $nt cuda > "$out/lansys_run$f.log" 2>&1
            echo "nsys MK_LOOKAHEAD=$f: rc $?"
            grep -E "^decode|^device|^step" "$out/lansys_run$f.log"
            ls "$out"; tail -5 "$out/lansys_run$f.log"
            for r in cuda_api_trace cuda_gpu_trace; do
                nsys stats --force-export=true --report $r --format csv "$out/la$f.nsys-rep" \
                    > "$out/la${f}_$r.csv" 2>> "$out/nsys_stats.err"
                xz -9 "$out/la${f}_$r.csv"
            done
            rm -f "$out/la$f.nsys-rep" "$out/la$f.sqlite" "$out/la$f.qdstrm"
        done
        exit $rc
    fi
    if [ "$what" = gqa ]; then
        # session 26: the decode attention grouped by kv head (MK_CUDA_ATTN_GQA) against k_attn,
        # interleaved: the cut's decode short and after 2048 tokens (gqa.log); with FX_TAR first the
        # fixtures' _cuda cases with it on; MK_OWED_QUICK=1: one pair each
        if [ -n "${2:-}" ]; then
            MK_CUDA_ATTN_GQA=1 MK_CUDA_Q8_EARLY=1 bash scripts/cuda-fixtures.sh test "$2" '*_cuda' || rc=1
        fi
        {
            nvidia-smi --query-gpu=name --format=csv,noheader
            pairs="0 1 0 1" long="0 1 0 1"
            [ -n "${MK_OWED_QUICK:-}" ] && pairs="0 1" long= # a short call: the short and 8192-token pairs
            for f in $pairs; do
                echo "== 8-layer 30B cut decode, positions 16-271, MK_CUDA_ATTN_GQA=$f"
                MK_CUDA_ATTN_GQA=$f timeout 60 $B/bench_decode $W/m8 16 256 16 cuda 2>&1 | grep -E "^decode|^bound|^device|^step"
            done
            for f in $long; do
                echo "== 8-layer 30B cut decode after 2048 tokens, MK_CUDA_ATTN_GQA=$f"
                MK_CUDA_ATTN_GQA=$f timeout 90 $B/bench_decode $W/m8 2048 64 16 cuda 2>&1 | grep -E "^decode|^prefill|^device|^step"
            done
            for f in $pairs; do
                echo "== 8-layer 30B cut decode, positions 16-271, MK_CUDA_Q8_EARLY=$f (the int8 rows primed early)"
                MK_CUDA_Q8_EARLY=$f timeout 60 $B/bench_decode $W/m8 16 256 16 cuda 2>&1 | grep -E "^decode|^step"
            done
            for f in 0 1; do
                echo "== 8-layer 30B cut decode after 8192 tokens, MK_CUDA_ATTN_GQA=$f"
                MK_CUDA_ATTN_GQA=$f timeout 90 $B/bench_decode $W/m8 8192 64 16 cuda 2>&1 | grep -E "^decode|^prefill|^device|^step"
            done
        } 2>&1 | tee "$out/gqa.log"
        exit $rc
    fi
    if [ "$what" = la ]; then
        # session 27: the decode lookahead (greedy steps queued one ahead, fed by the device's
        # argmax) against one step at a time (MK_LOOKAHEAD=0), interleaved, on the cut short and
        # after 2048 tokens (la.log); the `step` line gives the GPU's span of a step against its wall
        {
            nvidia-smi --query-gpu=name --format=csv,noheader
            for f in ${MK_OWED_PAIRS:-0 1 0 1}; do
                echo "== 8-layer 30B cut decode, positions 16-271, MK_LOOKAHEAD=$f"
                MK_LOOKAHEAD=$f timeout 60 $B/bench_decode $W/m8 16 256 16 cuda 2>&1 | grep -E "^decode|^device|^step"
            done
            for f in 0 1; do
                echo "== 8-layer 30B cut decode after 2048 tokens, MK_LOOKAHEAD=$f"
                MK_LOOKAHEAD=$f timeout 90 $B/bench_decode $W/m8 2048 64 16 cuda 2>&1 | grep -E "^decode|^step"
            done
        } 2>&1 | tee "$out/la.log"
        exit $rc
    fi
    if [ "$what" = tile2 ]; then
        # the tiled prefill attention's generations (session 24: 3 against 2): the cut's
        # 2048-token prefill in chunks of 512 and 2048 (split and int8 GEMM), interleaved; then ncu
        # of the attention kernels alone
        {
            chs="512 2048"
            [ -n "${MK_OWED_QUICK:-}" ] && chs=512 # a call with little device time left
            for g in split int8; do
                for ch in $chs; do
                    for t in ${MK_OWED_GENS:-2 3 2 3}; do
                        echo "== 8-layer 30B cut, prefill 2048 in chunks of $ch, MK_CUDA_GEMM=$g MK_CUDA_ATTN_TILE=$t"
                        MK_CUDA_GEMM=$g MK_CUDA_ATTN_TILE=$t MK_BENCH_CHUNK=$ch timeout 100 \
                            $B/bench_decode $W/m8 2048 4 16 cuda 2>&1 | grep -E "^prefill"
                    done
                done
            done
        } 2>&1 | tee "$out/tile2.log"
        [ -n "${MK_OWED_QUICK:-}" ] && exit $rc
        for t in $(printf '%s\n' ${MK_OWED_GENS:-2 3} | sort -u); do
            MK_CUDA_ATTN_TILE=$t timeout 120 ncu --clock-control none --kernel-name regex:k_attn_tile \
                --metrics gpu__time_duration.sum --print-summary per-kernel \
                $B/bench_decode $W/m8 2048 1 $nt cuda-nograph > "$out/ncu_tile_$t.log" 2>&1
            echo "ncu tile2=$t: rc $?"
            grep -E "k_attn_tile|duration" "$out/ncu_tile_$t.log" | head -6
        done
        exit $rc
    fi
    if [ "$what" = pncu ] && [ -n "${MK_OWED_NSYS:-}" ]; then
        # the prefill's timeline: where the wall time goes beside the kernels (API calls, waits)
        if ! command -v nsys > /dev/null; then # not on PATH: an Nsight Systems install elsewhere
            ns=$(find /opt /usr/local /usr/lib -name nsys -type f -perm -u+x 2>/dev/null | head -1)
            [ -n "$ns" ] && export PATH=$PATH:$(dirname "$ns")
        fi
        command -v nsys || { echo "no nsys here"; exit 1; }
        timeout 200 nsys profile -o "$out/prefill" --force-overwrite true -t cuda,nvtx,osrt \
            $B/bench_decode $W/m8 2048 1 $nt cuda > "$out/nsys_run.log" 2>&1
        echo "nsys: rc $?"
        if [ ! -e "$out/prefill.nsys-rep" ] && [ -e "$out/prefill.qdstrm" ]; then # the raw stream: import it
            qi=$(find /opt /usr/local -name QdstrmImporter -type f 2>/dev/null | head -1)
            echo "importer: ${qi:-none}"
            [ -n "$qi" ] && "$qi" -i "$out/prefill.qdstrm" > "$out/nsys_import.log" 2>&1
        fi
        rm -f "$out/prefill.qdstrm"
        for r in cuda_api_sum cuda_gpu_trace cuda_api_trace; do
            nsys stats --force-export=true --report $r --format csv "$out/prefill.nsys-rep" > "$out/nsys_$r.csv" 2>&1
        done
        xz -9 "$out/nsys_cuda_gpu_trace.csv" "$out/nsys_cuda_api_trace.csv"
        rm -f "$out/nsys_run.log" "$out/build.log" "$out/configure.log"
        rm -f "$out/prefill.nsys-rep" "$out/prefill.sqlite"
        exit $rc
    fi
    if [ "$what" = dec ]; then
        m=/tmp/mk-owed-30b
        owed_30b $B/moekit
        {
            for f in 0 1 0 1; do
                echo "== 8-layer 30B cut decode, MK_CUDA_QK_FOLD=$f"
                MK_CUDA_QK_FOLD=$f timeout 60 $B/bench_decode $W/m8 16 256 16 cuda 2>&1 | grep -E "^decode|bound"
            done
            for f in 0 1; do
                echo "== 8-layer 30B cut decode after 2048 tokens, MK_CUDA_QK_FOLD=$f"
                MK_CUDA_QK_FOLD=$f timeout 90 $B/bench_decode $W/m8 2048 64 16 cuda 2>&1 | grep -E "^decode"
            done
            for f in 0 1 0 1; do
                echo "== full-depth 30B decode, MK_CUDA_QK_FOLD=$f"
                MK_CUDA_QK_FOLD=$f timeout 90 $B/bench_decode $m 16 128 16 cuda 2>&1 | grep -E "^decode|^bound|^device|^step"
            done
            for f in 0 1; do
                echo "== full-depth 30B decode after 2048 tokens, MK_CUDA_QK_FOLD=$f"
                MK_CUDA_QK_FOLD=$f timeout 120 $B/bench_decode $m 2048 64 16 cuda 2>&1 | grep -E "^decode|^prefill"
            done
        } 2>&1 | tee "$out/dec.log"
        [ -n "${MK_OWED_QUICK:-}" ] && exit $rc
        timeout 150 ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum \
            --print-summary per-kernel $B/bench_decode $W/m8 64 3 $nt cuda-nograph > "$out/ncu_dec.log" 2>&1
        echo "ncu: rc $? (ncu_dec.log)"
        exit $rc
    fi
    if [ "$what" = pfull ]; then
        # launches 24-25 of each kernel: layers 0-1 of the warm-up prefill's last chunk (8 layers x 4 chunks
        # of 512); MK_OWED_KERNELS the kernels (default k_attn_tile3 k_grp_mm: the split GEMM's; for the
        # int8 GEMM's, k_grp_mm_q8p with MK_OWED_GEMM=auto or int8; default split, as k_grp_mm needs),
        # MK_OWED_SKIP the launches skipped
        for k in ${MK_OWED_KERNELS:-k_attn_tile3 k_grp_mm}; do
            MK_CUDA_GEMM=${MK_OWED_GEMM:-split} MK_BENCH_CHUNK=512 timeout 200 ncu --set full --clock-control none --kernel-name "regex:^$k\$" \
                --launch-skip ${MK_OWED_SKIP:-24} --launch-count 2 $B/bench_decode $W/m8 2048 1 $nt cuda-nograph \
                > "$out/ncu_pfull_$k.log" 2>&1
            echo "ncu $k: rc $?"
        done
        cat "$out"/ncu_pfull_k_*.log | grep -E "^  [a-z_v].*\(|Duration|Throughput|Pipe|Occupancy|Registers|Eligible|Issued|Stall|Bank|Shared" \
            > "$out/ncu_pfull.log"
        exit $rc
    fi
    if [ "$what" = rncu ]; then
        # where k_router's and k_gateup_q8's time goes line by line: --page source needs the report's
        # source counters (--set full has them); printed as CSV (SASS with its CUDA line), xz'd
        for k in ${MK_OWED_KERNELS:-k_router k_gateup_q8}; do
            timeout 200 ncu --set full --import-source yes --clock-control none --kernel-name "regex:^$k" \
                --launch-skip ${MK_OWED_SKIP:-24} --launch-count 2 -o "$out/ncu_$k" -f \
                $B/bench_decode $W/m8 64 4 $nt cuda-nograph > "$out/ncu_$k.log" 2>&1
            echo "ncu $k: rc $?"
            ncu -i "$out/ncu_$k.ncu-rep" --page source --print-source sass,cuda --csv 2> "$out/ncu_src_$k.err" |
                xz -6 > "$out/ncu_src_$k.csv.xz"
            ncu -i "$out/ncu_$k.ncu-rep" --page details --section WarpStateStats --section SchedulerStats \
                --section LaunchStats --section Occupancy 2>&1 | head -80
            # the report kept only when the source export failed (ncu_src_*.err says why)
            [ -s "$out/ncu_src_$k.err" ] || rm -f "$out/ncu_$k.ncu-rep"
        done
        exit $rc
    fi
    if [ "$what" = dncu ]; then
        # one decode layer's kernels in detail: prompt 64, then decode steps; the launches past the
        # prefill's (skip) are a decode step's (8 layers x ~6 matching kernels a layer)
        timeout 400 ncu --set full --clock-control none --kernel-name \
            'regex:^k_attn$|k_router|k_gateup|k_down2|k_gemv|k_rmsnorm|k_add_rmsnorm|k_qk_norm' \
            --launch-skip ${MK_OWED_SKIP:-160} --launch-count ${MK_OWED_COUNT:-14} \
            $B/bench_decode $W/m8 64 4 $nt cuda-nograph > "$out/ncu_decode.log" 2>&1
        echo "ncu decode: rc $? (ncu_decode.log)"
        grep -E "^  [a-z_]+.*\(|Duration|Memory Throughput|Achieved Occupancy|Registers Per|Block Size|Grid Size" \
            "$out/ncu_decode.log" | head -120
        exit $rc
    fi
    if [ "$what" = pncu ]; then
        # where a 2048-token prefill of the cut goes, kernel by kernel (split and int8 GEMM; the
        # bench's warm-up prefill is in the counts too: halve them)
        for g in ${MK_OWED_GEMMS:-split int8}; do
            MK_CUDA_GEMM=$g timeout 200 ncu --clock-control none --cache-control none \
                --metrics gpu__time_duration.sum --print-summary per-kernel \
                $B/bench_decode $W/m8 2048 1 $nt cuda-nograph > "$out/ncu_prefill_$g.log" 2>&1
            echo "ncu $g: rc $? (ncu_prefill_$g.log)"
        done
        exit $rc
    fi
    if [ "$what" = chunks ]; then
        for g in MK_CUDA_GEMM=split MK_CUDA_GEMM=int8; do
            for ch in 512 1024 2048 512; do
                echo "== 8-layer 30B cut, prefill 2048 in chunks of $ch, $g"
                env $g MK_BENCH_CHUNK=$ch timeout 100 $B/bench_decode $W/m8 2048 4 16 cuda 2>&1 |
                    grep -E "^prefill|rate"
            done
        done 2>&1 | tee "$out/chunks.log"
        exit $rc
    fi
    {
        for g in MK_CUDA_GEMV_STAGED=0 MK_CUDA_GEMV_STAGED=1 MK_CUDA_MOE_STAGED=1 \
            "MK_CUDA_GEMV_STAGED=1 MK_CUDA_MOE_STAGED=1" MK_CUDA_GEMV_STAGED=0 \
            "MK_CUDA_GEMV_STAGED=1 MK_CUDA_MOE_STAGED=1"; do
            echo "== 8-layer 30B cut decode, $g"
            env $g timeout 60 $B/bench_decode $W/m8 16 256 16 cuda 2>&1 | grep -E "^decode|bound"
        done
        for g in MK_CUDA_GEMM=split "MK_CUDA_GEMM=int8 MK_CUDA_Q8P=0" "MK_CUDA_GEMM=int8 MK_CUDA_Q8P=1" \
            "MK_CUDA_GEMM=int8 MK_CUDA_Q8P=0" "MK_CUDA_GEMM=int8 MK_CUDA_Q8P=1"; do
            echo "== 8-layer 30B cut, prefill 2048, $g"
            env $g timeout 100 $B/bench_decode $W/m8 2048 4 16 cuda 2>&1 | grep -E "^prefill|rate"
        done
        echo "== the GEMV alone (bench_cuda_moe --gemv), staged off / on"
        for g in 0 1; do
            MK_CUDA_GEMV_STAGED=$g timeout 90 ./build-cuda/bench_cuda_moe --gemv 2>&1 | grep -E "^device|^gemv|^copy"
        done
    } 2>&1 | tee "$out/staged.log"
    if command -v ncu > /dev/null; then
        MK_CUDA_GEMV_STAGED=1 MK_CUDA_MOE_STAGED=1 timeout 150 ncu --clock-control none \
            --metrics gpu__time_duration.sum --print-summary per-kernel \
            $B/bench_decode $W/m8 64 3 $nt cuda-nograph > "$out/ncu_sum.log" 2>&1
        echo "ncu: rc $? (ncu_sum.log)"
    fi
    ;;
*)
    echo "usage: see the header" >&2
    exit 2
    ;;
esac
exit $rc
