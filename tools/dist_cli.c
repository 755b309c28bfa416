/* The engine commands under MPI: flags, detection, the workers' path
 * (tools/dist_cli.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "cli_flags.h"
#include "cmd.h"
#include "core/alloc.h"
#include "dist_cli.h"
#include "moekit/kernels.h"
#include "moekit/profile.h"

const char mk_ecli_dist_help[] =
    "  --mpi                run as one rank of an MPI job (implied under mpirun with more than\n"
    "                       one rank); rank 0 tokenizes, samples and prints; logits are bitwise\n"
    "                       those of one process in any mode\n"
    "  --mpi-mode expert|pipeline|both\n"
    "                       expert (default): every rank holds every layer and computes a share\n"
    "                       of each MoE layer's routed experts (one exchange per MoE layer per\n"
    "                       step). pipeline: rank r holds a contiguous range of layers (stage r,\n"
    "                       balanced by weight bytes), with KV cache for them only, for when the\n"
    "                       non-expert weights do not fit one host; hidden states go rank to rank,\n"
    "                       the last rank sends the logits to rank 0. both: the ranks form S\n"
    "                       stages of contiguous ranks (--pipeline-stages; N ranks: N/S each, the\n"
    "                       first N%S stages one more), each holding a range of layers (weight\n"
    "                       bytes balanced per rank), and a stage's ranks split its routed experts\n"
    "                       as expert mode does (by count or --mpi-balance; exchanges within the\n"
    "                       stage), e.g. -np 4: 2 stages x 2 ranks, -np 3: stages of 2 + 1\n"
    "  --pipeline-layers A-B,C-D,...\n"
    "                       pipeline mode with these layer ranges, one per stage (rank, unless\n"
    "                       --mpi-mode both), in order, covering every layer (e.g. 0-11,12-23)\n"
    "  --pipeline-stages S  --mpi-mode both: S stages, 1 <= S <= ranks (default: the number of\n"
    "                       --pipeline-layers ranges, else 2)\n"
    "  --mpi-timeout SEC    a rank that does not deliver within SEC seconds in a step stops every\n"
    "                       rank, naming it (default 60)\n"
    "  --mpi-balance P.json split each MoE layer's experts into contiguous ranges of about equal\n"
    "                       routing frequency in `moekit profile`'s P.json (default: equal counts;\n"
    "                       both: over the ranks of the layer's stage)\n";

/* The launcher's rank count from its environment (the CLI layer may read
 * it; the library does not): 0 when not under a launcher. */
static long launcher_size(void) {
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v)
            return strtol(v, NULL, 10);
    }
    return 0;
}

int mk_ecli_dist_flag(mk_ecli_dist *dd, int ch, const char *arg, bool *mine) {
    *mine = true;
    int rc;
    switch (ch) {
    case 0x4e01: dd->mpi = true; return -1;
    case 0x4e04: dd->balance = arg; return -1;
    case 0x4e05:
        if (!strcmp(arg, "expert") || !strcmp(arg, "pipeline") || !strcmp(arg, "both")) {
            dd->both = !strcmp(arg, "both");
            dd->pipeline = strcmp(arg, "expert") != 0;
            dd->mode_given = true;
            return -1;
        }
        return mk_cli_usage(dd->cmd, "--mpi-mode: expected expert, pipeline or both, found '%s'", arg);
    case 0x4e06: dd->layers = arg; return -1;
    case 0x4e07:
        if ((rc = mk_flag_int(dd->cmd, "--pipeline-stages", arg, 1, 64, &dd->nstages)) >= 0)
            return rc;
        return -1;
    case 0x4e02:
        if ((rc = mk_flag_real(dd->cmd, "--mpi-timeout", arg, 0, 1e6, MK_FLAG_LO_OPEN, &dd->o.timeout_s)) >=
            0)
            return rc;
        return -1;
    case 0x4e03: {
#ifdef MK_TEST_HOOKS
        /* KIND:RANK:LAYER:STEP, KIND flip|stall|kill (include/moekit/dist.h) */
        char kind[8];
        int r, l, used = 0;
        long long s;
        if (sscanf(arg, "%7[a-z]:%d:%d:%lld%n", kind, &r, &l, &s, &used) == 4 && arg[used] == '\0') {
            mk_dist_fault f = {.rank = r, .layer = l, .step = s};
            f.kind = !strcmp(kind, "flip")    ? MK_DIST_FAULT_FLIP
                     : !strcmp(kind, "stall") ? MK_DIST_FAULT_STALL
                     : !strcmp(kind, "kill")  ? MK_DIST_FAULT_KILL
                                              : MK_DIST_FAULT_NONE;
            if (f.kind != MK_DIST_FAULT_NONE) {
                dd->o.fault = f;
                return -1;
            }
        }
        return mk_cli_usage(dd->cmd, "--mpi-test-fault: expected flip|stall|kill:RANK:LAYER:STEP, found '%s'",
                            arg);
#else
        return mk_cli_usage(dd->cmd, "--mpi-test-fault: this build has no test hooks (MK_TEST_HOOKS=OFF)");
#endif
    }
    default: *mine = false; return -1;
    }
}

static double gib(uint64_t b) {
    return (double)b / (double)(1ull << 30);
}

static mk_dist *g_dist; /* for the exit handler */
static int32_t *g_bounds; /* the pipeline's stage bounds (dd may be gone at exit) */
static int32_t *g_sranks; /* both: the stages' rank bounds */

/* However the command ends: the lead tells the workers to stop (they would
 * otherwise wait for its next step), then every rank finalizes MPI. */
static void dist_atexit(void) {
    mk_dist_finish(g_dist);
    mk_dist_free(g_dist);
    g_dist = NULL;
    free(g_bounds);
    g_bounds = NULL;
    free(g_sranks);
    g_sranks = NULL;
}

static mk_status stage_held(void *user, const mk_model *m, uint64_t *resident, uint64_t *experts);

/* The pipeline's stage count: one per rank, or (both) --pipeline-stages,
 * else the number of --pipeline-layers ranges, else 2. */
static int stage_count(const mk_ecli_dist *dd, int ranks) {
    if (!dd->both)
        return ranks;
    if (dd->nstages)
        return (int)dd->nstages;
    if (!dd->layers)
        return 2;
    int n = 1;
    for (const char *p = dd->layers; *p; p++)
        n += *p == ',';
    return n;
}

/* Both: S stages of N ranks can be made (each stage one rank or more). */
static mk_status shape_check(const mk_ecli_dist *dd, int N) {
    int S = stage_count(dd, N);
    if (dd->both && S > N)
        return mk_err(MK_E_ARG, "%s: --mpi-mode both with %d pipeline stages needs at least %d MPI ranks "
                      "(one or more per stage), found %d: start more ranks (mpirun -np %d) or give fewer "
                      "--pipeline-stages", dd->cmd, S, S, N, S);
    return MK_OK;
}

mk_status mk_ecli_dist_start(mk_ecli_dist *dd, mk_ecli_mem *mm) {
    long n = launcher_size();
    if (dd->layers && dd->mode_given && !dd->pipeline)
        return mk_err(MK_E_ARG, "%s: --pipeline-layers goes with --mpi-mode pipeline or both, not expert",
                      dd->cmd);
    if (dd->nstages && !dd->both)
        return mk_err(MK_E_ARG, "%s: --pipeline-stages goes with --mpi-mode both (a pipeline has one stage "
                      "per rank)", dd->cmd);
    if (dd->layers)
        dd->pipeline = true;
    if (dd->pipeline && !dd->both && dd->balance)
        return mk_err(MK_E_ARG, "%s: --mpi-balance splits experts (--mpi-mode expert or both); a pipeline "
                      "splits layers", dd->cmd);
    if (!dd->mpi && n <= 1)
        return MK_OK;
    if (n > 1) /* before MPI starts: every rank refuses alike and exits */
        MK_TRY(shape_check(dd, (int)n));
    mk_status st = mk_dist_init(&dd->o, &dd->d);
    if (st != MK_OK)
        return mk_err_wrap(st, "%s", dd->mpi ? "--mpi" : "running under an MPI launcher");
    g_dist = dd->d;
    atexit(dist_atexit);
    MK_TRY(shape_check(dd, mk_dist_size(dd->d)));
    /* the budget counts ceil(E/ranks) experts per layer: a split by count (--mpi-balance may give a
     * rank more, so it counts them all) */
    mm->ranks = dd->balance || dd->pipeline ? 1 : mk_dist_size(dd->d);
    /* the exchange buffers this rank will grow, counted in its budget (engine_cli.c dist_bytes) */
    if (mk_dist_size(dd->d) > 1)
        mm->dist_bufs = (!dd->pipeline || dd->both ? 1 : 0) | (dd->pipeline ? 2 : 0);
    if (dd->pipeline) { /* the budget counts this stage's layers */
        mm->held_fn = stage_held;
        mm->held_user = dd;
    }
    return MK_OK;
}

void mk_ecli_dist_stats(const mk_ecli_dist *dd, FILE *f) {
    if (dd && dd->d)
        mk_dist_stats(dd->d, f);
}

/* ---- pipeline stages ---------------------------------------------------------- */

/* Decoder layer of a checkpoint tensor ("...layers.N..."; -1: none, or a
 * vision tower's layer). */
static int tensor_layer(const char *name) {
    if (strstr(name, "vision") || strstr(name, "visual"))
        return -2;
    const char *p = strstr(name, "layers.");
    if (!p || p[7] < '0' || p[7] > '9')
        return -1;
    return (int)strtol(p + 7, NULL, 10);
}

static bool tensor_expert(const char *name) {
    return strstr(name, ".experts") || strstr(name, "switch_mlp");
}

/* Weight bytes per decoder layer (dense[l], expert[l]) and outside the
 * layers: the embedding (first stage), lm_head (last stage; the embedding
 * again when tied) and the rest (the final norm: every stage counts it). */
typedef struct layer_bytes {
    uint64_t *dense, *expert, embed, head, rest;
} layer_bytes;

static mk_status count_layer_bytes(const mk_model *m, layer_bytes *b) {
    const mk_config *c = mk_model_config(m);
    const mk_ckpt *ck = mk_model_ckpt(m);
    int L = c->num_layers;
    b->dense = mk_calloc((size_t)L, sizeof(uint64_t));
    b->expert = mk_calloc((size_t)L, sizeof(uint64_t));
    if (!b->dense || !b->expert)
        return mk_err(MK_E_NOMEM, "out of memory for %d layers' byte counts", L);
    bool head = false;
    for (size_t i = 0; i < mk_ckpt_count(ck); i++) {
        const mk_tensor_info *t = mk_ckpt_tensor(ck, i);
        int l = tensor_layer(t->name);
        if (l >= L || l == -2) /* multi-token-prediction layers, vision towers: not loaded */
            continue;
        if (l >= 0)
            (tensor_expert(t->name) ? b->expert : b->dense)[l] += t->nbytes;
        else if (strstr(t->name, "lm_head"))
            b->head += t->nbytes, head = true;
        else if (strstr(t->name, "embed"))
            b->embed += t->nbytes;
        else
            b->rest += t->nbytes;
    }
    if (!head) /* tied: the last stage reads the embedding too */
        b->head = b->embed;
    return MK_OK;
}

/* Parse --pipeline-layers for L layers and N stages (`per`: what a stage
 * is called) into bounds[N+1]. */
static mk_status parse_layers(const char *cmd, const char *spec, int L, int N, const char *per, int32_t *bounds) {
    const char *p = spec;
    int q = 0, next = 0;
    while (*p) {
        int a, b, used = 0;
        if (sscanf(p, "%d-%d%n", &a, &b, &used) != 2 || (p[used] != ',' && p[used] != '\0'))
            return mk_err(MK_E_ARG, "%s: --pipeline-layers '%s': expected ranges A-B,C-D,... (layers "
                          "A to B inclusive per %s)", cmd, spec, per);
        if (q >= N)
            return mk_err(MK_E_ARG, "%s: --pipeline-layers '%s': more ranges than the %d %ss", cmd, spec, N, per);
        if (a != next || b < a)
            return mk_err(MK_E_ARG, "%s: --pipeline-layers '%s': range %d (%d-%d) must start at layer %d and "
                          "not end before it", cmd, spec, q, a, b, next);
        bounds[q++] = a;
        next = b + 1;
        p += used + (p[used] == ',');
    }
    if (q != N || next != L)
        return mk_err(MK_E_ARG, "%s: --pipeline-layers '%s': %d ranges ending at layer %d; expected %d ranges "
                      "(one per %s) covering layers 0-%d", cmd, spec, q, next - 1, N, per, L - 1);
    bounds[N] = L;
    return MK_OK;
}

/* Cut L layers into N contiguous stages of about equal weight bytes per
 * rank: cut q at the prefix nearest sr[q]/sr[N] of the total (stage q has
 * ranks [sr[q], sr[q+1]); a pipeline: one each, q/N), each stage at least
 * one layer. */
static void balance_layers(const layer_bytes *b, int L, int N, const int32_t *sr, int32_t *bounds) {
    double tot = 0, pre = 0;
    for (int l = 0; l < L; l++)
        tot += (double)(b->dense[l] + b->expert[l]);
    int l = 0;
    bounds[0] = 0;
    for (int q = 1; q < N; q++) {
        double want = tot * sr[q] / sr[N];
        int lo = bounds[q - 1] + 1, hi = L - (N - q);
        while (l < lo)
            pre += (double)(b->dense[l] + b->expert[l]), l++;
        while (l < hi) {
            double w = (double)(b->dense[l] + b->expert[l]);
            if (pre + w > want && (pre + w) - want >= want - pre)
                break;
            pre += w;
            l++;
        }
        bounds[q] = l;
    }
    bounds[N] = L;
}

/* The stage bounds for m (once) and this rank's weight bytes. */
static mk_status stages_for(mk_ecli_dist *dd, const mk_model *m) {
    if (dd->bounds)
        return MK_OK;
    const mk_config *c = mk_model_config(m);
    int L = c->num_layers, N = mk_dist_size(dd->d), r = mk_dist_rank(dd->d), S = stage_count(dd, N);
    MK_TRY(shape_check(dd, N));
    if (L < S)
        return mk_err(MK_E_ARG, "%s: a pipeline of %d stages over %d layers: use at most %d %s", dd->cmd, S, L, L,
                      dd->both ? "--pipeline-stages" : "ranks");
    /* stage s is ranks [sr[s], sr[s+1]): N/S each, the first N%S one more (a pipeline: one each) */
    int32_t *sr = mk_malloc((size_t)(S + 1) * sizeof(int32_t));
    if (!sr)
        return mk_err(MK_E_NOMEM, "out of memory for %d stages", S);
    for (int s = 0; s <= S; s++)
        sr[s] = s * (N / S) + (s < N % S ? s : N % S);
    int me = 0;
    while (r >= sr[me + 1])
        me++;
    int gn = sr[me + 1] - sr[me];
    layer_bytes b = {0};
    int32_t *bounds = mk_malloc((size_t)(S + 1) * sizeof(int32_t));
    mk_status st = bounds ? count_layer_bytes(m, &b) : mk_err(MK_E_NOMEM, "out of memory for %d stages", S);
    if (st == MK_OK && dd->layers)
        st = parse_layers(dd->cmd, dd->layers, L, S, dd->both ? "stage" : "rank", bounds);
    else if (st == MK_OK)
        balance_layers(&b, L, S, sr, bounds);
    if (st == MK_OK) {
        dd->held_r = b.rest + (me == 0 ? b.embed : 0) + (me == S - 1 ? b.head : 0);
        dd->held_x = 0;
        /* both: this rank's share of the stage's experts, by count (rank_range's split); with
         * --mpi-balance the cuts come from rank 0 later, so every expert of the stage counts */
        int64_t E = c->num_experts, q = r - sr[me];
        int64_t mine = dd->both && !dd->balance && E > 0 ? (q + 1) * E / gn - q * E / gn : E;
        for (int l = bounds[me]; l < bounds[me + 1]; l++) {
            dd->held_r += b.dense[l];
            dd->held_x += mine < E ? b.expert[l] / (uint64_t)E * (uint64_t)mine : b.expert[l];
        }
        dd->bounds = g_bounds = bounds;
        dd->nbounds = S + 1;
        dd->sranks = g_sranks = sr;
        sr = NULL;
    } else {
        free(bounds);
    }
    free(sr);
    free(b.dense);
    free(b.expert);
    return st;
}

static mk_status stage_held(void *user, const mk_model *m, uint64_t *resident, uint64_t *experts) {
    mk_ecli_dist *dd = user;
    MK_TRY(stages_for(dd, m));
    *resident = dd->held_r;
    *experts = dd->held_x;
    return MK_OK;
}

static mk_status both_stage(mk_ecli_dist *dd, const mk_model *m, mk_engine_opts *eo);

/* Pipeline: this rank's stage hook and its startup line. */
static mk_status stage(mk_ecli_dist *dd, const mk_model *m, mk_engine_opts *eo) {
    MK_TRY(stages_for(dd, m));
    MK_TRY(mk_dist_pipe(dd->d, m, &dd->pipe));
    if (dd->both)
        return both_stage(dd, m, eo);
    int a, b;
    mk_dist_stage(dd->d, &a, &b);
    fprintf(stderr,
            "moekit %s: rank %d of %d: pipeline stage %d: layers [%d, %d) of %d: %.3f GiB of weights "
            "(%.3f GiB non-expert + %.3f GiB routed experts) of the model's %.3f GiB; KV cache for these "
            "layers only\n",
            dd->cmd, mk_dist_rank(dd->d), mk_dist_size(dd->d), mk_dist_rank(dd->d), a, b,
            mk_model_config(m)->num_layers, gib(dd->held_r + dd->held_x), gib(dd->held_r), gib(dd->held_x),
            gib(mk_model_resident_bytes(m) + mk_model_expert_bytes(m)));
    eo->layer_pipe = dd->pipe;
    return MK_OK;
}

/* Both: the stage's expert split among its ranks and this rank's startup
 * line (the weights it holds: the stage's non-expert layers, its share of
 * their routed experts). */
static mk_status both_stage(mk_ecli_dist *dd, const mk_model *m, mk_engine_opts *eo) {
    MK_TRY(mk_dist_part(dd->d, m, &dd->part));
    const mk_config *c = mk_model_config(m);
    int a, b, s, S, r0, rn;
    mk_dist_stage(dd->d, &a, &b);
    mk_dist_stage_ranks(dd->d, &s, &S, &r0, &rn);
    layer_bytes lb = {0};
    mk_status st = count_layer_bytes(m, &lb);
    int32_t lo = -1, hi = -1;
    int64_t held = 0, all = 0;
    uint64_t xb = 0;
    bool same = true;
    for (int l = a; st == MK_OK && l < b; l++) {
        if (!mk_config_layer_is_moe(c, l))
            continue;
        int32_t x, y;
        mk_dist_range(dd->d, l, &x, &y);
        same &= lo < 0 || (x == lo && y == hi);
        lo = x;
        hi = y;
        held += y - x;
        all += c->num_experts;
        xb += lb.expert[l] / (uint64_t)c->num_experts * (uint64_t)(y - x);
    }
    free(lb.dense);
    free(lb.expert);
    MK_TRY(st);
    char ranks_s[48], share_s[160];
    if (rn == 1)
        snprintf(ranks_s, sizeof ranks_s, "rank %d", r0);
    else
        snprintf(ranks_s, sizeof ranks_s, "ranks %d-%d", r0, r0 + rn - 1);
    if (!all)
        snprintf(share_s, sizeof share_s, "no routed experts (no MoE layer in the stage)");
    else if (same)
        snprintf(share_s, sizeof share_s, "routed experts [%d, %d) of %d in each of its MoE layers", lo, hi,
                 c->num_experts);
    else
        snprintf(share_s, sizeof share_s, "%lld of the stage's %lld routed experts (contiguous per layer, "
                 "balanced by routing frequency)", (long long)held, (long long)all);
    fprintf(stderr,
            "moekit %s: rank %d of %d: pipeline stage %d of %d (%s): layers [%d, %d) of %d, %s: "
            "%.3f GiB of weights (%.3f GiB non-expert + %.3f GiB routed experts) of the model's %.3f GiB; KV "
            "cache for these layers only\n",
            dd->cmd, mk_dist_rank(dd->d), mk_dist_size(dd->d), s, S, ranks_s, a, b, c->num_layers,
            share_s, gib(dd->held_r + xb), gib(dd->held_r), gib(xb),
            gib(mk_model_resident_bytes(m) + mk_model_expert_bytes(m)));
    eo->layer_pipe = dd->pipe;
    eo->moe_part = dd->part;
    return MK_OK;
}

bool mk_ecli_dist_worker(const mk_ecli_dist *dd) {
    return dd->d && mk_dist_rank(dd->d) > 0;
}


/* The model's fingerprint: the xxh3 of its config.json (every rank must
 * open the same model). */
static mk_status fingerprint(const mk_model *m, uint64_t *fp) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", mk_model_dir(m));
    char *buf;
    size_t len;
    MK_TRY(mk_ecli_read_file("MODEL", path, &buf, &len));
    *fp = XXH3_64bits(buf, len);
    free(buf);
    return MK_OK;
}

/* Part the experts and print this rank's share and memory. */
static mk_status share(mk_ecli_dist *dd, const mk_model *m, mk_engine_opts *eo) {
    MK_TRY(mk_dist_part(dd->d, m, &dd->part));
    const mk_config *c = mk_model_config(m);
    int32_t lo = -1, hi = -1;
    int64_t held = 0, all = 0;
    bool same = true;
    for (int l = 0; l < c->num_layers; l++) {
        if (!mk_config_layer_is_moe(c, l))
            continue;
        int32_t a, b;
        mk_dist_range(dd->d, l, &a, &b);
        same &= lo < 0 || (a == lo && b == hi);
        lo = a;
        hi = b;
        held += b - a;
        all += c->num_experts;
    }
    uint64_t ex = mk_model_expert_bytes(m), mine = all ? ex / (uint64_t)all * (uint64_t)held : 0;
    if (!same) {
        fprintf(stderr,
                "moekit %s: rank %d of %d: %lld of the %lld routed experts (contiguous per layer, "
                "balanced by routing frequency): %.3f GiB of the %.3f GiB of expert weights, plus %.3f GiB "
                "replicated (attention, norms, routers, shared experts, embeddings)\n",
                dd->cmd, mk_dist_rank(dd->d), mk_dist_size(dd->d), (long long)held, (long long)all, gib(mine),
                gib(ex), gib(mk_model_resident_bytes(m)));
        eo->moe_part = dd->part;
        return MK_OK;
    }
    fprintf(stderr,
            "moekit %s: rank %d of %d: routed experts [%d, %d) of %d in every MoE layer: %.3f GiB of "
            "the %.3f GiB of expert weights, plus %.3f GiB replicated (attention, norms, routers, shared "
            "experts, embeddings)\n",
            dd->cmd, mk_dist_rank(dd->d), mk_dist_size(dd->d), lo, hi, c->num_experts, gib(mine), gib(ex),
            gib(mk_model_resident_bytes(m)));
    eo->moe_part = dd->part;
    return MK_OK;
}

/* The ranks sharing layer l's experts: all W, or (both) its stage's. */
static int layer_ranks(const mk_ecli_dist *dd, int l, int W) {
    if (!dd->both)
        return W;
    for (int s = 0; s + 1 < dd->nbounds; s++)
        if (l < dd->bounds[s + 1])
            return dd->sranks[s + 1] - dd->sranks[s];
    return W;
}

/* --mpi-balance: per MoE layer with routing statistics in the profile, cut
 * its experts into size contiguous ranges of about equal summed frequency
 * (cut q at the prefix nearest q/size of the layer's total, never before
 * the previous cut); other layers by count. */
static mk_status balance(mk_ecli_dist *dd, const mk_model *m) {
    const mk_config *c = mk_model_config(m);
    int W = mk_dist_size(dd->d), L = c->num_layers, E = c->num_experts;
    mk_prof *p = NULL;
    mk_status st = mk_prof_load(dd->balance, &p);
    if (st == MK_OK && (st = mk_prof_check_model(p, m)) != MK_OK)
        mk_err_wrap(st, "--mpi-balance %s", dd->balance);
    /* a row of W+1 cuts per layer; its first N+1 split the layer among the N ranks sharing it (every
     * rank, or both: its stage's), the rest stay at E */
    int32_t *cuts = st == MK_OK ? mk_malloc((size_t)L * (size_t)(W + 1) * sizeof(int32_t)) : NULL;
    if (st == MK_OK && !cuts)
        st = mk_err(MK_E_NOMEM, "--mpi-balance: out of memory for %d x %d expert cuts", L, W + 1);
    for (int l = 0; st == MK_OK && l < L; l++)
        for (int q = 0; q <= W; q++)
            cuts[l * (W + 1) + q] = q <= layer_ranks(dd, l, W) ? (int32_t)((int64_t)q * E / layer_ranks(dd, l, W)) : E;
    int balanced = 0;
    for (int i = 0; st == MK_OK && i < mk_prof_route_layers(p); i++) {
        int l, pe;
        const double *f, *w;
        if (!mk_prof_route(p, i, &l, &pe, &f, &w) || l < 0 || l >= L || pe != E)
            continue;
        double tot = 0, pre = 0;
        for (int e = 0; e < E; e++)
            tot += f[e];
        if (!(tot > 0))
            continue;
        int N = layer_ranks(dd, l, W);
        int32_t *c_l = cuts + l * (W + 1);
        int e = 0;
        for (int q = 1; q < N; q++) {
            double want = tot * q / N;
            while (e < E && pre + f[e] <= want) /* the largest prefix not above the target ... */
                pre += f[e++];
            if (e < E && (pre + f[e]) - want < want - pre) /* ... or one more when that is nearer */
                pre += f[e++];
            c_l[q] = e;
        }
        balanced++;
    }
    if (st == MK_OK && !balanced)
        st = mk_err(MK_E_ARG,
                    "--mpi-balance %s: the profile has no routing statistics for this model's "
                    "%d experts per layer",
                    dd->balance, E);
    if (st == MK_OK)
        st = mk_dist_set_cuts(dd->d, m, cuts);
    free(cuts);
    mk_prof_free(p);
    return st;
}

mk_status mk_ecli_dist_lead(mk_ecli_dist *dd, const mk_model *m, mk_engine_opts *eo) {
    if (!dd->d)
        return MK_OK;
    if (eo->backend && !mk_backend_iface(eo->backend)->host_mem)
        return mk_err(MK_E_UNSUPPORTED,
                      "%s: MPI ranks run on the CPU backend for now (--backend cuda is not "
                      "wired to the expert exchange)",
                      dd->cmd);
    uint64_t fp;
    MK_TRY(fingerprint(m, &fp));
    MK_TRY(mk_dist_set_slots(dd->d, dd->slots > 0 ? dd->slots : 1)); /* before the hooks are made */
    if (dd->pipeline) {
        MK_TRY(stages_for(dd, m));
        MK_TRY(mk_dist_set_stages(dd->d, m, dd->nbounds - 1, dd->bounds, dd->both ? dd->sranks : NULL));
        if (dd->balance) /* both: the stages' experts by routing frequency (after the stages: per stage) */
            MK_TRY(balance(dd, m));
        MK_TRY(stage(dd, m, eo));
        return mk_dist_announce(dd->d, eo, fp);
    }
    if (dd->balance)
        MK_TRY(balance(dd, m));
    MK_TRY(share(dd, m, eo));
    return mk_dist_announce(dd->d, eo, fp);
}

void mk_ecli_dist_slot(const mk_ecli_dist *dd, int slot, mk_engine_opts *eo) {
    if (!dd->d)
        return;
    if (eo->moe_part)
        eo->moe_part = mk_dist_slot_part(dd->d, slot);
    if (eo->layer_pipe)
        eo->layer_pipe = mk_dist_slot_pipe(dd->d, slot);
}

int mk_ecli_dist_work(mk_ecli_dist *dd, const char *model, const mk_model_opts *mo, mk_ecli_mem *mm,
                      const mk_engine_opts *eo) {
    mk_model *m = NULL;
    mk_engine **es = NULL;
    int nes = 0;
    mk_pool *pool = NULL;
    mk_backend *be = NULL;
    mk_engine_opts o = {.threads = eo->threads};
    uint64_t fp = 0;
    bool finished = false;
    char msg[1536];
    mm->quiet = true;
    mk_status st = mk_ecli_mem_model_open(mm, model, mo, &m);
    if (st == MK_OK)
        st = fingerprint(m, &fp);
    if (st != MK_OK) { /* the lead may have opened its model: stop everyone, saying why */
        snprintf(msg, sizeof msg, "%s", mk_err_msg());
        mk_dist_abort(dd->d, mk_status_exit_code(st), msg);
    }
    st = mk_dist_await(dd->d, fp, &o, &finished);
    if (st == MK_OK && !finished) { /* the lead's engine size plans this rank's budget as the lead's */
        mm->plan_ctx = o.max_ctx > 0 ? o.max_ctx : mm->plan_ctx;
        mm->plan_chunk = o.prefill_chunk;
    }
    static const char *modes[] = {"expert", "pipeline", "both"};
    int theirs = mk_dist_both(dd->d) ? 2 : mk_dist_pipelined(dd->d), mine = dd->both ? 2 : dd->pipeline;
    if (st == MK_OK && !finished && theirs != mine)
        st = mk_err(MK_E_ARG, "rank 0 runs %s mode, this rank was started for %s mode: every rank needs the "
                    "same --mpi-mode", modes[theirs], modes[mine]);
    if (st == MK_OK && !finished && dd->pipeline) {
        int a, b, s, S, r0, rn;
        mk_dist_stage(dd->d, &a, &b);
        mk_dist_stage_ranks(dd->d, &s, &S, &r0, &rn);
        st = stages_for(dd, m);
        if (st == MK_OK && (dd->nbounds != S + 1 || dd->sranks[s] != r0 || dd->sranks[s + 1] != r0 + rn))
            st = mk_err(MK_E_ARG, "rank 0 made %d stages (this rank's: ranks %d-%d), this rank's flags give %d: "
                        "every rank needs the same --pipeline-stages and --pipeline-layers", S, r0, r0 + rn - 1,
                        dd->nbounds - 1);
        if (st == MK_OK && (dd->bounds[s] != a || dd->bounds[s + 1] != b))
            st = mk_err(MK_E_ARG, "rank 0 gave this rank layers [%d, %d), its own flags give [%d, %d): every "
                        "rank needs the same --pipeline-layers", a, b, dd->bounds[s], dd->bounds[s + 1]);
        if (st == MK_OK)
            st = stage(dd, m, &o);
    } else if (st == MK_OK && !finished) {
        st = share(dd, m, &o);
    }
    /* an engine per sequence rank 0 drives (serve's slots), each with that sequence's hooks */
    int ns = mk_dist_slots(dd->d);
    if (st == MK_OK && !finished && !(es = calloc((size_t)ns, sizeof *es)))
        st = mk_err(MK_E_NOMEM, "no memory for %d sequences' engines", ns);
    if (st == MK_OK && !finished)
        mm->engines = ns;
    /* several sequences: one backend (and thread pool) for all their engines, as on rank 0 (serve),
     * so that rank 0's batched steps can run here too (mk_engine_batchable: one backend) */
    if (st == MK_OK && !finished && ns > 1 && (st = mk_pool_create(o.threads, &pool)) == MK_OK &&
        (st = mk_backend_cpu_create(pool, &be)) == MK_OK)
        o.backend = be;
    for (int i = 0; st == MK_OK && !finished && i < ns; i++) {
        mk_engine_opts oi = o;
        mk_ecli_dist_slot(dd, i, &oi);
        st = mk_ecli_mem_engine(mm, m, &oi, &es[i]);
        if (st == MK_OK)
            nes++;
        else if (ns > 1)
            st = mk_err_wrap(st, "sequence %d of rank 0's %d (--parallel)", i + 1, ns);
    }
    if (st != MK_OK) {
        snprintf(msg, sizeof msg, "%s", mk_err_msg());
        mk_dist_abort(dd->d, mk_status_exit_code(st), msg);
    }
    if (!finished)
        st = mk_dist_work(dd->d, es, nes);
    for (int i = 0; i < nes; i++)
        mk_engine_free(es[i]);
    free(es);
    mk_backend_free(be);
    mk_pool_free(pool);
    mk_ecli_mem_free(mm);
    mk_model_free(m);
    return st == MK_OK ? 0 : mk_cli_fail(st);
}
