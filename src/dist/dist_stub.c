/* mk_dist_* when moekit is built without MPI (CMake found no MPI C
 * library): every call that would start or use MPI fails with
 * MK_E_UNSUPPORTED saying so, so the CLI's --mpi (or a run under mpirun)
 * ends with that reason instead of failing to link. CMake compiles this
 * file only when MPI is absent, and src/dist/dist_mpi.c otherwise. */
#include <stdio.h>
#include <stdlib.h>

#include "moekit/dist.h"

static mk_status no_mpi(void) {
    return mk_err(
        MK_E_UNSUPPORTED,
        "moekit was built without MPI (no MPI C library at configure time: "
        "install Debian's openmpi-bin and libopenmpi-dev, scripts/install-deps.sh, and reconfigure)");
}

mk_status mk_dist_init(const mk_dist_opts *o, mk_dist **out) {
    *out = NULL;
    return no_mpi();
}
void mk_dist_free(mk_dist *d) {}
int mk_dist_rank(const mk_dist *d) {
    return 0;
}
int mk_dist_size(const mk_dist *d) {
    return 1;
}
_Noreturn void mk_dist_abort(mk_dist *d, int code, const char *msg) {
    fprintf(stderr, "moekit: %s\n", msg);
    exit(code);
}
mk_status mk_dist_part(mk_dist *d, const mk_model *m, const mk_moe_part **part) {
    *part = NULL;
    return no_mpi();
}
void mk_dist_range(const mk_dist *d, int layer, int32_t *lo, int32_t *hi) {
    *lo = *hi = 0;
}
mk_status mk_dist_set_cuts(mk_dist *d, const mk_model *m, const int32_t *cuts) {
    return no_mpi();
}
mk_status mk_dist_announce(mk_dist *d, const mk_engine_opts *o, uint64_t fingerprint) {
    return no_mpi();
}
mk_status mk_dist_await(mk_dist *d, uint64_t fingerprint, mk_engine_opts *o, bool *finished) {
    *finished = false;
    return no_mpi();
}
mk_status mk_dist_set_slots(mk_dist *d, int n) {
    return no_mpi();
}
int mk_dist_slots(const mk_dist *d) {
    return 1;
}
const mk_moe_part *mk_dist_slot_part(const mk_dist *d, int slot) {
    return NULL;
}
const mk_layer_pipe *mk_dist_slot_pipe(const mk_dist *d, int slot) {
    return NULL;
}
mk_status mk_dist_work(mk_dist *d, mk_engine *const *es, int n) {
    return no_mpi();
}
void mk_dist_finish(mk_dist *d) {}
mk_status mk_dist_set_stages(mk_dist *d, const mk_model *m, int nstages, const int32_t *bounds,
                             const int32_t *ranks) {
    return no_mpi();
}
bool mk_dist_pipelined(const mk_dist *d) {
    return false;
}
bool mk_dist_both(const mk_dist *d) {
    return false;
}
void mk_dist_stage_ranks(const mk_dist *d, int *stage, int *stages, int *first, int *count) {
    *stage = *stages = *first = *count = 0;
}
void mk_dist_stage(const mk_dist *d, int *first, int *last) {
    *first = *last = 0;
}
mk_status mk_dist_pipe(mk_dist *d, const mk_model *m, const mk_layer_pipe **pipe) {
    *pipe = NULL;
    return no_mpi();
}
void mk_dist_stats(const mk_dist *d, FILE *f) {}
