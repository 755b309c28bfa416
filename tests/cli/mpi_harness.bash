# Shared by the MPI tests (tests/cli/mpi_*.sh; sourced after fixtures.bash
# and need_fixtures): skips visibly (exit 77) where moekit has no MPI or
# mpirun is missing, makes the temp dir $T and the mpirun command line
# ${MPI[@]} (OpenMPI's TCP transport: ob1 + btl tcp,self; up to 4 ranks, one
# host each), defines fail and
# ids_of, and RANK0_HOST (where rank 0's sockets can be reached from
# here). Where network namespaces can be made (root, iproute2), each rank
# runs in a namespace of its own, as on a host of its own: a bridge in this
# namespace joins one veth pair per rank (a private /24 with no route off
# this machine), mpirun starts one ORTE daemon per namespace through a
# launch agent (`ip netns exec` in place of ssh) and the ranks' TCP traffic
# goes over the veths; all of it is removed on exit (trap). Elsewhere the
# ranks share this machine's loopback, which is said on stdout.
if ! grep -q '^MK_MPI:BOOL=ON' "$MK_BUILD/CMakeCache.txt" 2>/dev/null; then
    echo "skip: moekit was built without MPI (MK_MPI is off: install openmpi-bin and libopenmpi-dev, scripts/install-deps.sh, and reconfigure)"
    exit 77
fi
command -v mpirun >/dev/null || { echo "skip: mpirun not found (openmpi-bin)"; exit 77; }

T=$(mktemp -d)
fail() { echo "FAIL: $*" >&2; exit 1; }

# rank0_of ALIAS: the pid of rank 0 of the job serving ALIAS, found by the
# environment its launcher gave it (the last such process, as pgrep lists
# them: a wrapper that shares its command line comes before it); asked again
# for up to 5 s; empty when there is none. grep -z reads the NUL-separated
# file itself: `tr ... | grep -q` under pipefail failed whenever grep quit
# on its match before tr's last write (tr killed by SIGPIPE, status 141; a
# rank's environment is ~4.2 KB, the rank's entry inside the first 4 KB).
rank0_of() {
    local p r
    for _ in $(seq 50); do
        r=
        for p in $(pgrep -f -- "--alias $1"); do
            grep -qxz OMPI_COMM_WORLD_RANK=0 "/proc/$p/environ" 2> /dev/null && r=$p
        done
        [ -n "$r" ] && { echo "$r"; return 0; }
        sleep 0.1
    done
}

MPI=(mpirun --oversubscribe --bind-to none --mca pml ob1 --mca btl tcp,self)
[ "$(id -u)" -eq 0 ] && MPI+=(--allow-run-as-root)
# The sanitizer build runs these tests too: OpenMPI's own allocations held at exit are suppressed by
# library name (lsan_mpi.supp, never a moekit frame), and the sanitizers' options reach every rank
# (-x: the daemons in namespaces do not inherit this environment). OpenMPI has no frame pointers, so
# the fast unwinder stops at the first frame above malloc, often inside an MCA component, which
# MPI_Finalize unloads (dlclose) before LeakSanitizer reports: "<unknown module>", nothing to match.
# The sanitizer build's mk_mpi_keep_modules.so, preloaded into every rank, makes dlclose do nothing,
# so that frame names its component; without it (another build), every malloc is unwound the slow
# way (fast_unwind_on_malloc=0, 3x the job's time) to reach libmpi. A leak of moekit's own (checked
# both ways: a malloc left in tools/dist_cli.c) is still reported on every rank and fails the run.
LSAN_OPTIONS="suppressions=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lsan_mpi.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
if [ -f "$MK_BUILD/libmk_mpi_keep_modules.so" ]; then
    MPI+=(-x "LD_PRELOAD=$MK_BUILD/libmk_mpi_keep_modules.so")
else
    LSAN_OPTIONS="fast_unwind_on_malloc=0:$LSAN_OPTIONS"
fi
export LSAN_OPTIONS
MPI+=(-x LSAN_OPTIONS)
for v in ASAN_OPTIONS UBSAN_OPTIONS; do [ -n "${!v:-}" ] && MPI+=(-x "$v"); done

# ---- one network namespace per rank, where they can be made ----
S=$$
NET=10.$((100 + S / 250 % 100)).$((S % 250))
BR=mkb$S
cleanup() {
    local r
    for r in 0 1 2 3; do ip netns del "mkns${S}_$r" 2>/dev/null || true; done
    ip link del "$BR" 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT
make_ns() { # errors in $T/ns.err
    [ "$(id -u)" -eq 0 ] || { echo "not root" > "$T/ns.err"; return 1; }
    command -v ip >/dev/null || { echo "iproute2's ip not found" > "$T/ns.err"; return 1; }
    {
        ip link add "$BR" type bridge && ip addr add "$NET.254/24" dev "$BR" && ip link set "$BR" up || return 1
        local r
        for r in 0 1 2 3; do
            local ns=mkns${S}_$r v=mkv${S}r$r p=mkp${S}r$r
            ip netns add "$ns" && ip link add "$v" type veth peer name "$p" && ip link set "$p" netns "$ns" &&
                ip link set "$v" master "$BR" up && ip -n "$ns" link set lo up &&
                ip -n "$ns" addr add "$NET.$((r + 1))/24" dev "$p" && ip -n "$ns" link set "$p" up || return 1
        done
    } 2> "$T/ns.err"
    # mpirun's launch agent, its ssh: host NET.(r+1) is namespace r. Each daemon gets a session
    # directory of its own: they share this machine's /tmp and host name, and raced creating one
    # ("mkdir: File exists", 1 start in 16).
    cat > "$T/agent" <<EOF
#!/bin/bash
while [ "\${1#-}" != "\$1" ]; do shift; done
host=\$1; shift
r=\$(( \${host##*.} - 1 ))
mkdir -p "$T/session\$r"
export OMPI_MCA_orte_tmpdir_base="$T/session\$r"
exec ip netns exec mkns${S}_\$r /bin/sh -c "\$*"
EOF
    chmod +x "$T/agent"
}
if make_ns; then
    # The daemons' shared-memory topology (rtc_hwloc_vmhole) crashed 1 orted start in 8 here (OpenMPI
    # 4.1.4, hwloc 2.9: a segfault in hwloc_shmem_topology_write), and PMIx's ds21 store printed errors
    # with daemons in namespaces: both off, the daemons then read the topology and keys themselves.
    export PMIX_MCA_gds=hash
    MPI+=(--mca plm_rsh_agent "$T/agent" --host "$NET.1,$NET.2,$NET.3,$NET.4" --mca oob_tcp_if_include "$NET.0/24"
          --mca btl_tcp_if_include "$NET.0/24" --mca rtc_hwloc_vmhole none -x PMIX_MCA_gds)
    echo "note: each rank in its own network namespace (mkns${S}_0..3), joined by veth pairs over $NET.0/24"
    RANK0_HOST=$NET.1 # rank 0's address, reachable from this namespace over the bridge
else
    MPI+=(--mca btl_tcp_if_include lo --mca oob_tcp_if_include lo)
    RANK0_HOST=127.0.0.1
    echo "note: network namespaces could not be made ($(tr '\n' ' ' < "$T/ns.err")): the ranks share this machine's loopback"
fi

ids_of() { # the fixture's 32 reference input ids, comma-separated
    tr -d ' \n' < "$1/reference.json" | sed 's/.*"input_ids":\[\([0-9,]*\)\].*/\1/'
}

