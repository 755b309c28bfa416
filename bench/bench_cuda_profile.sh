#!/usr/bin/env bash
# Where a CUDA decode step's time goes (issue 14; run on a lent GPU machine after
# scripts/cuda-device-run.sh built BUILD_DIR with moekit_cli and bench_decode):
# a 4-layer cut of the Qwen3-30B-A3B shape (MLX 4-bit g64, made on the machine): wall time per
# step (bench_decode cuda, cuda-graph, cuda-unfused) and Nsight Compute's per-kernel GPU time
# over 4 single-token steps (ncu_sum.log in OUT_DIR).
#   usage: bench/bench_cuda_profile.sh [BUILD_DIR=build-cuda] [OUT_DIR=$OUT] [WORK_DIR=/tmp/mk-prof]
set -uo pipefail
B=${1:-build-cuda} OUT=${2:-${OUT:-/tmp}} W=${3:-/tmp/mk-prof} nt=$(nproc)
mkdir -p "$W" "$OUT"
$B/moekit synth $W/ct --arch qwen3_moe --preset 30b-a3b --format ct-int4 --layers 4 --threads $nt --quiet --force || exit 1
$B/moekit quantize $W/ct $W/m4 --bits 4 --group-size 64 --threads $nt --quiet --force > /dev/null 2>&1 || exit 1
for i in 1 2; do $B/bench_decode $W/m4 1 256 $nt cuda | grep -E "decode|bound"; done
$B/bench_decode $W/m4 1 256 $nt cuda-graph | grep -E "decode"
$B/bench_decode $W/m4 1 64 $nt cuda-unfused | grep -E "decode"
timeout 300 ncu --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel \
   $B/bench_decode $W/m4 1 3 $nt cuda > $OUT/ncu_sum.log 2>&1
grep -E "^  [a-zA-Z_].*\(|gpu__time_duration|Invocations|^    [a-z_]" $OUT/ncu_sum.log | head -5
python3 - "$OUT/ncu_sum.log" <<'PY'
import re,sys
txt=open(sys.argv[1]).read()
# blocks: kernel signature line, then "Section: Command line profiler metrics" with gpu__time_duration.sum ... avg
rows=[]
cur=None; inv=None
for line in txt.splitlines():
    m=re.match(r'^  (\S.*?)\s*\(\d+, \d+, \d+\)x\(\d+, \d+, \d+\)', line)
    if m: cur=m.group(1)[:60]; continue
    m=re.search(r'Invocations\D*(\d+)', line)
    if m: inv=int(m.group(1))
    m=re.match(r'\s+gpu__time_duration.sum\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)',line)
    if m and cur:
        unit=m.group(1); mn,mx,avg=[float(x.replace(',','')) for x in m.group(2,3,4)]
        f={'nsecond':1e-3,'usecond':1,'msecond':1e3}.get(unit,1)
        rows.append((cur,inv,avg*f)); cur=None
rows.sort(key=lambda r:-(r[1] or 0)*r[2])
tot=sum((r[1] or 0)*r[2] for r in rows)
print("kernel                                                        calls   avg us   total us")
for r in rows[:25]: print("%-60s %6s %8.2f %10.1f"%(r[0],r[1],r[2],(r[1] or 0)*r[2]))
print("total GPU us over the run:", round(tot,1))
PY
