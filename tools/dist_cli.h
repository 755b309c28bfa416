/* The engine commands under MPI (run, logits, eval; issue 18): when to run
 * distributed, the flags, the workers' path and the lead's setup.
 *
 * Three placements (--mpi-mode): expert (default: every rank holds every
 * layer and a share of each MoE layer's routed experts), pipeline (rank
 * r is stage r and holds a contiguous range of layers, balanced by their
 * weight bytes or given by --pipeline-layers, with KV cache for its layers
 * only) and both (S stages of contiguous ranks, --pipeline-stages or the
 * number of --pipeline-layers ranges, default 2; the ranks of a stage split
 * its routed experts as expert mode does, by count or --mpi-balance).
 *
 * The CLI, never the library, decides: --mpi, or mpirun's environment
 * (OMPI_COMM_WORLD_SIZE, or PMI_SIZE of MPICH-style launchers) giving more
 * than one rank. Rank 0 is the command as usual plus the partition hook;
 * every other rank opens the same model with the same flags, takes the
 * engine shape from rank 0 and replays its steps (mk_dist_work), printing
 * nothing but its startup line. The lead's end (however the command
 * returns) tells the workers to stop, then MPI is finalized (atexit). */
#ifndef MK_TOOLS_DIST_CLI_H
#define MK_TOOLS_DIST_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "engine_cli.h"
#include "moekit/dist.h"

typedef struct mk_ecli_dist {
    bool mpi;            /* --mpi */
    mk_dist_opts o;      /* --mpi-timeout, --mpi-test-fault */
    const char *balance; /* --mpi-balance PROFILE (rank 0 reads it) */
    bool pipeline;       /* --mpi-mode pipeline or both (or --pipeline-layers) */
    bool both;           /* --mpi-mode both: experts split within each stage */
    long long nstages;   /* --pipeline-stages (both; 0: not given) */
    int32_t *sranks;     /* both: [stages+1] rank bounds of the stages */
    bool mode_given;     /* --mpi-mode given */
    const char *layers;  /* --pipeline-layers A-B,C-D,... */
    int32_t *bounds;     /* pipeline: [stages+1] layer bounds, computed from the model once */
    int nbounds;
    uint64_t held_r, held_x; /* pipeline: this stage's non-expert and routed-expert bytes (both: this
                                rank's share of the latter, all of the stage's with --mpi-balance) */
    int slots;           /* sequences the lead drives (serve's --parallel; 0: 1), an engine each */
    const char *cmd;     /* for messages */
    mk_dist *d;          /* started: NULL for a single-process run */
    const mk_moe_part *part;
    const mk_layer_pipe *pipe;
} mk_ecli_dist;

#define MK_ECLI_DIST_OPTS                                                                                    \
    {"mpi", no_argument, 0, 0x4e01}, {"mpi-timeout", required_argument, 0, 0x4e02},                          \
        {"mpi-test-fault", required_argument, 0, 0x4e03}, {"mpi-balance", required_argument, 0, 0x4e04},   \
        {"mpi-mode", required_argument, 0, 0x4e05}, {"pipeline-layers", required_argument, 0, 0x4e06}, {     \
        "pipeline-stages", required_argument, 0, 0x4e07                                                      \
    }

extern const char mk_ecli_dist_help[];
/* Handle one of those options (see mk_ecli_mem_flag). */
int mk_ecli_dist_flag(mk_ecli_dist *dd, int ch, const char *arg, bool *mine);
/* Start MPI when asked (--mpi or the launcher's environment); otherwise
 * leave dd->d NULL. Fails when asked and moekit has no MPI. Sets
 * mm->ranks, so --memory-budget counts only this rank's share of the
 * routed experts. */
mk_status mk_ecli_dist_start(mk_ecli_dist *dd, mk_ecli_mem *mm);
/* --stats: the exchange counters of this rank (nothing without MPI). */
void mk_ecli_dist_stats(const mk_ecli_dist *dd, FILE *f);
/* This process is a worker (rank > 0). */
bool mk_ecli_dist_worker(const mk_ecli_dist *dd);
/* Worker: open `model` as the lead does (mo, mm: the same flags), wait for
 * the lead's engine shape, create the engines over this rank's experts
 * (one per sequence the lead drives; threads from eo) and replay the
 * lead's steps. Returns the exit code. */
int mk_ecli_dist_work(mk_ecli_dist *dd, const char *model, const mk_model_opts *mo, mk_ecli_mem *mm,
                      const mk_engine_opts *eo);
/* Lead, after opening m and before creating the engine with *eo: size the
 * partition, print this rank's share, set eo->moe_part and announce the
 * engine shape (and dd->slots sequences) to the workers. No-op without
 * MPI. */
mk_status mk_ecli_dist_lead(mk_ecli_dist *dd, const mk_model *m, mk_engine_opts *eo);
/* Lead with several sequences (serve's slots): eo's hooks (set by
 * mk_ecli_dist_lead) become sequence `slot`'s, for its engine. No-op
 * without MPI. */
void mk_ecli_dist_slot(const mk_ecli_dist *dd, int slot, mk_engine_opts *eo);

#endif
