/* bench_decode: end-to-end CPU engine speed on a checkpoint: prefill tok/s
 * for a prompt of P tokens and decode tok/s for D greedy tokens, with the
 * bound a decode step is measured against: the bytes of weights one token
 * touches (non-expert weights + top-k experts per MoE layer + lm_head, with
 * their scales and biases)
 * divided by the time, i.e. the effective weight bandwidth.
 *
 * usage: bench_decode MODEL [prompt_tokens=128] [decode_tokens=32] [threads=0] [backend=cpu]
 * backend: cpu, cuda (the CUDA backend: fused MoE slot, deferred non-finite
 * checks; the bound is the device's copy bandwidth, read + write, measured
 * in the same run) or cuda-unfused (the same backend with its optional
 * slots hidden: the general path, one launch per slot and expert, routing
 * downloaded and a wait per block, as before the fused slot) or
 * cuda-graph (cuda with decode steps recorded as CUDA graphs,
 * mk_backend_cuda_set_graphs).
 * A synthetic model of a real shape comes from `moekit synth`, e.g.
 *   moekit synth /tmp/s --arch qwen3_moe --preset 30b-a3b --layers 4 --experts 16 */
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

/* Bytes of a weight as a decode step reads them: the codes plus, for the
 * quantized formats, their per-group scales (and affine biases). */
static double wt_bytes(const mk_wt *w) {
    double b = (double)mk_wt_row_bytes(w) * (double)w->rows, sd = w->sdtype == MK_DT_F32 ? 4 : 2;
    if (w->fmt == MK_WF_AFFINE && w->group > 0)
        b += 2.0 * sd * (double)w->rows * (double)(w->cols / w->group);
    else if ((w->fmt == MK_WF_MXFP4 || w->fmt == MK_WF_MXFP8 || w->fmt == MK_WF_NVFP4) && w->group > 0)
        b += (double)w->rows * (double)(w->cols / w->group);
    else if ((w->fmt == MK_WF_FP8_E4M3 || w->fmt == MK_WF_FP8_E5M2) && w->scales && w->block_r > 0 &&
             w->block_c > 0)
        b += sd * (double)((w->rows + w->block_r - 1) / w->block_r) *
             (double)((w->cols + w->block_c - 1) / w->block_c);
    return b;
}

/* Weight bytes one decode token reads: every non-routed matrix, k experts
 * per MoE layer (assuming the average expert size), the lm_head row block. */
static double bytes_per_token(const mk_model *m) {
    const mk_config *c = &m->cfg;
    double b = wt_bytes(&m->lm_head);
    for (int l = 0; l < c->num_layers; l++) {
        const mk_layer_w *w = &m->layers[l];
        const mk_wt *ws[] = {&w->attn.q,      &w->attn.k,    &w->attn.v,    &w->attn.o,
                             &w->mla.q_a,     &w->mla.q_b,   &w->mla.q,     &w->mla.kv_a,
                             &w->mla.kv_b,    &w->mla.o,     &w->gdn.qkvz,  &w->gdn.ba,
                             &w->gdn.qkv,     &w->gdn.z,     &w->gdn.b,     &w->gdn.a,
                             &w->gdn.out,     &w->mlp.gate,  &w->mlp.up,    &w->mlp.down,
                             &w->moe.router,  &w->moe.shared.gate, &w->moe.shared.up,
                             &w->moe.shared.down};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++)
            if (ws[i]->data)
                b += wt_bytes(ws[i]);
        if (w->is_moe) {
            const mk_expert *x = &w->moe.experts[0];
            b += c->num_experts_per_tok * (wt_bytes(&x->gate) + wt_bytes(&x->up) + wt_bytes(&x->down));
        }
    }
    return b;
}

/* The physical bound: memory copy bandwidth measured in the same run, with
 * the same number of threads, over a buffer much larger than the caches
 * (GB/s counted as bytes read, which is what a decode step does). */
typedef struct cp_ctx {
    unsigned char *src, *dst;
    int64_t chunk;
} cp_ctx;

static void cp_task(void *ctx, int64_t b, int64_t e) {
    cp_ctx *c = ctx;
    for (int64_t i = b; i < e; i++)
        memcpy(c->dst + i * c->chunk, c->src + i * c->chunk, (size_t)c->chunk);
}

static double copy_bandwidth(int threads) {
    const int64_t chunk = 1 << 20, n = 512; /* 512 MiB */
    cp_ctx c = {malloc((size_t)(chunk * n)), malloc((size_t)(chunk * n)), chunk};
    mk_pool *p = NULL;
    if (!c.src || !c.dst || mk_pool_create(threads, &p) != MK_OK) {
        free(c.src);
        free(c.dst);
        return 0;
    }
    memset(c.src, 1, (size_t)(chunk * n));
    memset(c.dst, 2, (size_t)(chunk * n));
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        double t = now_s();
        mk_pool_for(p, n, 1, cp_task, &c);
        t = now_s() - t;
        if (t < best)
            best = t;
    }
    mk_pool_free(p);
    free(c.src);
    free(c.dst);
    return (double)(chunk * n) / best / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_decode MODEL [prompt_tokens] [decode_tokens] [threads] "
                        "[cpu|cuda|cuda-graph|cuda-unfused]\n");
        return 2;
    }
    int P = argc > 2 ? atoi(argv[2]) : 128, D = argc > 3 ? atoi(argv[3]) : 32;
    int threads = argc > 4 ? atoi(argv[4]) : 0;
    const char *bk = argc > 5 ? argv[5] : "cpu";
    if (P < 1 || D < 1) {
        fprintf(stderr, "bench_decode: token counts must be positive\n");
        return 2;
    }
    bool cuda = strncmp(bk, "cuda", 4) == 0, unfused = strcmp(bk, "cuda-unfused") == 0;
    bool graph = strcmp(bk, "cuda-graph") == 0;
    if (strcmp(bk, "cpu") != 0 && strcmp(bk, "cuda") != 0 && !unfused && !graph) {
        fprintf(stderr, "bench_decode: backend '%s': expected cpu, cuda, cuda-graph or cuda-unfused\n", bk);
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
        if (unfused) {
            hidden = *mk_backend_iface(be);
            hidden.moe = NULL;
            hidden.check_finite = NULL;
            hidden.nonfinite_take = NULL;
            hidden.step_begin = NULL;
            hidden.step_end = NULL;
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
    double t0 = now_s();
    mk_status st = mk_engine_forward(e, ids, P, MK_LOGITS_LAST, lg, NULL);
    double t1 = now_s();
    for (int i = 0; st == MK_OK && i < D; i++) {
        int32_t id = mk_argmax(lg, c->vocab_size);
        st = mk_engine_forward(e, &id, 1, MK_LOGITS_LAST, lg, NULL);
    }
    double t2 = now_s();
    if (st != MK_OK) {
        fprintf(stderr, "bench_decode: %s\n", mk_err_msg());
        return 1;
    }
    double bpt = bytes_per_token(m), dt = (t2 - t1) / D;
    printf("model      %s (%s, %d layers, arena %.1f MiB)\n", argv[1], mk_model_layout(m),
           c->num_layers, mk_engine_arena_bytes(e) / 1048576.0);
    printf("prefill    %d tokens  %.3f s  %.1f tok/s\n", P, t1 - t0, P / (t1 - t0));
    printf("decode     %d tokens  %.3f s  %.2f tok/s  %.1f ms/token\n", D, t2 - t1, 1.0 / dt,
           dt * 1e3);
    double bw = 0;
    if (cuda) {
        char dsc[160];
        int built, updated;
        mk_backend_cuda_graph_stats(be, &built, &updated);
        if (mk_cuda_describe(dsc, sizeof dsc) == MK_OK)
            printf("device     %s, backend %s, %.2f GiB of weights resident, step graphs %d built "
                   "%d updated\n", dsc, bk, mk_backend_cuda_weight_bytes(be) / 1073741824.0, built,
                   updated);
        if (mk_cuda_copy_bandwidth((size_t)2 << 30, &bw) != MK_OK)
            fprintf(stderr, "bench_decode: %s\n", mk_err_msg());
    } else {
        bw = copy_bandwidth(threads);
    }
    printf("bandwidth  %.1f MiB weights/token -> %.2f GB/s effective\n", bpt / 1048576.0,
           bpt / dt / 1e9);
    printf("bound      %s %.2f GB/s (same run) -> bound %.2f tok/s; decode at %.1f%% "
           "of the bound\n", cuda ? "device copy (read + write)" : "memcpy, same threads,",
           bw, bw * 1e9 / bpt, bw > 0 ? 100.0 * (1.0 / dt) / (bw * 1e9 / bpt) : 0.0);
    free(ids);
    free(lg);
    mk_engine_free(e);
    mk_model_free(m);
    mk_backend_free(wrap);
    mk_backend_free(be);
    return 0;
}
