/* MLA's latent KV cache and absorbed attention against a direct computation.
 *
 * A two-layer DeepSeek-V3-shaped model is built in memory (model_impl.h):
 * random weights scaled so that the softmax is far from uniform, dense MLPs
 * whose down projections are zero so each layer's output is x + MLA(norm(x)).
 * The engine runs it in several schedules (one-shot prefill, chunked
 * prefill, chunked prefill followed by single-token decode steps, on one and
 * two threads) and every token's hidden states must match a straightforward
 * double-precision computation written here, independent of the engine: the
 * latent expanded through kv_b into per-head k_nope and v, roped k_pe
 * appended to k_nope, naive causal softmax attention per head. kv_b is f32,
 * then MLX affine 4-bit from the library's quantizer (the reference then
 * uses its dequantized rows). Also: the KV-cache bytes per token the engine
 * reports for MLA (kv_lora_rank + qk_rope_head_dim floats per layer) and
 * for a full-attention model; the backend's attention slot alone with the
 * row strides MLA uses, past 1024 positions, against double precision; a
 * long prefill, whose attention runs in sub-chunks of 128 tokens, bitwise
 * equal to chunks of 64; the absorbed-query and latent-output scratch held
 * for 128 tokens, not the whole chunk, in the bytes --memory-budget counts. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mk_test_util.h"
#include "model/model_impl.h"
#include "moekit/backend.h"
#include "moekit/engine.h"
#include "moekit/kernels.h"
#include "moekit/quant.h"

enum { H = 48, V = 40, L = 2, NH = 3, DN = 8, DR = 8, DVH = 12, KL = 64, QL = 24, ID = 16, N = 20 };
#define QK (DN + DR)
#define KVB_ROWS (NH * (DN + DVH))
#define TOL 1e-5 /* rel L2 of each token's hidden state, f32 engine vs double */

/* ---- the synthetic model ------------------------------------------------------ */

static uint64_t g_rng = 0x2545f4914f6cdd1dull;

static float rnd(void) { /* uniform in [-1, 1) */
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return (float)((g_rng * 0x2545f4914f6cdd1dull) >> 40) / (float)(1 << 23) - 1.0f;
}

typedef struct synth {
    mk_model m;
    mk_layer_w layers[L];
    void *bufs[64];
    int nbufs;
} synth;

static void *keep(synth *s, void *p) {
    assert_non_null(p);
    assert_true(s->nbufs < 64);
    s->bufs[s->nbufs++] = p;
    return p;
}

/* [rows, cols] f32 with entries of variance gain^2 / cols (unit-variance
 * outputs for unit-variance inputs, times gain). */
static mk_wt dense(synth *s, int64_t rows, int64_t cols, float gain) {
    float *d = keep(s, malloc((size_t)(rows * cols) * sizeof(float)));
    float a = gain * sqrtf(3.0f / (float)cols);
    for (int64_t i = 0; i < rows * cols; i++)
        d[i] = a * rnd();
    return (mk_wt){.fmt = MK_WF_F32, .rows = rows, .cols = cols, .data = d, .global_scale = 1.0f};
}

static float *gain(synth *s, int64_t n) {
    float *g = keep(s, malloc((size_t)n * sizeof(float)));
    for (int64_t i = 0; i < n; i++)
        g[i] = 1.0f + 0.2f * rnd();
    return g;
}

static void synth_build(synth *s) {
    g_rng = 0x2545f4914f6cdd1dull; /* the same weights whatever ran before */
    memset(s, 0, sizeof *s);
    mk_config *c = &s->m.cfg;
    c->arch = MK_ARCH_DEEPSEEK_V3;
    strcpy(c->model_type, "deepseek_v3");
    strcpy(c->dtype, "float32");
    c->vocab_size = V;
    c->hidden_size = H;
    c->num_layers = L;
    c->num_heads = c->num_kv_heads = NH;
    c->head_dim = QK;
    c->intermediate_size = ID;
    c->rms_norm_eps = 1e-6;
    c->max_position_embeddings = 4096;
    c->rope = (mk_rope){.theta = 10000.0, .factor = 1.0, .attention_factor = -1.0,
                        .partial_rotary_factor = 1.0};
    strcpy(c->rope.type, "default");
    c->q_lora_rank = QL;
    c->kv_lora_rank = KL;
    c->qk_nope_head_dim = DN;
    c->qk_rope_head_dim = DR;
    c->v_head_dim = DVH;
    c->first_k_dense_replace = L;
    c->rope_interleave = true;
    s->m.embed = dense(s, V, H, sqrtf((float)H)); /* unit entries */
    s->m.lm_head = dense(s, V, H, 1.0f);
    s->m.norm = gain(s, H);
    s->m.layers = s->layers;
    for (int l = 0; l < L; l++) {
        mk_layer_w *w = &s->layers[l];
        w->mixer = MK_MIXER_MLA;
        w->in_norm = gain(s, H);
        w->post_norm = gain(s, H);
        w->mla.q_a = dense(s, QL, H, 1.0f);
        w->mla.q_a_norm = gain(s, QL);
        w->mla.q_b = dense(s, NH * QK, QL, 2.0f); /* scores of a few units: a peaked softmax */
        w->mla.kv_a = dense(s, KL + DR, H, 1.0f);
        w->mla.kv_a_norm = gain(s, KL);
        w->mla.kv_b = dense(s, KVB_ROWS, KL, 1.5f);
        w->mla.o = dense(s, H, NH * DVH, 1.0f);
        w->mlp.gate = dense(s, ID, H, 1.0f);
        w->mlp.up = dense(s, ID, H, 1.0f);
        w->mlp.down = dense(s, H, ID, 0.0f); /* zero: the layer output is x + MLA */
    }
}

/* Replace every layer's kv_b with its MLX affine quantization. */
static void synth_quantize_kvb(synth *s, int bits, int group) {
    mk_qparams p;
    assert_int_equal(mk_quant_params(MK_QMODE_AFFINE, bits, group, 0.0f, &p), MK_OK);
    uint64_t wb, sb, bb;
    assert_int_equal(mk_quant_out_bytes(&p, MK_DT_F32, KVB_ROWS, KL, &wb, &sb, &bb), MK_OK);
    for (int l = 0; l < L; l++) {
        mk_wt *w = &s->layers[l].mla.kv_b;
        void *wq = keep(s, malloc(wb)), *sc = keep(s, malloc(sb)), *bi = keep(s, malloc(bb));
        assert_int_equal(mk_quant_rows(&p, MK_DT_F32, w->data, KVB_ROWS, KL, wq, sc, bi), MK_OK);
        *w = (mk_wt){.fmt = MK_WF_AFFINE, .rows = KVB_ROWS, .cols = KL, .data = wq, .scales = sc,
                     .biases = bi, .sdtype = MK_DT_F32, .bits = bits, .group = group,
                     .global_scale = 1.0f};
        assert_int_equal(mk_wt_check(w, "kv_b"), MK_OK);
    }
    s->m.quantized = true;
}

static void synth_free(synth *s) {
    for (int i = 0; i < s->nbufs; i++)
        free(s->bufs[i]);
}

/* ---- the direct computation (double) ------------------------------------------- */

/* W dequantized (the portable row decoder) into doubles. */
static double *wt_f64(const mk_wt *w) {
    double *d = malloc((size_t)(w->rows * w->cols) * sizeof(double));
    float *row = malloc((size_t)w->cols * sizeof(float));
    assert_true(d && row);
    for (int64_t r = 0; r < w->rows; r++) {
        mk_wt_dequant_row(w, r, row);
        for (int64_t c = 0; c < w->cols; c++)
            d[r * w->cols + c] = row[c];
    }
    free(row);
    return d;
}

/* y[rows] = W x; W [rows, cols] */
static void mv(const double *W, int64_t rows, int64_t cols, const double *x, double *y) {
    for (int64_t r = 0; r < rows; r++) {
        double acc = 0;
        for (int64_t c = 0; c < cols; c++)
            acc += W[r * cols + c] * x[c];
        y[r] = acc;
    }
}

static void rms(double *y, const double *x, int64_t n, const float *g, double eps) {
    double ss = 0;
    for (int64_t i = 0; i < n; i++)
        ss += x[i] * x[i];
    double inv = 1.0 / sqrt(ss / (double)n + eps);
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] * inv * g[i];
}

/* transformers' deepseek_v3 interleaved RoPE: de-interleave the pairs
 * (x0,x1),(x2,x3).. into evens | odds, then rotate_half. */
static void rope(double *v, int64_t pos, double theta) {
    double u[DR];
    for (int i = 0; i < DR / 2; i++) {
        u[i] = v[2 * i];
        u[i + DR / 2] = v[2 * i + 1];
    }
    for (int i = 0; i < DR / 2; i++) {
        double ang = (double)pos * pow(theta, -2.0 * i / DR), c = cos(ang), s = sin(ang);
        v[i] = u[i] * c - u[i + DR / 2] * s;
        v[i + DR / 2] = u[i + DR / 2] * c + u[i] * s;
    }
}

/* One MLA layer over all N tokens, in place on x [N, H]. */
static void ref_layer(const mk_config *c, const mk_layer_w *w, double (*x)[H]) {
    double *qa = wt_f64(&w->mla.q_a), *qb = wt_f64(&w->mla.q_b), *kva = wt_f64(&w->mla.kv_a);
    double *kvb = wt_f64(&w->mla.kv_b), *wo = wt_f64(&w->mla.o);
    static double q[N][NH][QK], kn[N][NH][DN], kpe[N][DR], v[N][NH][DVH], o[N][NH * DVH];
    double eps = c->rms_norm_eps, scale = 1.0 / sqrt((double)QK);
    for (int t = 0; t < N; t++) {
        double xb[H], ql[QL], kv[KL + DR], lat[KL];
        rms(xb, x[t], H, w->in_norm, eps);
        mv(qa, QL, H, xb, ql);
        rms(ql, ql, QL, w->mla.q_a_norm, eps);
        mv(qb, NH * QK, QL, ql, &q[t][0][0]);
        mv(kva, KL + DR, H, xb, kv);
        rms(lat, kv, KL, w->mla.kv_a_norm, eps);
        memcpy(kpe[t], kv + KL, sizeof kpe[t]);
        rope(kpe[t], t, c->rope.theta);
        for (int h = 0; h < NH; h++) { /* the latent expanded per head: [k_nope | v] */
            rope(q[t][h] + DN, t, c->rope.theta);
            mv(kvb + (int64_t)h * (DN + DVH) * KL, DN, KL, lat, kn[t][h]);
            mv(kvb + ((int64_t)h * (DN + DVH) + DN) * KL, DVH, KL, lat, v[t][h]);
        }
    }
    for (int t = 0; t < N; t++)
        for (int h = 0; h < NH; h++) { /* naive causal softmax attention */
            double sc[N], mx = -INFINITY, sum = 0;
            for (int s = 0; s <= t; s++) {
                double d = 0;
                for (int i = 0; i < DN; i++)
                    d += q[t][h][i] * kn[s][h][i];
                for (int i = 0; i < DR; i++)
                    d += q[t][h][DN + i] * kpe[s][i];
                sc[s] = d * scale;
                mx = fmax(mx, sc[s]);
            }
            for (int s = 0; s <= t; s++)
                sum += (sc[s] = exp(sc[s] - mx));
            for (int j = 0; j < DVH; j++) {
                double acc = 0;
                for (int s = 0; s <= t; s++)
                    acc += sc[s] / sum * v[s][h][j];
                o[t][h * DVH + j] = acc;
            }
        }
    for (int t = 0; t < N; t++) { /* output projection, residual (the MLP adds 0) */
        double y[H];
        mv(wo, H, NH * DVH, o[t], y);
        for (int i = 0; i < H; i++)
            x[t][i] += y[i];
    }
    free(qa);
    free(qb);
    free(kva);
    free(kvb);
    free(wo);
}

/* hidden [L+1, N, H] as the engine reports it: embeddings, each layer's
 * output, the last one after the final norm. */
static void reference(const mk_model *m, const int32_t *ids, double *hid) {
    static double x[N][H];
    const mk_config *c = &m->cfg;
    float row[H];
    for (int t = 0; t < N; t++) {
        mk_wt_dequant_row(&m->embed, ids[t], row);
        for (int i = 0; i < H; i++)
            x[t][i] = row[i];
    }
    memcpy(hid, x, sizeof x);
    for (int l = 0; l < L; l++) {
        ref_layer(c, &m->layers[l], x);
        double *dst = hid + (size_t)(l + 1) * N * H;
        for (int t = 0; t < N; t++) {
            if (l < L - 1)
                memcpy(dst + t * H, x[t], sizeof x[t]);
            else
                rms(dst + t * H, x[t], H, m->norm, c->rms_norm_eps);
        }
    }
}

/* ---- the engine in several schedules ------------------------------------------ */

typedef struct schedule {
    const char *name;
    int threads, chunk;
    int prefill; /* tokens of the first call; the rest one at a time */
} schedule;

static const schedule g_sched[] = {
    {"one-shot", 2, 512, N},
    {"chunked 5", 2, 5, N},
    {"prefill 12/5 + decode", 2, 5, 12},
    {"prefill 7/3 + decode, 1 thread", 1, 3, 7},
};

/* The worst per-token rel L2 of hidden entries 1..L against the reference. */
static double run_schedule(const mk_model *m, const schedule *sc, const int32_t *ids,
                           const double *ref) {
    mk_engine_opts o = {.threads = sc->threads, .max_ctx = N, .prefill_chunk = sc->chunk};
    mk_engine *e = NULL;
    if (mk_engine_create(m, &o, &e) != MK_OK)
        fail_msg("engine: %s", mk_err_msg());
    float *hid = malloc((size_t)(L + 1) * N * H * sizeof(float)), lg[V];
    assert_non_null(hid);
    double worst = 0;
    for (int off = 0; off < N;) {
        int n = off == 0 ? sc->prefill : 1;
        assert_int_equal(mk_engine_forward(e, ids + off, n, MK_LOGITS_LAST, lg, hid), MK_OK);
        for (int l = 1; l <= L; l++)
            for (int t = 0; t < n; t++) {
                const float *got = hid + ((size_t)l * n + t) * H;
                const double *want = ref + ((size_t)l * N + off + t) * H;
                double num = 0, den = 0;
                for (int i = 0; i < H; i++) {
                    num += (got[i] - want[i]) * (got[i] - want[i]);
                    den += want[i] * want[i];
                }
                worst = fmax(worst, sqrt(num / den));
            }
        off += n;
    }
    assert_int_equal(mk_engine_pos(e), N);
    free(hid);
    mk_engine_free(e);
    return worst;
}

static void check_model(synth *s, const char *what) {
    int32_t ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = (int32_t)((i * 7 + 3) % V);
    double *ref = malloc((size_t)(L + 1) * N * H * sizeof(double));
    assert_non_null(ref);
    reference(&s->m, ids, ref);
    for (size_t k = 0; k < sizeof g_sched / sizeof g_sched[0]; k++) {
        double err = run_schedule(&s->m, &g_sched[k], ids, ref);
        printf("  %-16s %-32s worst token rel L2 %.2e\n", what, g_sched[k].name, err);
        assert_true(err <= TOL);
    }
    free(ref);
}

/* The attention is not trivially uniform: otherwise a wrong score (a lost
 * q_pe, a stale cache row) could hide in an average. */
static void check_peaked(synth *s) {
    /* entropy of head 0's softmax at the last token, layer 0 */
    const mk_layer_w *w = &s->layers[0];
    const mk_config *c = &s->m.cfg;
    double *qa = wt_f64(&w->mla.q_a), *qb = wt_f64(&w->mla.q_b), *kva = wt_f64(&w->mla.kv_a);
    double *kvb = wt_f64(&w->mla.kv_b);
    double q[N][NH * QK], k[N][QK];
    float row[H];
    for (int t = 0; t < N; t++) {
        double x[H], xb[H], ql[QL], kv[KL + DR], lat[KL];
        mk_wt_dequant_row(&s->m.embed, (t * 7 + 3) % V, row);
        for (int i = 0; i < H; i++)
            x[i] = row[i];
        rms(xb, x, H, w->in_norm, c->rms_norm_eps);
        mv(qa, QL, H, xb, ql);
        rms(ql, ql, QL, w->mla.q_a_norm, c->rms_norm_eps);
        mv(qb, NH * QK, QL, ql, q[t]);
        mv(kva, KL + DR, H, xb, kv);
        rms(lat, kv, KL, w->mla.kv_a_norm, c->rms_norm_eps);
        mv(kvb, DN, KL, lat, k[t]);
        memcpy(k[t] + DN, kv + KL, DR * sizeof(double));
        rope(q[t] + DN, t, c->rope.theta);
        rope(k[t] + DN, t, c->rope.theta);
    }
    double sc[N], mx = -INFINITY, sum = 0, ent = 0;
    for (int s2 = 0; s2 < N; s2++) {
        double d = 0;
        for (int i = 0; i < QK; i++)
            d += q[N - 1][i] * k[s2][i];
        sc[s2] = d / sqrt((double)QK);
        mx = fmax(mx, sc[s2]);
    }
    for (int s2 = 0; s2 < N; s2++)
        sum += (sc[s2] = exp(sc[s2] - mx));
    for (int s2 = 0; s2 < N; s2++)
        ent -= sc[s2] / sum * log(sc[s2] / sum);
    printf("  attention entropy %.2f nats (uniform: %.2f)\n", ent, log((double)N));
    assert_true(ent < 0.8 * log((double)N));
    free(qa);
    free(qb);
    free(kva);
    free(kvb);
}

/* ---- the backend's attention slot on its own ------------------------------------ */

/* Causal attention of n queries at pos0.. against T = pos0 + n cache rows,
 * through the CPU backend on a pool of `threads`, against double precision.
 * Shared-head form (MLA: n_kv 1, values = the first dv floats of each key
 * row, padded row stride) and packed GQA. pos0 > 1024 also covers the
 * positions whose scores the CPU backend recomputes instead of keeping. */
static void check_attention(int threads, int n_heads, int n_kv, int dk, int dv, bool shared) {
    enum { NQ = 3, POS0 = 1100 };
    const int64_t T = POS0 + NQ, ks = shared ? dk + 5 : (int64_t)n_kv * dk;
    const int64_t vs = shared ? ks : (int64_t)n_kv * dv;
    float *q = malloc(sizeof(float) * (size_t)(NQ * n_heads * dk));
    float *k = malloc(sizeof(float) * (size_t)(T * ks)), *v = shared ? k : malloc(sizeof(float) * (size_t)(T * vs));
    float *out = malloc(sizeof(float) * (size_t)(NQ * n_heads * dv));
    double *sc = malloc(sizeof(double) * (size_t)T);
    assert_true(q && k && v && out && sc);
    for (int64_t i = 0; i < NQ * n_heads * dk; i++)
        q[i] = 3.0f * rnd();
    for (int64_t i = 0; i < T * ks; i++)
        k[i] = rnd();
    if (!shared)
        for (int64_t i = 0; i < T * vs; i++)
            v[i] = rnd();
    float scale = 1.0f / sqrtf((float)dk);
    mk_pool *pool = NULL;
    mk_backend *be = NULL;
    assert_int_equal(mk_pool_create(threads, &pool), MK_OK);
    assert_int_equal(mk_backend_cpu_create(pool, &be), MK_OK);
    mk_attn_args a = {.q = q, .k = k, .v = v, .out = out, .n = NQ, .pos0 = POS0,
                      .n_heads = n_heads, .n_kv = n_kv, .dk = dk, .dv = dv, .scale = scale,
                      .k_stride = shared ? ks : 0, .v_stride = shared ? vs : 0};
    mk_backend_iface(be)->attention(mk_backend_ctx(be), &a);
    double worst = 0;
    for (int t = 0; t < NQ; t++)
        for (int h = 0; h < n_heads; h++) {
            int j = h / (n_heads / n_kv);
            const float *qh = q + ((int64_t)t * n_heads + h) * dk;
            double mx = -INFINITY, sum = 0;
            for (int64_t s2 = 0; s2 <= POS0 + t; s2++) {
                double d = 0;
                for (int i = 0; i < dk; i++)
                    d += (double)qh[i] * k[s2 * ks + (int64_t)j * dk + i];
                sc[s2] = d * scale;
                mx = fmax(mx, sc[s2]);
            }
            for (int64_t s2 = 0; s2 <= POS0 + t; s2++)
                sum += (sc[s2] = exp(sc[s2] - mx));
            for (int c = 0; c < dv; c++) {
                double want = 0;
                for (int64_t s2 = 0; s2 <= POS0 + t; s2++)
                    want += sc[s2] / sum * v[s2 * vs + (int64_t)j * dv + c];
                double got = out[((int64_t)t * n_heads + h) * dv + c];
                worst = fmax(worst, fabs(got - want));
            }
        }
    printf("  attention %d threads, %d heads / %d kv, dk %d dv %d%s: max |err| %.2e\n", threads,
           n_heads, n_kv, dk, dv, shared ? " (shared latent rows)" : "", worst);
    assert_true(worst < 1e-5);
    mk_backend_free(be);
    mk_pool_free(pool);
    free(q);
    free(k);
    if (!shared)
        free(v);
    free(out);
    free(sc);
}

/* ---- tests ---------------------------------------------------------------------- */

static void test_attention_slot(void **st) {
    (void)st;
    check_attention(1, 5, 1, 72, 64, true);
    check_attention(3, 5, 1, 72, 64, true);
    check_attention(2, 6, 2, 16, 24, false);
    check_attention(1, 24, 2, 16, 16, false);
}

static void test_kv_bytes(void **st) {
    (void)st;
    synth s;
    synth_build(&s);
    mk_engine_opts o = {.threads = 1, .max_ctx = N};
    mk_engine *e = NULL;
    assert_int_equal(mk_engine_create(&s.m, &o, &e), MK_OK);
    /* one latent row per MLA layer: kv_lora_rank + qk_rope_head_dim floats */
    assert_int_equal(mk_engine_kv_bytes_per_token(e), (size_t)L * (KL + DR) * sizeof(float));
    assert_true(mk_engine_arena_bytes(e) >= (size_t)N * L * (KL + DR) * sizeof(float));
    mk_engine_free(e);
    synth_free(&s);
    /* a full-attention model: k and v of every kv head */
    mk_model *m = NULL;
    if (mk_model_open(mk_test_fixture("qwen3moe-a/bf16"), &m) != MK_OK)
        fail_msg("qwen3moe-a: %s", mk_err_msg());
    const mk_config *c = mk_model_config(m);
    assert_int_equal(mk_engine_create(m, &o, &e), MK_OK);
    assert_int_equal(mk_engine_kv_bytes_per_token(e),
                     (size_t)c->num_layers * 2 * c->num_kv_heads * c->head_dim * sizeof(float));
    mk_engine_free(e);
    mk_model_free(m);
}

/* A long prefill runs MLA's absorbed attention in sub-chunks of at most
 * 128 tokens (forward.c mla_sub): one call over a chunk of 512 must give
 * bitwise the hidden states and logits of chunks of 64 (each one
 * sub-chunk), for prompts whose last sub-chunk would be short (300: 128 +
 * 128 + 44) and whose last two share the rest (150: 64 + 86). */
static void check_sub_chunks(synth *s, const char *what) {
    enum { NL = 300, CTX = 512 };
    static const int lens[] = {NL, 150};
    int32_t ids[NL];
    for (int i = 0; i < NL; i++)
        ids[i] = (int32_t)((i * 13 + 5) % V);
    size_t nh = (size_t)(L + 1) * NL * H, nl = (size_t)NL * V;
    float *hid[2], *lg[2];
    for (int r = 0; r < 2; r++) {
        hid[r] = malloc(nh * sizeof(float));
        lg[r] = malloc(nl * sizeof(float));
        assert_true(hid[r] && lg[r]);
    }
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        int n = lens[k];
        for (int r = 0; r < 2; r++) {
            mk_engine_opts o = {.threads = 2, .max_ctx = CTX, .prefill_chunk = r ? 64 : CTX};
            mk_engine *e = NULL;
            assert_int_equal(mk_engine_create(&s->m, &o, &e), MK_OK);
            memset(hid[r], 0, nh * sizeof(float));
            assert_int_equal(mk_engine_forward(e, ids, n, MK_LOGITS_ALL, lg[r], hid[r]), MK_OK);
            mk_engine_free(e);
        }
        printf("  %-16s prefill of %d: chunk 512 (sub-chunks) vs chunks of 64: bitwise\n", what, n);
        assert_memory_equal(hid[0], hid[1], (size_t)(L + 1) * n * H * sizeof(float));
        assert_memory_equal(lg[0], lg[1], (size_t)n * V * sizeof(float));
    }
    for (int r = 0; r < 2; r++) {
        free(hid[r]);
        free(lg[r]);
    }
}

/* The arena --memory-budget counts (mk_engine_bytes) holds MLA's absorbed
 * queries and latent outputs, nH (2 kl + dr) floats a token, for at most
 * 128 tokens whatever the chunk: every other chunk buffer grows with the
 * chunk, so the 64 tokens from a chunk of 64 to 128 cost half the 128 from
 * 128 to 256 plus exactly 64 tokens of that scratch. (Exact: chunks of
 * multiples of 16 leave no alignment padding.) At DeepSeek-V3's attention
 * shape the scratch is 68 MiB, where a whole chunk of 512 held 272. */
static void scratch_growth(const mk_model *m, int64_t *mla_rows_64_128) {
    mk_engine_opts o = {.threads = 1, .max_ctx = 512};
    size_t b[3];
    for (int i = 0; i < 3; i++) {
        o.prefill_chunk = 64 << i;
        b[i] = mk_engine_bytes(m, &o);
        assert_true(b[i] > 0);
    }
    const mk_config *c = mk_model_config(m);
    size_t row = (size_t)c->num_heads * (2 * c->kv_lora_rank + c->qk_rope_head_dim) * sizeof(float);
    size_t extra = (b[1] - b[0]) - (b[2] - b[1]) / 2;
    assert_int_equal(extra % row, 0);
    *mla_rows_64_128 = (int64_t)(extra / row);
}

static void test_scratch_bytes(void **st) {
    (void)st;
    synth s;
    synth_build(&s);
    int64_t rows;
    scratch_growth(&s.m, &rows);
    assert_int_equal(rows, 64);
    /* DeepSeek-V3's attention shape (sizing reads the config alone) */
    mk_config *c = &s.m.cfg;
    c->num_heads = c->num_kv_heads = 128;
    c->kv_lora_rank = 512;
    c->qk_rope_head_dim = 64;
    c->qk_nope_head_dim = 128;
    c->v_head_dim = 128;
    c->q_lora_rank = 1536;
    c->head_dim = 192;
    scratch_growth(&s.m, &rows);
    assert_int_equal(rows, 64);
    printf("  MLA scratch at DeepSeek-V3's shape: %.0f MiB for any chunk of 128+ tokens\n",
           128.0 * c->num_heads * (2 * c->kv_lora_rank + c->qk_rope_head_dim) * sizeof(float) / 1048576.0);
    synth_free(&s);
}

/* The host memory of the arena (mk_engine_host_bytes, what the CLI's memory
 * plan counts): all of it on a host backend; on a device backend only the
 * host-kept part, which the context does not grow (the KV cache is the
 * device's). Before, a CUDA run's plan counted its device KV cache and
 * activations as host memory. */
static void test_host_bytes(void **st) {
    (void)st;
    synth s;
    synth_build(&s);
    mk_engine_opts a = {.threads = 1, .max_ctx = 512, .prefill_chunk = 256}, b = a;
    b.max_ctx = 4096;
    const size_t ta = mk_engine_bytes(&s.m, &a), tb = mk_engine_bytes(&s.m, &b);
    assert_true(ta > 0 && tb > ta);
    assert_int_equal(mk_engine_host_bytes(&s.m, &a, false), ta);
    assert_int_equal(mk_engine_host_bytes(&s.m, &b, false), tb);
    const size_t ha = mk_engine_host_bytes(&s.m, &a, true), hb = mk_engine_host_bytes(&s.m, &b, true);
    assert_true(ha > 0 && ha < ta);
    assert_int_equal(ha, hb); /* 3584 more positions of KV cache (tb - ta): none of it on the host */
    synth_free(&s);
}

static void test_absorbed_f32(void **st) {
    (void)st;
    synth s;
    synth_build(&s);
    check_peaked(&s);
    check_model(&s, "kv_b f32");
    check_sub_chunks(&s, "kv_b f32");
    synth_free(&s);
}

static void test_absorbed_affine4(void **st) {
    (void)st;
    synth s;
    synth_build(&s);
    synth_quantize_kvb(&s, 4, 32);
    check_model(&s, "kv_b affine 4/32");
    check_sub_chunks(&s, "kv_b affine 4/32");
    synth_free(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kv_bytes),
        cmocka_unit_test(test_scratch_bytes),
        cmocka_unit_test(test_host_bytes),
        cmocka_unit_test(test_attention_slot),
        cmocka_unit_test(test_absorbed_f32),
        cmocka_unit_test(test_absorbed_affine4),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
