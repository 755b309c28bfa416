/* The CUDA backend's Gated DeltaNet slots: the causal depthwise conv with
 * SiLU and its state, and the recurrent delta-rule step (mk_gdn_args).
 *
 * conv1d_silu: one thread per channel walks the n tokens (the outputs read
 * the old state; the state is advanced afterwards by the same thread, in
 * ascending order, as the CPU does), so channels never race.
 * gdn: one block per value head; q and k of the token are l2-normalised in
 * shared memory (block sums), then thread j owns column j of the head's
 * state S [dk, dv] and runs the CPU's column arithmetic in the CPU's order:
 * S *= exp(g); d = beta (v - S^T k); S += k d^T; o = S^T q, token after
 * token: decode (one token), and heads larger than 128.
 * Prefill (several tokens, dk and dv <= 128): k_gdn_chunk, the chunked
 * form of the CPU's gdn_chunk (backend_cpu.c, where the algebra is
 * written out), GDN_C tokens at a time with the head's state in registers;
 * results differ from the token loop by float32 rounding only
 * (test_backend_ops holds both to one bound against a double reference).
 * A batched decode step (the _each slots): k_conv_each / k_gdn_each run the
 * same bodies for every sequence in one launch, each on its own state. */
#include <math.h>

#include "cuda/cuda_backend.cuh"
#include "cuda/cuda_gdn_chunk.cuh"
#include "cuda/cuda_gdn_kernel.cuh"

void mkb_conv1d_silu(void *ctx, const float *u, int64_t u_stride, float *y, int64_t n, int64_t C, int K,
                     const float *w, float *state) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (n <= 0 || C <= 0)
        return;
    const float *wd = mkb_param(c, w, C * K);
    if (!wd)
        return;
    mkb_launch(c, "conv1d_silu", k_conv, dim3(mkb_blocks(C, 128)), dim3(128), 0, u, u_stride, y, n, C, K, wd, state);
}


/* a with its per-head parameters in device memory (false: the upload
 * failed, recorded for sync) */
static bool gdn_dev(mkb_ctx *c, const mk_gdn_args *a, mk_gdn_args *d) {
    *d = *a;
    d->A_log = mkb_param(c, a->A_log, a->nv);
    d->dt_bias = mkb_param(c, a->dt_bias, a->nv);
    return d->A_log && d->dt_bias;
}

/* k_gdn's (and k_gdn_each's) block: a thread per state column, shared qn,
 * kn and the block sum's scratch */
static unsigned gdn_threads(const mk_gdn_args *a) {
    return a->dv < 32 ? 32u : (unsigned)(a->dv + 31) / 32 * 32;
}
static size_t gdn_smem(const mk_gdn_args *a) {
    return sizeof(float) * (2 * (size_t)a->dk + 32);
}

void mkb_gdn(void *ctx, const mk_gdn_args *a) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (a->n <= 0 || a->nv <= 0)
        return;
    if (a->dv > 1024 || a->nk <= 0 || a->nv % a->nk) {
        mkb_fail(c, mk_err(MK_E_UNSUPPORTED, "CUDA gdn: dv %d (at most 1024), %d value heads on %d key heads", a->dv,
                           a->nv, a->nk));
        return;
    }
    mk_gdn_args d;
    if (!gdn_dev(c, a, &d))
        return;
    if (a->n > 1 && a->dk <= GDN_DMAX && a->dv <= GDN_DMAX && mk_cuda_gdn_chunked()) { /* prefill: chunked */
        const size_t smem = sizeof(float) * ((size_t)GDN_C * (2 * (size_t)(a->dk + 1) + 2 * (size_t)a->dv) +
                                             2 * GDN_C * GDN_C + 4 * GDN_C);
        k_gdn_chunk<<<(unsigned)a->nv, GDN_THREADS, smem, c->s>>>(d);
        mkb_launched(c, "gdn (chunked)");
        return;
    }
    mkb_launch(c, "gdn", k_gdn, dim3((unsigned)a->nv), dim3(gdn_threads(a)), gdn_smem(a), d);
}

/* A batched decode step's conv (backend.h's conv1d_silu_each): one launch,
 * each sequence's channels as k_conv's for that sequence alone. */
bool mkb_conv1d_silu_each(void *ctx, const float *u, int64_t u_stride, float *y, int n, int64_t C, int K,
                          const float *w, float *const *states) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (n < 1 || n > GDN_SEQS || C <= 0)
        return false;
    const float *wd = mkb_param(c, w, C * K);
    if (!wd)
        return true; /* the failure is recorded for sync */
    gdn_states st;
    for (int i = 0; i < n; i++)
        st.p[i] = states[i];
    mkb_launch(c, "conv1d_silu of a batched step", k_conv_each, dim3(mkb_blocks(C, 128), (unsigned)n), dim3(128), 0,
               u, u_stride, y, C, K, wd, st);
    return true;
}

/* A batched decode step's delta rule (backend.h's gdn_each): one launch,
 * each sequence's heads as k_gdn's for that sequence alone (one token: the
 * token loop, never the chunked form). */
bool mkb_gdn_each(void *ctx, const mk_gdn_args *a, int n) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (n < 1 || n > GDN_SEQS)
        return false;
    const mk_gdn_args *a0 = &a[0];
    if (a0->nv <= 0 || a0->dv > 1024 || a0->nk <= 0 || a0->nv % a0->nk)
        return false; /* gdn names what is wrong */
    gdn_states st;
    for (int i = 0; i < n; i++) {
        const mk_gdn_args *x = &a[i];
        if (x->n != 1 || x->nk != a0->nk || x->nv != a0->nv || x->dk != a0->dk || x->dv != a0->dv ||
            x->stride != a0->stride || x->A_log != a0->A_log || x->dt_bias != a0->dt_bias ||
            x->q != a0->q + i * a0->stride || x->k != a0->k + i * a0->stride || x->v != a0->v + i * a0->stride ||
            x->a != a0->a + (int64_t)i * a0->nv || x->b != a0->b + (int64_t)i * a0->nv ||
            x->out != a0->out + (int64_t)i * a0->nv * a0->dv)
            return false;
        st.p[i] = x->state;
    }
    mk_gdn_args d;
    if (!gdn_dev(c, a0, &d))
        return true; /* the failure is recorded for sync */
    mkb_launch(c, "gdn of a batched step", k_gdn_each, dim3((unsigned)d.nv, (unsigned)n), dim3(gdn_threads(a0)),
               gdn_smem(a0), d, st);
    return true;
}
