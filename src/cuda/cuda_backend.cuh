/* Internals of the CUDA backend (include/moekit/backend_cuda.h): its
 * context, the device view of a weight in any mk_wt format, and the
 * per-element dequantizer the format-generic kernels use.
 *
 * The backend's slot functions live in several files (one concept each:
 * cuda_backend.cu memory and data movement, cuda_matmul.cu weights,
 * cuda_ops.cu norms/rope/element-wise, cuda_attn.cu attention, cuda_gdn.cu
 * conv + Gated DeltaNet, cuda_route.cu routing and combine); they share the
 * context declared here and report launch failures through mkb_launched. */
#ifndef MK_CUDA_BACKEND_CUH
#define MK_CUDA_BACKEND_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "cuda/cuda_impl.cuh"
#include "cuda/mk_cuda.h"
#include "moekit/backend.h"
#include "moekit/backend_cuda.h"
#include "cuda/cuda_nfl.cuh"

/* Lookup tables of the 8- and 4-bit float codes, copied to the device from
 * dtype.h's scalar conversions (the CPU's definitions, so values agree bit
 * for bit). e4m3_mx equals e4m3: MLX's E4M3 is E4M3FN (0x7f/0xff NaN). */
struct mkb_luts {
    float e4m3[256], e4m3_mx[256], e5m2[256], e8m0[256], e2m1[16];
};

/* Device view of one weight in any format (kernel argument by value). */
struct mkb_w {
    const uint8_t *data;
    const void *scales, *biases;
    const mkb_luts *lut;
    int64_t rows, cols, row_bytes;
    int32_t fmt, sdtype, bits, group, block_r, block_c;
    float gs; /* NVFP4 global scale */
};

/* One resident weight: the host view it came from and its device copy. */
struct mkb_entry {
    mk_wt host;   /* the key: every field of the host view */
    mk_wt dev;    /* same view, device pointers (mk_cuda_gemv takes it) */
    mkb_w dw;     /* the generic kernels' view */
    bool fast;    /* mkc_kind_of(dev) >= 0: the GEMV kernels take it */
    size_t bytes; /* device bytes (data + scales + biases); 0 when borrowed */
    bool borrowed; /* dev points into memory another owner frees (a fused layer's slab) */
    mkb_entry *next;
};

struct mkb_ctx {
    int device;
    cudaStream_t s;
    mk_err_slot err;   /* first failure since the last sync */
    mkb_luts *luts;    /* device */
    unsigned long long *nf; /* device scratch of find_nonfinite */
    mkb_entry **tab;   /* weight map: buckets by host data pointer */
    size_t nb, n, bytes;
    /* deferred non-finite checks (check_finite / nonfinite_take) */
    struct mkb_nfl *nfl; /* device */
    struct mkb_amax *amax; /* device scratch of the argmax slot (cuda_route.cu) */
    unsigned long long *dsa_keys; /* device scratch of dsa_select (cuda_dsa.cu), dsa_cap bytes */
    float *att_part;              /* device scratch of a split decode attention (cuda_attn.cu) */
    size_t att_cap;
    unsigned *att_tickets;        /* its shares' tickets, one per (token, head), zero between launches */
    size_t att_tcap;              /* tickets allocated */
    uint32_t *att3_planes;        /* the tiled prefill attention's split parts (generation 5, cuda_attn_tile.cu) */
    size_t att3_pcap;             /* bytes allocated */
    size_t dsa_cap;
    struct mkb_moe_layer *moe_layers; /* the fused MoE slot's per-layer state (cuda_fused.cu) */
    mk_cuda_moe_ws *moe_bws;  /* the batched steps' workspace, for layers of shape bws_shape */
    int64_t bws_shape[4];     /* (E, k, I, Is) */
    size_t expert_vram;       /* budget for stacked experts in device memory (SIZE_MAX: what fits) */
    size_t vram_expert_bytes; /* stacked experts in device memory (also in `bytes`) */
    size_t host_expert_bytes; /* stacked experts in mapped pinned host memory */
    int host_layers;
    size_t expert_cache;      /* beside expert_vram, for the VRAM cache of host layers' experts (0: none) */
    struct mkb_xcache *xc;    /* that cache (cuda_xcache.cu), made once the host layers are known */
    int xc_tried_at;          /* host_layers when it was last made or found impossible (0: never) */
    struct mkb_moe_layer *xc_first; /* a layer of the cache: its call is an unrecorded step's tick */
    /* step recording (step_begin / step_end, cuda_graph.cu) */
    bool graphs;    /* step_begin records (mk_backend_cuda_set_graphs; on by default) */
    bool recording;
    cudaGraphExec_t exec; /* the last step's executable graph, updated in place */
    uint64_t rec_id;      /* names exec for step_replay; 0: none (dropped) */
    uint64_t rec_sig;     /* the switches it was recorded under (cuda_graph.cu switch_sig) */
    uint64_t rec_next;    /* the next id to give */
    int graph_updates, graph_builds, graph_replays;
    /* mk_backend_cuda_time_steps: events around each replay, the GPU's span of the replayed steps
     * (step_ms over step_n), the last pair read at the next replay or on asking */
    bool time_steps, ev_pending;
    cudaEvent_t ev[2];
    double step_ms;
    int step_n;
    /* decode lookahead (step_chain / step_take, cuda_graph.cu): two slots of pinned host
     * memory, each the staging of a chained step's uploads and the copy of its result and
     * non-finite record, with an event after that copy; busy from chain to take */
    unsigned char *chain_pin;
    cudaEvent_t chain_ev[2];
    bool chain_busy[2];
    uint64_t chain_sig[2]; /* the switches each slot's step was queued under */
    bool chain_failed;     /* the pinned slots could not be made: no chaining */
    int chain_steps; /* steps queued by step_chain (mk_backend_cuda_chained) */
    /* matmul of batches (cuda_gemm.cu): MK_CUDA_GEMM_* (AUTO resolved at
     * each call by mkb_gemm_mode), the weight tiles' scratch bound in
     * bytes, cuBLAS state made on first use */
    int gemm_mode;
    size_t gemm_scratch;
    struct mkb_gemm *gemm;
    struct mkb_grp *grp; /* the grouped MoE slot's scratch (cuda_grouped.cu) */
    /* host memory an expert cache reuses (host_changed, cuda_backend.cu):
     * the ranges reported (one per cache slot), and the entries dropped
     * from the map because their host bytes changed, whose device memory
     * the next weight of the same size takes */
    struct mkb_range *vr;
    int nvr, capvr;
    mkb_entry *spare;
    int nspare;
    /* a one-row add_rmsnorm held back (mk_cuda_set_norm_fold, cuda_ops.cu):
     * the next slot folds it into its launch when it reads fold.xb and can
     * (matmul, matmul_n, moe), every other slot launches it first
     * (mkb_fold_flush) */
    bool folding;
    mk_cuda_fold fold;
    unsigned *fold_ticket; /* device word of the GEMV's fold, 0 between launches */
    /* a one-token qk_norm_rope held back likewise: the attention of its q
     * and new k row folds it (cuda_attn.cu) */
    bool qk_folding;
    struct {
        float *q, *k;
        int nq, nk, hd, rot;
        const float *qg, *kg, *cos, *sin;
        float eps;
    } qk;
    unsigned *qk_kt; /* device: the attention's fold's tickets, one per kv head (cuda_attn.cu) */
    size_t qk_ktcap;
    int64_t folds;         /* taken (mk_backend_cuda_folds) */
};

struct mkb_range {
    const char *p;
    size_t n;
};


/* Device scratch of one argmax launch: the best (value, index) key so far
 * and the blocks' ticket, both 0 between launches (the last block resets). */
struct mkb_amax {
    unsigned long long key;
    unsigned ticket;
};

/* Launch the held-back add_rmsnorm or qk_norm_rope, if any (cuda_ops.cu).
 * Every slot but those two and their readers (matmul, matmul_n, moe, attention)
 * calls it first (the backend's table wraps them); the readers when they
 * do not fold it. */
void mkb_fold_flush(mkb_ctx *c);
/* cuda_graph.cu: the last timed replay's span into step_ms (mk_backend_cuda_time_steps) */
bool mkb_step_time_take(mkb_ctx *c);
bool mkb_step_chain(void *ctx, uint64_t id, int slot, const mk_upload *ups, int nup, void *link_dst,
                    const void *link_src, size_t link_bytes, const void *res, size_t res_bytes);
mk_status mkb_step_take(void *ctx, int slot, void *res, size_t res_bytes, bool *found, bool *stale,
                        int32_t *tag, int64_t *index, float *value);
void mkb_chain_free(mkb_ctx *c);
/* The held-back add_rmsnorm when x is its xb and the fold mode lets this
 * reader take it (router: the MoE router, which every mode's fold feeds;
 * else a GEMV, only under MK_CUDA_NORM_FOLD_ALL), else NULL; a slot that
 * folds it calls mkb_fold_taken. */
const mk_cuda_fold *mkb_fold_for(mkb_ctx *c, const float *x, bool router);
/* A slot folded the held-back step into its launch (either kind). */
void mkb_fold_taken(mkb_ctx *c);

/* Record a failure (the first one wins; sync reports it). Returns s. */
mk_status mkb_fail(mkb_ctx *c, mk_status s);
/* After a launch: record a launch error naming `what`. */
void mkb_launched(mkb_ctx *c, const char *what);
/* a runtime call's failure (e != cudaSuccess) kept like a launch's: what names the call */
void mkb_ck(mkb_ctx *c, cudaError_t e, const char *what);
/* Launch a kernel of the decode step on the backend's stream, under
 * programmatic dependent launch when mk_cuda_step_pdl (the kernel calls
 * mkc_pdl_enter before it touches anything but weights), and record a
 * launch error naming `what`. */
template <typename... KA, typename... A>
static inline void mkb_launch(mkb_ctx *c, const char *what, void (*k)(KA...), dim3 grid, dim3 block, size_t smem,
                              A... args) {
    const cudaError_t e = mkc_launch(k, grid, block, smem, c->s, mk_cuda_step_pdl(), args...);
    if (e != cudaSuccess)
        mkb_fail(c, mkc_fail(e, what));
}
/* The resident copy of host view w (uploaded on first use), or NULL after
 * recording the failure. */
const mkb_entry *mkb_weight(mkb_ctx *c, const mk_wt *w);

/* Enter `dev` (device memory owned by someone else, e.g. a fused layer's
 * slab) as the resident copy of host view w, unless w has one already.
 * Returns the entry, or NULL after recording the failure. */
const mkb_entry *mkb_weight_alias(mkb_ctx *c, const mk_wt *w, const mk_wt *dev);
/* Drop the alias entry of host view w, if any (its owner frees the memory). */
void mkb_weight_unalias(mkb_ctx *c, const mk_wt *w);
/* The fused slot's device description of a's layer (stacked expert slabs,
 * built on first use), or NULL when the step does not take the layer. */
const mk_cuda_moe *mkb_moe_layer_dev(mkb_ctx *c, const mk_moe_args *a);
/* Prefill attention in tiles (cuda_attn_tile.cu): false, nothing queued,
 * when the call is not one it takes (then k_attn runs it). ks / vs: the
 * caches' row strides in floats. */
bool mkb_attention_tiled(mkb_ctx *c, const mk_attn_args *a, int64_t ks, int64_t vs);
/* Free the grouped MoE slot's scratch (cuda_grouped.cu; at backend free). */
void mkb_grp_free(mkb_ctx *c);
/* One MoE layer of the fused slot (cuda_fused.cu): its experts stacked in
 * slabs of its own, in device memory or (past the expert VRAM budget) in
 * pinned host memory mapped into the device's address space. */
struct mkb_moe_layer {
    const mk_expert *experts; /* the key */
    int E;
    bool ok;               /* the step takes this layer */
    bool host;             /* slabs in pinned host memory mapped into the device's
                              address space (past the expert VRAM budget) */
    void *slab[3][3];      /* gate, up, down: data, scales, biases (owned) */
    size_t esz[3][3];      /* bytes of one expert's share of each slab (0: none) */
    size_t bytes;
    int uses;              /* lookups of this layer, counted up to 2 (cuda_xcache.cu) */
    mk_cuda_moe m;         /* device views */
    mk_cuda_moe_ws *ws;
    mkb_moe_layer *next;
};

/* The context of a CUDA backend, NULL for NULL or another backend. */
mkb_ctx *mkb_ctx_of(const mk_backend *b);
/* Free the fused MoE slot's state (cuda_fused.cu; at backend free). */
void mkb_moe_free(mkb_ctx *c);
/* The VRAM cache of the experts of layers in host memory (cuda_xcache.cu):
 * at a step boundary (not while recording), make it once the host layers
 * are known, publish the slots whose copies landed, take the routing
 * counts that came back, plan and start copies, ask for the next counts. */
void mkb_xcache_tick(mkb_ctx *c);
/* Free the cache (waits for its copies) and take it out of its layers'
 * device views; a later tick may make it again. */
void mkb_xcache_free(mkb_ctx *c);
/* Drop the fused layers any of whose experts' views has host data `host_data`. */
void mkb_moe_forget(mkb_ctx *c, const void *host_data);

/* A float vector the slot reads as a parameter (norm weights, conv
 * weights, A_log, dt_bias, a router's selection bias): device memory as
 * given, or the resident device copy of host (model) memory, uploaded on
 * first use like a weight. NULL stays NULL; NULL after a recorded failure. */
const float *mkb_param(mkb_ctx *c, const float *p, int64_t n);

/* Blocks for n items of `threads` threads (1 at least). */
static inline unsigned mkb_blocks(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 1 ? 1 : b > 0x7fffffff ? 0x7fffffff : b);
}

/* ---- device: one element of a weight ---------------------------------- */

__device__ __forceinline__ float mkb_ldsd(const void *p, int sd, int64_t i) {
    if (sd == MK_DT_F32)
        return ((const float *)p)[i];
    const uint32_t h = ((const unsigned short *)p)[i];
    return sd == MK_DT_BF16 ? __uint_as_float(h << 16) : __half2float(__ushort_as_half((unsigned short)h));
}

/* W[r, c] exactly as mk_wt_dequant_row computes it (wt.c): products and
 * sums rounded one at a time (__fmul_rn / __fadd_rn keep nvcc from fusing
 * them into an FMA, which the C build never does), so get_rows is exact. */
__device__ __forceinline__ float mkb_wel(const mkb_w &w, int64_t r, int64_t c) {
    const uint8_t *row = w.data + r * w.row_bytes;
    switch (w.fmt) {
    case MK_WF_F32: return ((const float *)row)[c];
    case MK_WF_BF16: return __uint_as_float((uint32_t)((const unsigned short *)row)[c] << 16);
    case MK_WF_F16: return __half2float(__ushort_as_half(((const unsigned short *)row)[c]));
    case MK_WF_FP8_E4M3:
    case MK_WF_FP8_E5M2: {
        const float v = (w.fmt == MK_WF_FP8_E4M3 ? w.lut->e4m3 : w.lut->e5m2)[row[c]];
        if (!w.scales)
            return __fmul_rn(v, 1.0f);
        const int64_t nbc = (w.cols + w.block_c - 1) / w.block_c;
        return __fmul_rn(v, mkb_ldsd(w.scales, w.sdtype, (r / w.block_r) * nbc + c / w.block_c));
    }
    case MK_WF_AFFINE: {
        const int64_t bit = c * w.bits;
        const uint8_t *p = row + (bit >> 3);
        const int sh = (int)(bit & 7);
        uint32_t v = p[0];
        if (sh + w.bits > 8) /* the code spills into the next byte (never past the row) */
            v |= (uint32_t)p[1] << 8;
        const uint32_t q = (v >> sh) & ((1u << w.bits) - 1u);
        const int64_t g = r * (w.cols / w.group) + c / w.group;
        return __fadd_rn(__fmul_rn(mkb_ldsd(w.scales, w.sdtype, g), (float)q), mkb_ldsd(w.biases, w.sdtype, g));
    }
    case MK_WF_MXFP4:
    case MK_WF_NVFP4: {
        const bool nv = w.fmt == MK_WF_NVFP4;
        const int64_t gsz = nv ? 16 : 32;
        const uint32_t nib = (row[c >> 1] >> (4 * (c & 1))) & 15u;
        const uint8_t sb = ((const uint8_t *)w.scales)[r * (w.cols / gsz) + c / gsz];
        const float s = nv ? __fmul_rn(w.lut->e4m3_mx[sb], w.gs) : w.lut->e8m0[sb];
        return __fmul_rn(w.lut->e2m1[nib], s);
    }
    case MK_WF_MXFP8: {
        const uint8_t sb = ((const uint8_t *)w.scales)[r * (w.cols / 32) + c / 32];
        return __fmul_rn(w.lut->e4m3_mx[row[c]], w.lut->e8m0[sb]);
    }
    default: return __int_as_float(0x7fc00000); /* unreachable: formats are checked at upload */
    }
}

#include "cuda/cuda_block_sum.cuh"

/* ---- slots (one file per concept) -------------------------------------- */

void mkb_matmul(void *ctx, const mk_wt *w, const float *x, int64_t n, float *y);
void mkb_matmul_each(void *ctx, const mk_wt *w, const float *x, int64_t n, float *y);
void mkb_get_rows(void *ctx, const mk_wt *w, const int32_t *ids, int64_t n, float *y);
void mkb_head_matmul(void *ctx, const mk_head_mm_args *a);
void mkb_head_matmul_t(void *ctx, const mk_head_mm_args *a);
void mkb_rmsnorm(void *ctx, float *y, int64_t y_stride, const float *x, int64_t x_stride, const float *g,
                 int64_t rows, int64_t dim, float eps);
void mkb_rope(void *ctx, float *x, int64_t n, int64_t tok_stride, int n_heads, int64_t head_stride, int rot_dim,
              const float *cos, const float *sin, bool interleave);
void mkb_gated_rmsnorm(void *ctx, float *x, const float *z, const float *g, int64_t rows, int64_t dim, float eps);
void mkb_swiglu(void *ctx, float *y, const float *gate, const float *up, int64_t n);
void mkb_layernorm(void *ctx, float *y, const float *x, const float *g, const float *b, int64_t rows, int64_t dim,
                   float eps);
void mkb_dsa_select(void *ctx, const mk_dsa_args *a);
void mkb_clamped_swiglu(void *ctx, float *y, const float *gate, const float *up, int64_t n, int64_t s, float alpha,
                        float limit);
void mkb_sigmoid_mul(void *ctx, float *x, const float *gate, int64_t n);
void mkb_axpy(void *ctx, float *y, float a, const float *x, int64_t n);
void mkb_attention(void *ctx, const mk_attn_args *a);
bool mkb_attention_each(void *ctx, const mk_attn_args *a, int n);
bool mkb_conv1d_silu_each(void *ctx, const float *u, int64_t u_stride, float *y, int n, int64_t C, int K,
                          const float *w, float *const *states);
bool mkb_gdn_each(void *ctx, const mk_gdn_args *a, int n);
void mkb_conv1d_silu(void *ctx, const float *u, int64_t u_stride, float *y, int64_t n, int64_t C, int K,
                     const float *w, float *state);
void mkb_gdn(void *ctx, const mk_gdn_args *a);
void mkb_route(void *ctx, const mk_route_args *a);
void mkb_combine(void *ctx, float *y, const float *x, const float *w, const int32_t *order, int64_t n, int k,
                 int64_t dim);
void mkb_gated_add(void *ctx, float *y, const float *g, const float *x, int64_t n, int64_t dim);
bool mkb_moe(void *ctx, const mk_moe_args *a);
bool mkb_moe_grouped(void *ctx, const mk_moe_args *a, const int32_t *idx, const float *w);
void mkb_add_rmsnorm(void *ctx, float *x, const float *y, int64_t rows, int64_t dim, int32_t tag, float *xb,
                     const float *g, float eps);
void mkb_qk_norm_rope(void *ctx, float *q, int nq, float *k, int nk, int64_t n, int hd, const float *qg,
                      const float *kg, float eps, int rot_dim, const float *cos, const float *sin);
void mkb_matmul_n(void *ctx, const mk_wt *const *w, int count, const float *x, int64_t n, float *const *ys);
void mkb_argmax(void *ctx, const float *x, int64_t n, int32_t *out);
bool mkb_step_begin(void *ctx);
bool mkb_step_end(void *ctx, bool run);
uint64_t mkb_step_last(void *ctx);
bool mkb_step_replay(void *ctx, uint64_t id);
void mkb_graph_free(mkb_ctx *c);
/* matmul of a batch on tensor cores (cuda_gemm.cu): false when it declines
 * (mode GENERIC, inside a step recording, sizes past cuBLAS's int), true
 * when it queued the product or recorded a failure. */
bool mkb_matmul_gemm(mkb_ctx *c, const mkb_entry *e, const float *x, int64_t n, float *y);
/* The mode a batch runs under now: the set one, AUTO resolved by the
 * engine's prefill setting as the device reads it (backend_cuda.h). */
static inline int mkb_gemm_mode(const mkb_ctx *c) {
    if (c->gemm_mode != MK_CUDA_GEMM_AUTO)
        return c->gemm_mode;
    return mk_cuda_prefill_int8() ? MK_CUDA_GEMM_INT8 : MK_CUDA_GEMM_SPLIT;
}
/* MK_CUDA_GEMM_INT8: y [n, rows] = x [n, cols] W^T on int8 activations by
 * the CPU's int8 GEMM rule (cuda_grouped.cu; w a device view). False (nothing
 * queued): another mode, a recording, or a weight the kernel does not take. */
bool mkb_matmul_q8(mkb_ctx *c, const mk_wt *w, const float *x, int64_t n, float *y);
void mkb_gemm_free(mkb_ctx *c);

#endif
