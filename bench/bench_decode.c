/* bench_decode: end-to-end CPU engine speed on a checkpoint: prefill tok/s
 * for a prompt of P tokens and decode tok/s for D greedy tokens, with the
 * bound a decode step is measured against: the bytes of weights one token
 * touches (non-expert weights + top-k experts per MoE layer + lm_head, each
 * with its scales and biases) divided by the time, i.e. the effective
 * weight bandwidth, against the physical bound measured in the same run:
 * on the CPU the streaming read bandwidth of the machine, on CUDA the
 * device's copy bandwidth.
 *
 * usage: bench_decode MODEL [prompt_tokens=128] [decode_tokens=32] [threads=0] [backend=cpu]
 * MK_KERNELS=ref|avx2|avxvnni|avx512|avx512vnni, MK_ACT_INT8=0|1 and
 * MK_PREFILL_INT8=0|1 as for the CLI (int8 activations are the library's
 * default on x86 paths and on CUDA).
 * backend: cpu, cuda (the CUDA backend: fused MoE slot, deferred non-finite
 * checks; the bound is the device's copy bandwidth, read + write, measured
 * in the same run) or cuda-unfused (the same backend with its optional
 * slots hidden: the general path, one launch per slot and expert, routing
 * downloaded and a wait per block, as before the fused slot) or
 * cuda-graph (= cuda since 2026-12-04: a decode step recorded once as a CUDA
 * graph and replayed, mk_backend_cuda_set_graphs) or cuda-nograph (cuda
 * with step recording off: every slot launched every step) or cuda-base
 * (cuda-nograph without the launch-cutting slots add_rmsnorm, qk_norm_rope,
 * matmul_n and argmax: the fused path as before them, logits copied to the
 * host and argmax'ed there).
 * Decoding is greedy through mk_engine_forward_argmax (cuda-base: forward +
 * mk_argmax).
 * On CUDA a first prefill of the same prompt runs untimed (weights uploaded,
 * fused layers stacked), followed by MK_BENCH_WARM decode steps (default 4;
 * 0: none, the timed decode then pays the one-off costs as before session
 * 31): the steps that run eagerly, record the step and instantiate its graph,
 * and the first launch of each decode kernel (the runtime loads kernels
 * lazily), printed as the `warm-up` line; then the engine is reset (the
 * recorded step is kept) and the prefill timed:
 * tok/s against the bf16 tensor-core rate measured in the same run (cuBLAS
 * GEMM, mk_cuda_bf16_gemm_rate), counting the matmul FLOPs of a prompt
 * token (2 x the non-expert matrices' and k experts' elements; attention's
 * scores, the lm_head of the last token and the split GEMM's extra passes
 * not counted). MK_CUDA_GEMM=split|bf16|generic|int8|auto picks how the CUDA
 * matmul multiplies batches (mk_backend_cuda_set_gemm; auto, the default:
 * int8 where the engine's prefill is, MK_PREFILL_INT8 / MK_ACT_INT8 decide,
 * else split). MK_CUDA_EXPERT_VRAM=BYTES
 * puts the experts of the MoE layers past that many bytes in mapped host
 * memory (mk_backend_cuda_set_expert_vram): decode is then also reported
 * against the bus bound (their bytes per token over the kernels' read rate
 * of mapped host memory, measured in the same run); MK_CUDA_EXPERT_CACHE=BYTES
 * adds that many bytes of device memory for a cache of the host layers' most-routed
 * experts (mk_backend_cuda_set_expert_cache). MK_BENCH_BATCH=B (CUDA
 * or CPU) adds B sequences decoded together (mk_engine_decode_batch, each
 * prefilled with its own P ids first): aggregate tok/s. MK_CUDA_MOE_PDL=0|1
 * launches the MoE step's kernels with programmatic dependent launch
 * (mk_cuda_set_moe_pdl), MK_CUDA_STEP_PDL=0|1 the rest of the decode step's
 * (mk_cuda_set_step_pdl), MK_CUDA_STEP_PREFETCH=0..3 the L2 prefetches under
 * it (mk_cuda_set_step_prefetch: 1 the GEMVs' rows, 2 attention's cache
 * rows); MK_CUDA_GDN_CHUNKED=0|1 the chunked Gated DeltaNet prefill
 * (mk_cuda_set_gdn_chunked); MK_CUDA_Q8P=0|1 the int8 GEMM's pipelined
 * kernel (mk_cuda_set_q8_pipelined); MK_CUDA_GEMV_STAGED=0|1 the one-token
 * GEMV's staged-weight kernel (mk_cuda_set_gemv_staged); MK_CUDA_MOE_STAGED=0|1
 * the one-token MoE step's (mk_cuda_set_moe_staged); MK_CUDA_ATTN_MERGE=0|1
 * the split attention merged by its last share (mk_cuda_set_attn_merge_fused);
 * MK_CUDA_ATTN_TILE=1..5 the tiled prefill attention's generation
 * (mk_cuda_set_attn_tile_gen); MK_CUDA_Q8P_STAGES=3|4 the pipelined int8
 * GEMM's stages for 4-bit weights (mk_cuda_set_q8p_stages);
 * MK_CUDA_ATTN_SHARES=1..32 the decode attention's blocks per head
 * (mk_cuda_set_attn_shares); MK_CUDA_ATTN_GQA=0|1 the decode attention
 * grouped by kv head (mk_cuda_set_attn_gqa); MK_CUDA_Q8_EARLY=0|1 the int8
 * decode products' rows primed early (mk_cuda_set_q8_early);
 * MK_CUDA_GATEUP_STAGED=0|1 the int8 gate/up's rows staged in shared
 * memory, in one wave (mk_cuda_set_gateup_staged); MK_CUDA_ROUTE_LATE=0|1
 * the MoE routing ranked by the gate/up and down blocks (mk_cuda_set_route_late);
 * MK_CUDA_QK_ROWS_WARP=0|1 a prefill's q/k norms a warp a row (mk_cuda_set_qk_rows_warp);
 * MK_CUDA_Q8_WGMMA=0|1 the int8 prefill GEMMs on wgmma (mk_cuda_set_q8_wgmma);
 * MK_CUDA_NORM_FOLD=0|1|2 the residual steps folded into the kernels that
 * read them (mk_cuda_set_norm_fold; 2: into the MoE router only, mk_cuda_set_norm_fold_mode);
 * MK_CUDA_QK_FOLD=0|1 the q/k norms and RoPE alone folded into the
 * attention (mk_cuda_set_qk_fold);
 * MK_CUDA_ACT_INT8=0|1 forces the decode products over affine weights on
 * int8 or float activations (mk_cuda_set_act_int8; by default they follow
 * MK_ACT_INT8, int8 unless it says 0).
 * MK_LOOKAHEAD=1 queues greedy steps on CUDA one ahead, fed by the
 * device's argmax (mk_cuda_set_lookahead: off by default until measured on
 * a device); 0 decodes one step at a time (mk_engine_opts.no_lookahead).
 * MK_BENCH_CHUNK=N prefills in chunks of N tokens (mk_engine_opts.
 * prefill_chunk; default as `moekit run`'s: 512, 2048 on CUDA).
 * A synthetic model of a real shape comes from `moekit synth`, e.g.
 *   moekit synth /tmp/s --arch qwen3_moe --preset 30b-a3b --layers 4 --experts 16 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "moekit/kernels.h"

#include "cuda/mk_cuda.h"
#include "moekit/backend_cuda.h"

#include "model/model_impl.h"
#include "moekit/engine.h"
#include "moekit/sample.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* One greedy decode step of token *id, the next token into *id: the
 * argmax on the device (mk_engine_forward_argmax) or, host_argmax, the
 * logits into lg and mk_argmax there (cuda-base, cuda-unfused) */
static mk_status greedy_step(mk_engine *e, bool host_argmax, int32_t *id, float *lg, int vocab) {
    if (!host_argmax)
        return mk_engine_forward_argmax(e, id, 1, id);
    mk_status st = mk_engine_forward(e, id, 1, MK_LOGITS_LAST, lg, NULL);
    if (st == MK_OK)
        *id = mk_argmax(lg, vocab);
    return st;
}

/* Bytes of a weight a product reads: packed data plus its scales and
 * biases (affine: two per group; FP8: the block grid; MX/NV: one byte per
 * 32/16), which are 11% of a 4-bit g64 model's bytes with bf16 scales. */
static double wt_bytes(const mk_wt *w) {
    double b = (double)mk_wt_row_bytes(w) * (double)w->rows;
    double ssz = w->sdtype == MK_DT_F32 ? 4 : 2;
    switch (w->fmt) {
    case MK_WF_AFFINE: b += 2.0 * ssz * (double)w->rows * (double)(w->cols / w->group); break;
    case MK_WF_FP8_E4M3:
    case MK_WF_FP8_E5M2:
        if (w->scales)
            b += ssz * (double)((w->rows + w->block_r - 1) / w->block_r) *
                 (double)((w->cols + w->block_c - 1) / w->block_c);
        break;
    case MK_WF_MXFP4:
    case MK_WF_MXFP8: b += (double)w->rows * (double)(w->cols / 32); break;
    case MK_WF_NVFP4: b += (double)w->rows * (double)(w->cols / 16); break;
    default: break;
    }
    return b;
}

/* The matrices of layer w every token runs through (NULL data: absent). */
static int dense_mats(const mk_layer_w *w, const mk_wt **out) {
    const mk_wt *ws[] = {&w->attn.q,      &w->attn.k,    &w->attn.v,    &w->attn.o,
                         &w->mla.q_a,     &w->mla.q_b,   &w->mla.q,     &w->mla.kv_a,
                         &w->mla.kv_b,    &w->mla.o,     &w->gdn.qkvz,  &w->gdn.ba,
                         &w->gdn.qkv,     &w->gdn.z,     &w->gdn.b,     &w->gdn.a,
                         &w->gdn.out,     &w->mlp.gate,  &w->mlp.up,    &w->mlp.down,
                         &w->moe.router,  &w->moe.shared.gate, &w->moe.shared.up,
                         &w->moe.shared.down};
    int n = 0;
    for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++)
        if (ws[i]->data)
            out[n++] = ws[i];
    return n;
}
#define MAX_DENSE 24

/* Weight bytes one decode token reads: every non-routed matrix, k experts
 * per MoE layer (assuming the average expert size), the lm_head row block. */
static double bytes_per_token(const mk_model *m) {
    const mk_config *c = &m->cfg;
    double b = wt_bytes(&m->lm_head);
    for (int l = 0; l < c->num_layers; l++) {
        const mk_layer_w *w = &m->layers[l];
        const mk_wt *ws[MAX_DENSE];
        for (int i = 0, n = dense_mats(w, ws); i < n; i++)
            b += wt_bytes(ws[i]);
        if (w->is_moe) {
            const mk_expert *x = &w->moe.experts[0];
            b += c->num_experts_per_tok * (wt_bytes(&x->gate) + wt_bytes(&x->up) + wt_bytes(&x->down));
        }
    }
    return b;
}

/* Matmul FLOPs of one prompt token: 2 x the elements of every non-routed
 * matrix and of k average experts per MoE layer (the lm_head runs for the
 * last token only). */
static double flops_per_token(const mk_model *m) {
    const mk_config *c = &m->cfg;
    double f = 0;
    for (int l = 0; l < c->num_layers; l++) {
        const mk_layer_w *w = &m->layers[l];
        const mk_wt *ws[MAX_DENSE];
        for (int i = 0, n = dense_mats(w, ws); i < n; i++)
            f += 2.0 * (double)ws[i]->rows * (double)ws[i]->cols;
        if (w->is_moe) {
            const mk_expert *x = &w->moe.experts[0];
            f += 2.0 * c->num_experts_per_tok *
                 ((double)x->gate.rows * x->gate.cols + (double)x->up.rows * x->up.cols +
                  (double)x->down.rows * x->down.cols);
        }
    }
    return f;
}

/* The physical bound: streaming READ bandwidth measured in the same run,
 * with the same number of threads, over a buffer much larger than the
 * caches. A decode step reads weights and writes almost nothing, so a read
 * is its bound; memcpy (read + write, and the write's read-for-ownership)
 * reaches about half of it and would flatter the engine. */
typedef struct rd_ctx {
    const uint64_t *src;
    int64_t words;      /* per chunk */
    uint64_t sums[512]; /* one per chunk: no two calls share a slot */
} rd_ctx;

static void rd_task(void *ctx, int64_t b, int64_t e) {
    rd_ctx *c = ctx;
    uint64_t s[8] = {0};
    for (int64_t i = b; i < e; i++) {
        const uint64_t *p = c->src + i * c->words;
        for (int64_t j = 0; j < c->words; j += 8) /* 8 independent sums: no dependency chain */
            for (int k = 0; k < 8; k++)
                s[k] += p[j + k];
    }
    c->sums[b] = s[0] ^ s[1] ^ s[2] ^ s[3] ^ s[4] ^ s[5] ^ s[6] ^ s[7]; /* keeps the loads */
}

static double read_bandwidth(int threads) {
    const int64_t chunk = 1 << 20, n = 512; /* 512 MiB in 1 MiB chunks */
    rd_ctx c = {.words = chunk / 8};
    uint64_t *buf = malloc((size_t)(chunk * n));
    mk_pool *p = NULL;
    if (!buf || mk_pool_create(threads, &p) != MK_OK) {
        free(buf);
        return 0;
    }
    memset(buf, 1, (size_t)(chunk * n)); /* fault every page in before timing */
    c.src = buf;
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        double t = now_s();
        mk_pool_for(p, n, 1, rd_task, &c);
        t = now_s() - t;
        if (t < best)
            best = t;
    }
    uint64_t sink = 0;
    for (int i = 0; i < 512; i++)
        sink ^= c.sums[i];
    mk_pool_free(p);
    free(buf);
    return sink == 42 ? 0 : (double)(chunk * n) / best / 1e9; /* sink: the sums are used */
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_decode MODEL [prompt_tokens] [decode_tokens] [threads] "
                        "[cpu|cuda|cuda-graph|cuda-base|cuda-unfused]\n");
        return 2;
    }
    int P = argc > 2 ? atoi(argv[2]) : 128, D = argc > 3 ? atoi(argv[3]) : 32;
    int threads = argc > 4 ? atoi(argv[4]) : 0;
    const char *bk = argc > 5 ? argv[5] : "cpu";
    if (P < 1 || D < 1) {
        fprintf(stderr, "bench_decode: token counts must be positive\n");
        return 2;
    }
    /* MK_ACT_INT8=0|1 as for the CLI: float or int8 (the default on x86 paths)
     * activations for affine 4/8-bit decode products (kernels.h
     * mk_kernels_set_int8) */
    const char *ai = getenv("MK_ACT_INT8"), *kp = getenv("MK_KERNELS");
    if (ai && *ai) {
        if (strcmp(ai, "0") && strcmp(ai, "1")) {
            fprintf(stderr, "bench_decode: MK_ACT_INT8: expected 0 or 1\n");
            return 2;
        }
        mk_kernels_set_int8(!strcmp(ai, "1"));
    }
    /* MK_PREFILL_INT8=0|1 as for the CLI: the prefill's own setting (by
     * default it follows MK_ACT_INT8; mk_kernels_set_prefill_int8) */
    const char *pi = getenv("MK_PREFILL_INT8");
    if (pi && *pi) {
        if (strcmp(pi, "0") && strcmp(pi, "1")) {
            fprintf(stderr, "bench_decode: MK_PREFILL_INT8: expected 0 or 1\n");
            return 2;
        }
        mk_kernels_set_prefill_int8(!strcmp(pi, "1"));
    }
    mk_isa isa;
    if (kp && *kp && (mk_isa_parse(kp, &isa) != MK_OK || mk_isa_set(isa) != MK_OK)) {
        fprintf(stderr, "bench_decode: MK_KERNELS: %s\n", mk_err_msg());
        return 2;
    }
    bool cuda = strncmp(bk, "cuda", 4) == 0, unfused = strcmp(bk, "cuda-unfused") == 0;
    bool nograph = strcmp(bk, "cuda-nograph") == 0, base = strcmp(bk, "cuda-base") == 0;
    bool graph = strcmp(bk, "cuda-graph") == 0 || strcmp(bk, "cuda") == 0; /* the default */
    bool host_argmax = base || unfused; /* as before the argmax slot */
    if (strcmp(bk, "cpu") != 0 && !graph && !unfused && !nograph && !base) {
        fprintf(stderr, "bench_decode: backend '%s': expected cpu, cuda, cuda-graph, cuda-nograph, "
                        "cuda-base or cuda-unfused\n", bk);
        return 2;
    }
    mk_backend *be = NULL, *wrap = NULL;
    mk_backend_i hidden; /* cuda-unfused: the CUDA table without its optional slots */
    if (cuda) {
        if (mk_backend_cuda_create(0, &be) != MK_OK) {
            fprintf(stderr, "bench_decode: %s\n", mk_err_msg());
            return 1;
        }
        mk_backend_cuda_set_graphs(be, graph);
        const char *gm = getenv("MK_CUDA_GEMM");
        if (gm && *gm) {
            mk_cuda_gemm mode = !strcmp(gm, "split") ? MK_CUDA_GEMM_SPLIT
                                : !strcmp(gm, "bf16") ? MK_CUDA_GEMM_BF16
                                : !strcmp(gm, "generic") ? MK_CUDA_GEMM_GENERIC
                                : !strcmp(gm, "int8")    ? MK_CUDA_GEMM_INT8
                                : !strcmp(gm, "auto")    ? MK_CUDA_GEMM_AUTO
                                                         : (mk_cuda_gemm)-1;
            if ((int)mode < 0) {
                fprintf(stderr, "bench_decode: MK_CUDA_GEMM: expected split, bf16, generic, int8 or auto\n");
                return 2;
            }
            mk_backend_cuda_set_gemm(be, mode, 0);
        }
        /* 0|1 switches of the CUDA kernels (the header lists them) */
        static const struct {
            const char *env;
            void (*set)(bool);
        } sw[] = {
            {"MK_CUDA_MOE_PDL", mk_cuda_set_moe_pdl},           /* the MoE step under PDL */
            {"MK_CUDA_STEP_PDL", mk_cuda_set_step_pdl},         /* the rest of the step's kernels under it */
            {"MK_CUDA_GDN_CHUNKED", mk_cuda_set_gdn_chunked},   /* the chunked Gated DeltaNet prefill */
            {"MK_CUDA_Q8P", mk_cuda_set_q8_pipelined},          /* the int8 GEMM's pipelined kernel */
            {"MK_CUDA_GEMV_STAGED", mk_cuda_set_gemv_staged},   /* the one-token GEMV's staged weights */
            {"MK_CUDA_MOE_STAGED", mk_cuda_set_moe_staged},     /* the one-token MoE step's staged weights */
            {"MK_CUDA_GATEUP_STAGED", mk_cuda_set_gateup_staged}, /* the int8 gate/up's rows staged */
            {"MK_CUDA_ROUTE_LATE", mk_cuda_set_route_late},     /* the routing ranked by its readers */
            {"MK_CUDA_QK_ROWS_WARP", mk_cuda_set_qk_rows_warp}, /* qk_norm_rope a warp a row */
            {"MK_CUDA_Q8_WGMMA", mk_cuda_set_q8_wgmma},         /* the int8 GEMMs on wgmma */
            {"MK_CUDA_ATTN_MERGE", mk_cuda_set_attn_merge_fused}, /* attention merged by its last share */
            {"MK_CUDA_ATTN_GQA", mk_cuda_set_attn_gqa},         /* decode attention grouped by kv head */
            {"MK_CUDA_Q8_EARLY", mk_cuda_set_q8_early},         /* int8 decode rows primed early */
            {"MK_CUDA_QK_FOLD", mk_cuda_set_qk_fold},           /* the q/k norms alone, into the attention */
            {"MK_CUDA_ACT_INT8", mk_cuda_set_act_int8},         /* decode products on int8 x (the CPU's rule) */
        };
        for (size_t i = 0; i < sizeof sw / sizeof sw[0]; i++) {
            const char *v = getenv(sw[i].env);
            if (v && *v)
                sw[i].set(strcmp(v, "0") != 0);
        }
        /* MK_CUDA_NORM_FOLD=0|1|2: the residual steps folded into their readers (the mode's value:
         * 1 MK_CUDA_NORM_FOLD_ALL, 2 MK_CUDA_NORM_FOLD_ROUTER) */
        const char *nf = getenv("MK_CUDA_NORM_FOLD");
        if (nf && *nf)
            mk_cuda_set_norm_fold_mode(atoi(nf));
        /* MK_CUDA_STEP_PREFETCH=0..3: under PDL, the L2 prefetches before the wait (bits) */
        const char *gpf = getenv("MK_CUDA_STEP_PREFETCH");
        if (gpf && *gpf)
            mk_cuda_set_step_prefetch((unsigned)strtoul(gpf, NULL, 10));
        /* MK_CUDA_ATTN_TILE=1..5: the tiled prefill attention's generation */
        const char *atg = getenv("MK_CUDA_ATTN_TILE");
        if (atg && *atg && mk_cuda_set_attn_tile_gen(atoi(atg)) != MK_OK) {
            fprintf(stderr, "bench_decode: %s\n", mk_err_msg());
            return 2;
        }
        /* MK_CUDA_Q8P_STAGES=3|4: the pipelined int8 GEMM's stages for 4-bit weights */
        const char *qst = getenv("MK_CUDA_Q8P_STAGES");
        if (qst && *qst) {
            if (strcmp(qst, "3") && strcmp(qst, "4")) {
                fprintf(stderr, "bench_decode: MK_CUDA_Q8P_STAGES: expected 3 or 4\n");
                return 2;
            }
            mk_cuda_set_q8p_stages(atoi(qst));
        }
        /* MK_CUDA_ATTN_SHARES=1..32: the decode attention's blocks per head */
        const char *ash = getenv("MK_CUDA_ATTN_SHARES");
        if (ash && *ash && mk_cuda_set_attn_shares(atoi(ash)) != MK_OK) {
            fprintf(stderr, "bench_decode: %s\n", mk_err_msg());
            return 2;
        }
        /* MK_CUDA_EXPERT_VRAM=BYTES: experts past it in mapped host memory
         * (mk_backend_cuda_set_expert_vram; a plain byte count) */
        const char *ev = getenv("MK_CUDA_EXPERT_VRAM");
        if (ev && *ev)
            mk_backend_cuda_set_expert_vram(be, (size_t)strtoull(ev, NULL, 10));
        /* MK_CUDA_EXPERT_CACHE=BYTES: beside that, a VRAM cache of the host
         * layers' most-routed experts (mk_backend_cuda_set_expert_cache) */
        const char *ec = getenv("MK_CUDA_EXPERT_CACHE");
        if (ec && *ec)
            mk_backend_cuda_set_expert_cache(be, (size_t)strtoull(ec, NULL, 10));
        if (unfused || base) {
            hidden = *mk_backend_iface(be);
            if (unfused) {
                hidden.moe = NULL;
                hidden.check_finite = NULL;
                hidden.nonfinite_take = NULL;
                hidden.step_begin = NULL;
                hidden.step_end = NULL;
                hidden.step_last = NULL;
                hidden.step_replay = NULL;
            }
            /* the launch-cutting slots of 2026-12-04 (both: the path as before them) */
            hidden.add_rmsnorm = NULL;
            hidden.qk_norm_rope = NULL;
            hidden.matmul_n = NULL;
            hidden.argmax = NULL;
            hidden.free = NULL; /* the context stays be's */
            if (mk_backend_create(&hidden, mk_backend_ctx(be), &wrap) != MK_OK) {
                fprintf(stderr, "bench_decode: %s\n", mk_err_msg());
                return 1;
            }
        }
    }
    mk_model *m = NULL;
    if (mk_model_open(argv[1], &m) != MK_OK) {
        fprintf(stderr, "bench_decode: %s\n", mk_err_msg());
        return 2;
    }
    const mk_config *c = mk_model_config(m);
    mk_engine_opts o = {.threads = threads, .max_ctx = P + D, .backend = wrap ? wrap : be};
    const char *pc = getenv("MK_BENCH_CHUNK"); /* tokens per prefill chunk (default: run's) */
    if (pc && *pc)
        o.prefill_chunk = atoi(pc);
    else if (cuda)
        o.prefill_chunk = MK_CUDA_PREFILL_CHUNK;
    /* 0: one step at a time (mk_engine_opts.no_lookahead); 1: the CUDA lookahead switched on
     * (mk_cuda_set_lookahead, off by default until measured) */
    const char *la = getenv("MK_LOOKAHEAD");
    o.no_lookahead = la && !strcmp(la, "0");
    if (la && !strcmp(la, "1"))
        mk_cuda_set_lookahead(true);
    mk_engine *e = NULL;
    if (mk_engine_create(m, &o, &e) != MK_OK) {
        fprintf(stderr, "bench_decode: %s\n", mk_err_msg());
        mk_model_free(m);
        return 1;
    }
    int32_t *ids = malloc((size_t)P * sizeof *ids);
    float *lg = malloc((size_t)c->vocab_size * sizeof(float));
    if (!ids || !lg)
        return 1;
    for (int i = 0; i < P; i++)
        ids[i] = (int32_t)((i * 7919 + 13) % c->vocab_size);
    /* greedy: mk_engine_forward_argmax (the argmax on the device where the
     * backend has the slot); cuda-base and cuda-unfused: the logits to the host and
     * mk_argmax there, as before that slot */
    int32_t id = 0;
    mk_status st = MK_OK;
    /* decode steps in the warm-up: the one-off costs of the first decode steps (an eager step,
     * the recording and its graph's instantiation, lazily loaded kernels: ~28 ms at full depth on
     * an H100, which over 128 timed tokens read as ~220 us "between steps") kept out of the timed
     * decode, and reported on their own */
    const char *wv = getenv("MK_BENCH_WARM");
    const int W = wv && *wv ? atoi(wv) : 4;
    double warm_s = 0.0;
    if (cuda) { /* untimed: uploads and the fused layers' stacks happen here */
        st = mk_engine_forward_argmax(e, ids, P, &id);
        double tw = now_s();
        for (int i = 0; st == MK_OK && i < W; i++)
            st = greedy_step(e, host_argmax, &id, lg, c->vocab_size);
        warm_s = now_s() - tw;
        mk_engine_reset(e);
        if (st != MK_OK) {
            fprintf(stderr, "bench_decode: warm-up prefill: %s\n", mk_err_msg());
            return 1;
        }
    }
    double t0 = now_s();
    st = host_argmax ? mk_engine_forward(e, ids, P, MK_LOGITS_LAST, lg, NULL)
                        : mk_engine_forward_argmax(e, ids, P, &id);
    if (cuda)
        mk_backend_cuda_time_steps(be, true); /* the replayed steps' GPU spans (two events a step) */
    double t1 = now_s();
    if (st == MK_OK && host_argmax)
        id = mk_argmax(lg, c->vocab_size); /* the prompt's next token (greedy_step picks the later ones) */
    for (int i = 0; st == MK_OK && i < D; i++)
        st = greedy_step(e, host_argmax, &id, lg, c->vocab_size);
    double t2 = now_s();
    if (st != MK_OK) {
        fprintf(stderr, "bench_decode: %s\n", mk_err_msg());
        return 1;
    }
    double bpt = bytes_per_token(m), dt = (t2 - t1) / D;
    printf("model      %s (%s, %d layers, arena %.1f MiB)\n", argv[1], mk_model_layout(m),
           c->num_layers, mk_engine_arena_bytes(e) / 1048576.0);
    printf("kernels    %s, %s activations for affine 4/8-bit decode\n", mk_isa_name(mk_isa_active()),
           mk_kernels_int8() ? "int8" : "float");
    printf("prefill    %d tokens  %.3f s  %.1f tok/s, chunks of %lld%s\n", P, t1 - t0, P / (t1 - t0),
           (long long)mk_engine_prefill_chunk(e), cuda ? " (after an untimed warm-up prefill)" : "");
    if (cuda && W > 0)
        printf("warm-up    %d decode steps after the warm-up prefill %.1f ms (untimed: the eager step, the "
               "step's recording, lazily loaded kernels)\n", W, warm_s * 1e3);
    printf("decode     %d tokens  %.3f s  %.2f tok/s  %.1f ms/token\n", D, t2 - t1, 1.0 / dt,
           dt * 1e3);
    if (cuda) {
        double gms;
        int gn;
        mk_backend_cuda_step_time(be, &gms, &gn);
        if (gn > 0) /* the rest of a step's wall time is the host's round trip between steps */
            printf("step       GPU span %.1f us a replayed step (%d timed), wall %.1f us: %.1f us (%.1f%%) "
                   "between steps\n", gms * 1e3 / gn, gn, dt * 1e6, dt * 1e6 - gms * 1e3 / gn,
                   100.0 * (1.0 - gms * 1e-3 / gn / dt));
    }
    double bw = 0;
    if (cuda) {
        char dsc[160];
        int built, updated, replayed;
        mk_backend_cuda_graph_stats(be, &built, &updated, &replayed);
        if (mk_cuda_describe(dsc, sizeof dsc) == MK_OK)
            printf("device     %s, backend %s, %.2f GiB of weights resident, step graphs %d built "
                   "%d updated %d replayed (%d queued ahead); decode on %s activations; attention grouped "
                   "by kv head: %llu launches\n", dsc, bk, mk_backend_cuda_weight_bytes(be) / 1073741824.0, built,
                   updated, replayed, mk_backend_cuda_chained(be), mk_cuda_act_int8() ? "int8" : "float",
                   mk_cuda_attn_gqa_launches());
        if (mk_cuda_copy_bandwidth((size_t)2 << 30, &bw) != MK_OK)
            fprintf(stderr, "bench_decode: %s\n", mk_err_msg());
        size_t evr, ehost;
        int hl;
        mk_backend_cuda_expert_stats(be, &evr, &ehost, &hl);
        if (ehost) {
            /* the bus roofline: bytes of host experts one token reads (k
             * average experts of each host layer) over the kernels' read
             * rate of mapped host memory, measured here */
            double hbw = 0, hb = 0;
            if (mk_cuda_host_read_bandwidth((size_t)1 << 30, &hbw) != MK_OK)
                fprintf(stderr, "bench_decode: %s\n", mk_err_msg());
            for (int l = 0; l < c->num_layers; l++)
                if (m->layers[l].is_moe) {
                    const mk_expert *x = &m->layers[l].moe.experts[0];
                    hb = c->num_experts_per_tok * (wt_bytes(&x->gate) + wt_bytes(&x->up) + wt_bytes(&x->down));
                    break;
                }
            hb *= hl;
            printf("experts    %.2f GiB in device memory, %.2f GiB in mapped host memory (%d MoE layers); "
                   "host reads %.1f MiB/token; mapped host read %.1f GB/s (same run) -> bus bound %.1f tok/s; "
                   "decode at %.1f%% of it\n", evr / 1073741824.0, ehost / 1073741824.0, hl, hb / 1048576.0,
                   hbw, hb > 0 ? hbw * 1e9 / hb : 0.0, hb > 0 && hbw > 0 ? 100.0 * (1.0 / dt) / (hbw * 1e9 / hb) : 0.0);
            int xs;
            uint64_t xcp;
            double xh;
            mk_backend_cuda_expert_cache_stats(be, &xs, &xcp, &xh);
            if (xs)
                printf("xcache     %d slots of host layers' experts in device memory, %llu copies, %.1f%% of "
                       "the host layers' routed experts read from it (the bus bound above counts none)\n",
                       xs, (unsigned long long)xcp, 100.0 * xh);
        }
        const char *gm = getenv("MK_CUDA_GEMM");
        printf("gemm       %s; mode %s\n", mk_backend_cuda_gemm_status(),
               gm && *gm && strcmp(gm, "auto")  ? gm
               : mk_cuda_prefill_int8()         ? "auto (default): int8, as the engine's prefill"
                                                : "auto (default): split, as the engine's float prefill");
        double tf = 0;
        if (mk_cuda_bf16_gemm_rate(8192, 8192, 8192, &tf) != MK_OK)
            fprintf(stderr, "bench_decode: %s\n", mk_err_msg());
        double fpt = flops_per_token(m), pf = fpt * P / (t1 - t0) / 1e12;
        printf("prefill    %.2f GFLOP/token (matmuls) -> %.1f TFLOP/s; bf16 tensor-core GEMM %.1f TFLOP/s "
               "(cuBLAS 8192^3, same run) -> prefill at %.1f%% of it\n", fpt / 1e9, pf, tf,
               tf > 0 ? 100.0 * pf / tf : 0.0);
    } else {
        bw = read_bandwidth(threads);
    }
    printf("bandwidth  %.1f MiB weights/token -> %.2f GB/s effective\n", bpt / 1048576.0,
           bpt / dt / 1e9);
    printf("bound      %s %.2f GB/s (same run) -> bound %.2f tok/s; decode at %.1f%% "
           "of the bound\n", cuda ? "device copy (read + write)" : "streaming read, same threads,",
           bw, bw * 1e9 / bpt, bw > 0 ? 100.0 * (1.0 / dt) / (bw * 1e9 / bpt) : 0.0);
    const char *bb = getenv("MK_BENCH_BATCH");
    int B = bb && *bb ? atoi(bb) : 0;
    if (B > 0 && st == MK_OK) {
        mk_engine **es = calloc((size_t)B, sizeof *es);
        int32_t *bid = malloc((size_t)B * sizeof *bid);
        float *blg = malloc((size_t)B * (size_t)c->vocab_size * sizeof(float));
        mk_engine_opts ob = o;
        ob.prefill_chunk = P > 2 * B ? P : 2 * B; /* the batch runs on es[0]'s scratch: 2B <= its chunk */
        ob.max_ctx = P + D + 1; /* the untimed step too */
        mk_backend *cpu_be = NULL; /* sequences batched together share one backend */
        mk_pool *pool = NULL;
        if (!ob.backend && (mk_pool_create(threads, &pool) != MK_OK || mk_backend_cpu_create(pool, &cpu_be) != MK_OK))
            st = MK_E_NOMEM;
        if (!ob.backend)
            ob.backend = cpu_be;
        for (int i = 0; i < B && st == MK_OK; i++) {
            st = mk_engine_create(m, &ob, &es[i]);
            for (int j = 0; j < P; j++)
                ids[j] = (int32_t)(((j + 1) * 7919 + 104729 * (i + 1)) % c->vocab_size);
            if (st == MK_OK)
                st = mk_engine_forward_argmax(es[i], ids, P, &bid[i]);
        }
        if (st == MK_OK && !mk_engine_batchable(es, B)) {
            fprintf(stderr, "bench_decode: %d sequences cannot share a step (mk_engine_batchable)\n", B);
            st = MK_E_ARG;
        }
        /* one untimed step, then D timed ones; greedy on the host from the logits */
        for (int s2 = -1; s2 < D && st == MK_OK; s2++) {
            if (s2 == 0)
                t1 = now_s();
            st = mk_engine_decode_batch(es, B, bid, blg);
            for (int i = 0; i < B && st == MK_OK; i++)
                bid[i] = mk_argmax(blg + (size_t)i * c->vocab_size, c->vocab_size);
        }
        t2 = now_s();
        if (st != MK_OK)
            fprintf(stderr, "bench_decode: batch %d: %s\n", B, mk_err_msg());
        else
            printf("batch      %d sequences x %d steps  %.3f s  %.1f tok/s aggregate  %.1f ms/step (logits of "
                   "every sequence to the host each step)\n", B, D, t2 - t1, (double)B * D / (t2 - t1),
                   (t2 - t1) / D * 1e3);
        for (int i = 0; i < B; i++)
            mk_engine_free(es[i]);
        mk_backend_free(cpu_be);
        mk_pool_free(pool);
        free(es);
        free(bid);
        free(blg);
    }
    free(ids);
    free(lg);
    mk_engine_free(e);
    mk_model_free(m);
    mk_backend_free(wrap);
    mk_backend_free(be);
    return 0;
}
