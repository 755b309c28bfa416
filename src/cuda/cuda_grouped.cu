/* The CUDA backend's grouped MoE slot (mk_backend_i.moe_grouped): the
 * routed experts of a prefill chunk as grouped tensor-core GEMMs over every
 * routed row at once, the routing never leaving the device.
 *
 *   k_grp_plan  one block: counts the chunk's (token, slot) pairs per
 *               expert, scans them into each expert's run of sorted rows,
 *               places every pair in its expert's run (tok_of, pair_of),
 *               cuts the runs into row tiles of bm (GRP_BM; Q8W_BM for the
 *               wgmma kernel) rows (tiles, ntiles) and
 *               orders each token's k slots by ascending expert (perm, the
 *               order `combine` sums in, as the CPU engine's general path).
 *   k_grp_mm    gate and up (grid.z 2), then down: block (column tile,
 *               row tile) multiplies one expert's rows of the tile by that
 *               expert's weight rows; blocks past ntiles return at once.
 *   swiglu, combine: the backend's own slots.
 *
 * Arithmetic. The weights' codes are exact in bf16 (affine q in 0..255;
 * bf16 checkpoints are bf16), x is split into three bf16 parts whose sum
 * is x exactly (as the split GEMM, cuda_gemm.cu), the tensor cores
 * (mma.sync m16n8k16, float32 accumulation) form sum q x_part per group
 * window and the group's scale and bias are folded in float32:
 *   y += s * sum(q x) + b * sum(x)
 * as the GEMV kernels do (cuda_impl.cuh). So the products are exact and the
 * sums float32: the matmul bound of the backend ops test holds. In
 * MK_CUDA_GEMM_BF16 mode x is rounded to bf16 once (one part), the
 * serving engines' approximation, for speed comparisons.
 *
 * A row's result depends only on that row (each mma output element is its
 * own dot product), not on which rows share its tile, so the placement
 * order within an expert's run (atomics) does not change the output.
 *
 * MK_CUDA_GEMM_INT8 mode (affine experts whose groups divide 512): x and
 * the SwiGLU rows quantized to int8 by the CPU's rule and the int8 kernel
 * of cuda_grouped_q8.cuh, each row the CPU's int8 GEMM's bits; the same
 * kernel serves the backend's plain matmul of a batch in that mode
 * (mkb_matmul_q8).
 *
 * The slot declines (false, nothing queued) for formats other than bf16
 * and MLX affine 4/8-bit (groups of 32 or multiples of 64), hidden or
 * intermediate sizes not multiples of 64, a layer the fused slot does not
 * take, the generic GEMM mode, or a recording. */
#include <cuda_bf16.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_backend.cuh"
#include "cuda/cuda_grouped_q8.cuh" /* GRP_BM .. GRP_THREADS, grp_mat, grp_lds; the int8 kernels */
#include "cuda/cuda_grouped_q8w.cuh" /* the int8 kernel on wgmma (tiles of Q8W_BM rows) */
#include "cuda/cuda_grouped_split.cuh" /* k_grp_mm */

#define GRP_PLAN_THREADS 1024

/* ---- the plan --------------------------------------------------------------- */

/* Exclusive block-wide scan of (a, b) over blockDim.x <= 1024 threads;
 * *tot gets the totals. */
__device__ int2 grp_scan(int2 v, int2 *ws, int2 *tot) {
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (int)blockDim.x >> 5;
    int2 s = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const int a = __shfl_up_sync(0xffffffffu, s.x, o), b = __shfl_up_sync(0xffffffffu, s.y, o);
        if (lane >= o) {
            s.x += a;
            s.y += b;
        }
    }
    if (lane == 31)
        ws[wid] = s;
    __syncthreads();
    if (wid == 0) {
        int2 w = lane < nw ? ws[lane] : make_int2(0, 0);
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const int a = __shfl_up_sync(0xffffffffu, w.x, o), b = __shfl_up_sync(0xffffffffu, w.y, o);
            if (lane >= o) {
                w.x += a;
                w.y += b;
            }
        }
        ws[lane] = w; /* inclusive sums of the warps */
    }
    __syncthreads();
    const int2 base = wid ? ws[wid - 1] : make_int2(0, 0);
    *tot = ws[nw - 1];
    return make_int2(base.x + s.x - v.x, base.y + s.y - v.y);
}

/* E <= blockDim.x. Expert ids outside [0, E) (the route slot never writes
 * them) are clamped, so no write lands outside the runs. */
__global__ void __launch_bounds__(GRP_PLAN_THREADS)
    k_grp_plan(const int32_t *__restrict__ idx, int n, int k, int E, int32_t *__restrict__ tok_of,
               int32_t *__restrict__ pair_of, int32_t *__restrict__ perm, int4 *__restrict__ tiles,
               int32_t *__restrict__ ntiles, int bm) {
    __shared__ int cnt[GRP_PLAN_THREADS], off[GRP_PLAN_THREADS];
    __shared__ int2 ws[32];
    const int P = n * k, tid = threadIdx.x;
    cnt[tid] = 0;
    __syncthreads();
    for (int i = tid; i < P; i += blockDim.x)
        atomicAdd(&cnt[min(max(idx[i], 0), E - 1)], 1);
    __syncthreads();
    const int c = tid < E ? cnt[tid] : 0, nt = (c + bm - 1) / bm;
    int2 tot;
    const int2 o = grp_scan(make_int2(c, nt), ws, &tot);
    for (int r = 0; r < nt; r++)
        tiles[o.y + r] = make_int4(tid, o.x + r * bm, min(bm, c - r * bm), 0);
    if (tid == 0)
        *ntiles = tot.y;
    off[tid] = o.x; /* the run's next free row */
    __syncthreads();
    for (int i = tid; i < P; i += blockDim.x) {
        const int pos = atomicAdd(&off[min(max(idx[i], 0), E - 1)], 1);
        tok_of[pos] = i / k;
        pair_of[pos] = i;
    }
    for (int t = tid; t < n; t += blockDim.x) { /* the token's slots by ascending expert (stable) */
        int32_t p[32];
        for (int j = 0; j < k; j++) {
            int q = j;
            const int32_t ej = idx[t * k + j];
            while (q > 0 && idx[t * k + p[q - 1]] > ej) {
                p[q] = p[q - 1];
                q--;
            }
            p[q] = j;
        }
        for (int j = 0; j < k; j++)
            perm[t * k + j] = p[j];
    }
}

/* ---- the slot -------------------------------------------------------------- */

/* Device scratch, grown to the largest chunk seen (outside the engine's
 * memory plan, like the GEMM's tiles). */
struct mkb_grp {
    void *base;
    size_t cap;
};

void mkb_grp_free(mkb_ctx *c) {
    if (c->grp) {
        mk_cuda_free(c->grp->base);
        free(c->grp);
        c->grp = NULL;
    }
}

static size_t al256(size_t b) {
    return (b + 255) & ~(size_t)255;
}

typedef void (*grp_kernel)(const float *, int64_t, const int32_t *, grp_mat, grp_mat, int, int, const int4 *,
                           const int32_t *);

template <int BITS, int NP> static grp_kernel pick_sd(int sd) {
    return sd == MK_DT_F32 ? k_grp_mm<BITS, 0, NP> : sd == MK_DT_BF16 ? k_grp_mm<BITS, 1, NP> : k_grp_mm<BITS, 2, NP>;
}

static grp_kernel pick(const mk_wt *w, int np) {
    if (w->fmt == MK_WF_BF16)
        return np == 3 ? k_grp_mm<16, 0, 3> : k_grp_mm<16, 0, 1>;
    if (w->bits == 4)
        return np == 3 ? pick_sd<4, 3>(w->sdtype) : pick_sd<4, 1>(w->sdtype);
    return np == 3 ? pick_sd<8, 3>(w->sdtype) : pick_sd<8, 1>(w->sdtype);
}

/* The grouped kernel takes w (one expert's rows of the stack) */
static bool takes(const mk_wt *w) {
    if (w->cols % GRP_KB || mk_wt_row_bytes(w) % 16 || ((uintptr_t)w->data & 15))
        return false;
    if (w->fmt == MK_WF_BF16)
        return true;
    if (w->fmt != MK_WF_AFFINE || (w->bits != 4 && w->bits != 8) || !w->scales || !w->biases)
        return false;
    if (w->sdtype != MK_DT_F32 && w->sdtype != MK_DT_BF16 && w->sdtype != MK_DT_F16)
        return false;
    return w->group == 32 || (w->group >= 64 && w->group % 64 == 0);
}


/* The slot's scratch, at least need bytes (NULL: the allocation failed,
 * nothing recorded: the caller declines) */
static char *grp_scratch(mkb_ctx *c, size_t need) {
    if (!c->grp) {
        c->grp = (mkb_grp *)calloc(1, sizeof *c->grp);
        if (!c->grp)
            return NULL;
    }
    if (c->grp->cap < need) {
        void *nb = NULL;
        (void)cudaStreamSynchronize(c->s); /* the old scratch may still be read */
        if (mk_cuda_malloc(&nb, need, "the grouped GEMM's scratch") != MK_OK) {
            mk_err_clear();
            return NULL;
        }
        mk_cuda_free(c->grp->base);
        c->grp->base = nb;
        c->grp->cap = need;
    }
    return (char *)c->grp->base;
}

/* ---- int8 activations (MK_CUDA_GEMM_INT8) ----------------------------------- */

/* The int8 kernels take w: MLX affine 4 or 8-bit whose groups divide the
 * CPU rule's 512-column panels */
static bool takes_q8(const mk_wt *w) {
    return takes(w) && w->fmt == MK_WF_AFFINE && w->group % 32 == 0 && GQ8_PANEL % w->group == 0;
}
/* w's activation block (mk_gq8_ab) */
static int q8_ab(const mk_wt *w) {
    return w->bits == 4 && w->group >= 64 ? 64 : 32;
}
/* bytes of rows x K quantized for w's kernels (q, d, xg) */
static size_t q8_size(int64_t rows, int64_t K, const mk_wt *w) {
    return al256((size_t)(rows * K)) + al256((size_t)(rows * (K / q8_ab(w))) * 4) +
           al256((size_t)(rows * (K / w->group)) * 4);
}
static gq8_x q8_at(char *p, int64_t rows, int64_t K, const mk_wt *w) {
    gq8_x o;
    o.q = (int8_t *)p;
    o.d = (float *)(p + al256((size_t)(rows * K)));
    o.xg = (float *)((char *)o.d + al256((size_t)(rows * (K / q8_ab(w))) * 4));
    return o;
}
/* quantize rows of x [rows, w->cols] (row stride ldx) for w's kernels */
static void q8_quant(mkb_ctx *c, const float *x, int64_t ldx, int64_t rows, const mk_wt *w, gq8_x o) {
    const int64_t warps = rows * (w->cols / w->group);
    const unsigned blocks = (unsigned)((warps + 7) / 8);
    if (q8_ab(w) == 64)
        k_q8x<64><<<blocks, 256, 0, c->s>>>(x, ldx, rows, (int)w->cols, (int)w->group, o);
    else
        k_q8x<32><<<blocks, 256, 0, c->s>>>(x, ldx, rows, (int)w->cols, (int)w->group, o);
    mkb_launched(c, "int8 activations");
}
typedef void (*q8_kernel)(gq8_x, const int32_t *, grp_mat, grp_mat, int, int, const int4 *, const int32_t *, int);
template <int BITS, int AB> static q8_kernel q8_sd(int sd) {
    return sd == MK_DT_F32    ? k_grp_mm_q8<BITS, 0, AB>
           : sd == MK_DT_BF16 ? k_grp_mm_q8<BITS, 1, AB>
                              : k_grp_mm_q8<BITS, 2, AB>;
}
static q8_kernel pick_q8(const mk_wt *w) {
    if (w->bits == 8)
        return q8_sd<8, 32>(w->sdtype);
    return q8_ab(w) == 64 ? q8_sd<4, 64>(w->sdtype) : q8_sd<4, 32>(w->sdtype);
}
template <int BITS, int AB, int S> static q8_kernel q8p_sd(int sd) {
    return sd == MK_DT_F32    ? k_grp_mm_q8p<BITS, 0, AB, S>
           : sd == MK_DT_BF16 ? k_grp_mm_q8p<BITS, 1, AB, S>
                              : k_grp_mm_q8p<BITS, 2, AB, S>;
}
/* The pipelined int8 kernel's stages for w (mk_cuda_q8p_stages: 4-bit weights) */
static int q8p_stages(const mk_wt *w) {
    const int s = mk_cuda_q8p_stages();
    return w->bits == 4 && s ? s : Q8P_STAGES(w->bits);
}
/* The pipelined int8 kernel for w in `stages` stages (q8p_stages, read
 * once by the caller: the kernel, its shared memory and the launch must
 * agree) when it takes w's shape (q8p_takes) and its shared memory could
 * be granted, else NULL (k_grp_mm_q8 runs) */
static q8_kernel pick_q8p(const mk_wt *w, int stages) {
    const int sb = w->sdtype == MK_DT_F32 ? 4 : 2;
    if (!q8p_takes(w->cols, (int)w->group, sb, w->cols / w->group, w->scales, w->biases))
        return NULL;
    const bool s3 = stages == 3;
    const q8_kernel k = w->bits == 8      ? q8p_sd<8, 32, Q8P_STAGES(8)>(w->sdtype)
                        : q8_ab(w) == 64 ? (s3 ? q8p_sd<4, 64, 3>(w->sdtype) : q8p_sd<4, 64, 4>(w->sdtype))
                                         : (s3 ? q8p_sd<4, 32, 3>(w->sdtype) : q8p_sd<4, 32, 4>(w->sdtype));
    /* above the 48 KiB a launch gets without asking (refused: the register-staged kernel runs) */
    return mkc_smem_opt_in((const void *)k, (int)q8p_smem(w->bits, stages)) ? k : NULL;
}

template <int BITS, int AB> static q8_kernel q8w_sd(int sd) {
    return sd == MK_DT_F32    ? k_grp_mm_q8w<BITS, 0, AB>
           : sd == MK_DT_BF16 ? k_grp_mm_q8w<BITS, 1, AB>
                              : k_grp_mm_q8w<BITS, 2, AB>;
}
/* The wgmma int8 kernel for w (mk_cuda_q8_wgmma on, the device runs
 * sm_90a code, q8w_takes w's shape, its shared memory granted), else NULL.
 * Its tiles are Q8W_BM rows: the caller's plan and grid must be cut so. */
static q8_kernel pick_q8w(const mk_wt *w) {
    const int sb = w->sdtype == MK_DT_F32 ? 4 : 2;
    if (!mk_cuda_q8_wgmma() || !mk_cuda_wgmma_available() || w->fmt != MK_WF_AFFINE ||
        !q8w_takes(w->bits, w->cols, (int)w->group, sb, w->cols / w->group, w->scales, w->biases))
        return NULL;
    const q8_kernel k = w->bits == 8      ? q8w_sd<8, 32>(w->sdtype)
                        : q8_ab(w) == 64 ? q8w_sd<4, 64>(w->sdtype)
                                         : q8w_sd<4, 32>(w->sdtype);
    return mkc_smem_opt_in((const void *)k, (int)q8w_smem(w->bits)) ? k : NULL;
}

/* One grouped GEMM launch: rows of A [rows, ldx] (gathered through a_rows
 * when given) by the weight w of m0 (and of m1 on grid z 1: gate and up,
 * alike), in the plan's tiles or, tiles NULL, the rows in order. With q8s
 * (scratch of q8_size(rows, w->cols, w) bytes) A is first quantized to int8
 * and the int8 kernel runs (kw, the wgmma kernel, when given: grid and
 * tiles then in rows of Q8W_BM); else the split kernel with np parts of x. */
static void grp_gemm(mkb_ctx *c, const mk_wt *w, const float *A, int64_t ldx, int64_t rows, const int32_t *a_rows,
                     grp_mat m0, grp_mat m1, dim3 grid, const int4 *tiles, const int32_t *ntiles, char *q8s, int np,
                     q8_kernel kw, const char *what) {
    if (q8s) {
        const gq8_x xq = q8_at(q8s, rows, w->cols, w);
        q8_quant(c, A, ldx, rows, w, xq);
        const int stages = q8p_stages(w);
        const q8_kernel kp = kw || !mk_cuda_q8_pipelined() ? NULL : pick_q8p(w, stages);
        if (kw)
            kw<<<grid, Q8W_THREADS, q8w_smem(w->bits), c->s>>>(xq, a_rows, m0, m1, (int)w->cols, (int)w->group, tiles,
                                                       ntiles, tiles ? 0 : (int)rows);
        else if (kp)
            kp<<<grid, GRP_THREADS, q8p_smem(w->bits, stages), c->s>>>(
                xq, a_rows, m0, m1, (int)w->cols, (int)w->group, tiles, ntiles, tiles ? 0 : (int)rows);
        else
            pick_q8(w)<<<grid, GRP_THREADS, 0, c->s>>>(xq, a_rows, m0, m1, (int)w->cols, (int)w->group, tiles,
                                                      ntiles, tiles ? 0 : (int)rows);
    } else {
        pick(w, np)<<<grid, GRP_THREADS, 0, c->s>>>(A, ldx, a_rows, m0, m1, (int)w->cols, (int)w->group, tiles,
                                                   ntiles);
    }
    mkb_launched(c, what);
}

bool mkb_matmul_q8(mkb_ctx *c, const mk_wt *w, const float *x, int64_t n, float *y) {
    if (c->recording || mkb_gemm_mode(c) != MK_CUDA_GEMM_INT8 || !takes_q8(w) || n < 1 || w->rows > INT32_MAX ||
        (n + GRP_BM - 1) / GRP_BM > 65535 || ((uintptr_t)x & 15))
        return false;
    char *base = grp_scratch(c, q8_size(n, w->cols, w));
    if (!base)
        return false;
    const grp_mat m = grp_mat_of(w, w->rows, y, w->rows, NULL);
    const q8_kernel kw = pick_q8w(w);
    const int bm = kw ? Q8W_BM : GRP_BM, bn = kw ? Q8W_BN : GRP_BN;
    const dim3 grid((unsigned)((w->rows + bn - 1) / bn), (unsigned)((n + bm - 1) / bm), 1);
    grp_gemm(c, w, x, w->cols, n, NULL, m, m, grid, NULL, NULL, base, 0, kw,
             kw ? "matmul (int8 activations, wgmma)" : "matmul (int8 activations)");
    return true;
}

bool mkb_moe_grouped(void *ctx, const mk_moe_args *a, const int32_t *idx, const float *w) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    const int mode = mkb_gemm_mode(c); /* read once: the default follows a setting */
    if (c->recording || a->n < 2 || a->n > (1 << 20) || mode == MK_CUDA_GEMM_GENERIC)
        return false;
    const mk_cuda_moe *m = mkb_moe_layer_dev(c, a);
    if (!m || m->n_experts > GRP_PLAN_THREADS || m->top_k > 32 || !takes(&m->gate) || !takes(&m->up) ||
        !takes(&m->down) || m->gate.fmt != m->down.fmt)
        return false;
    const int64_t n = a->n, k = m->top_k, E = m->n_experts, H = m->hidden, I = m->inter, P = n * k;
    /* int8 mode: x and the SwiGLU rows quantized (gate and up alike, so x once) */
    const bool q8 = mode == MK_CUDA_GEMM_INT8 && takes_q8(&m->gate) && takes_q8(&m->up) &&
                    takes_q8(&m->down) && m->up.bits == m->gate.bits && m->up.group == m->gate.group;
    /* the wgmma kernel for all three or for none: the plan's tiles are its 64 rows or the others' 32 (gate
     * and up share one launch, so one kernel: the same instance) */
    const q8_kernel kwg = q8 ? pick_q8w(&m->gate) : NULL, kwd = kwg ? pick_q8w(&m->down) : NULL;
    const bool wg = kwg && kwd && pick_q8w(&m->up) == kwg;
    const int bm = wg ? Q8W_BM : GRP_BM, bn = wg ? Q8W_BN : GRP_BN;
    const int64_t tcap = P / bm + E + 1;
    if (tcap > 65535)
        return false;
    /* scratch: tok_of, pair_of, perm [P]; tiles [tcap]; ntiles; G, U [P, I]; Y [P, H]; int8 mode: x's and
     * G's quantized rows */
    const size_t o_pair = al256((size_t)P * 4), o_perm = o_pair + al256((size_t)P * 4),
                 o_tiles = o_perm + al256((size_t)P * 4), o_nt = o_tiles + al256((size_t)tcap * 16),
                 o_g = o_nt + 256, o_u = o_g + al256((size_t)(P * I) * 4), o_y = o_u + al256((size_t)(P * I) * 4),
                 o_xq = o_y + al256((size_t)(P * H) * 4), o_gq = o_xq + (q8 ? q8_size(n, H, &m->gate) : 0),
                 need = o_gq + (q8 ? q8_size(P, I, &m->down) : 0);
    char *base = grp_scratch(c, need);
    if (!base)
        return false; /* the general path needs less */
    int32_t *tok_of = (int32_t *)base, *pair_of = (int32_t *)(base + o_pair), *perm = (int32_t *)(base + o_perm),
            *ntiles = (int32_t *)(base + o_nt);
    int4 *tiles = (int4 *)(base + o_tiles);
    float *G = (float *)(base + o_g), *U = (float *)(base + o_u), *Y = (float *)(base + o_y);

    k_grp_plan<<<1, GRP_PLAN_THREADS, 0, c->s>>>(idx, (int)n, (int)k, (int)E, tok_of, pair_of, perm, tiles, ntiles,
                                                 bm);
    mkb_launched(c, "grouped moe: plan");
    const int np = mode == MK_CUDA_GEMM_BF16 ? 1 : 3;
    /* gate and up of every routed row (rows of x through tok_of) */
    const grp_mat mg = grp_mat_of(&m->gate, I, G, I, NULL), mu = grp_mat_of(&m->up, I, U, I, NULL);
    const dim3 ggu((unsigned)((I + bn - 1) / bn), (unsigned)tcap, 2);
    grp_gemm(c, &m->gate, a->x, H, n, tok_of, mg, mu, ggu, tiles, ntiles, q8 ? base + o_xq : NULL, np,
             wg ? kwg : NULL,
             wg ? "grouped moe: gate/up (int8, wgmma)" : q8 ? "grouped moe: gate/up (int8 activations)"
                                                         : "grouped moe: gate/up");
    mkb_swiglu(c, G, G, U, P * I);
    /* down, each output row to its pair's row for combine */
    const grp_mat md = grp_mat_of(&m->down, H, Y, H, pair_of);
    const dim3 gd((unsigned)((H + bn - 1) / bn), (unsigned)tcap, 1);
    grp_gemm(c, &m->down, G, I, P, NULL, md, md, gd, tiles, ntiles, q8 ? base + o_gq : NULL, np, wg ? kwd : NULL,
             wg ? "grouped moe: down (int8, wgmma)" : q8 ? "grouped moe: down (int8 activations)"
                                                     : "grouped moe: down");
    mkb_combine(c, a->y, Y, w, perm, n, (int)k, H);
    return true;
}
