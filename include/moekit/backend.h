/* The compute backend seam: memory and every numeric operation of the
 * forward pass.
 *
 * The engine decides what to compute (which layer, which experts, which
 * cache rows); a backend decides how and where. The forward pass touches
 * activations, caches and recurrent state only through this table, so a
 * second backend (CUDA next) can be dropped in and checked layer by layer
 * against the CPU one (tests/unit/test_backend_ops.c runs every slot of
 * every backend against a scalar reference).
 *
 * Memory. Every activation, cache and state buffer is backend memory from
 * `alloc`; the engine computes pointer offsets into it but never reads or
 * writes it except through slots, `upload` and `download`. A backend whose
 * memory is host memory says so (`host_mem`); the engine may then hand it
 * caller memory directly (logits) instead of staging. Weights are mk_wt
 * views (a device backend maps them to its own copies).
 *
 * Errors. Slots are void so that a device backend can queue them; a backend
 * records the first failure and reports it from `sync`, which the engine
 * calls before it returns from a forward step. Argument errors are the
 * engine's to catch before the call. Shapes below use n = tokens in the
 * call; rows are contiguous unless a stride is given (strides count floats
 * between consecutive rows). */
#ifndef MOEKIT_BACKEND_H
#define MOEKIT_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "moekit/kernels.h"
#include "moekit/status.h"
#include "moekit/weight.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Causal attention of n new query tokens against a KV cache. Token t sits at
 * position pos0 + t and sees cache rows 0 .. pos0 + t. GQA: kv head j
 * serves query heads j*g .. j*g+g-1, g = n_heads / n_kv. Softmax in f32.
 * Cache row s holds kv head j's key at k + s*k_stride + j*dk and its value
 * at v + s*v_stride + j*dv; a zero stride means packed rows (n_kv*dk,
 * n_kv*dv). MLA's latent cache is one shared head (n_kv 1) whose value is
 * the first dv floats of its own key row: v = k, v_stride = k_stride.
 * Sparse attention (DSA): with `sel`, token t sees only the cache rows
 * listed in sel[t*sel_k ..], ascending, ended by -1 or by sel_k entries
 * (dsa_select writes them); only backends that set dsa_select get a sel. */
typedef struct mk_attn_args {
    const float *q;   /* [n, n_heads, dk] */
    const float *k;   /* cache [>= pos0 + n] rows of k_stride floats */
    const float *v;   /* cache [>= pos0 + n] rows of v_stride floats (may alias k) */
    float *out;       /* [n, n_heads, dv] */
    int64_t n, pos0;
    int n_heads, n_kv, dk, dv;
    float scale;      /* multiplies q.k before the softmax */
    int64_t k_stride; /* floats between cache rows of k; 0: n_kv*dk */
    int64_t v_stride; /* floats between cache rows of v; 0: n_kv*dv */
    /* gpt_oss (honoured only by a backend with `sinks_window`): window > 0
     * limits token t to cache rows p - window + 1 .. p (p = pos0 + t);
     * sinks [n_heads] (backend memory, or NULL) adds one logit per head to
     * the softmax's denominator only: out = sum_s exp(x_s - m) v_s /
     * (sum_s exp(x_s - m) + exp(sink - m)), m the max over the x_s and sink. */
    int64_t window;
    const float *sinks;
    const int32_t *sel; /* [n, sel_k] positions each token sees, or NULL: all of 0 .. pos0 + t */
    int64_t sel_k;
    /* A decode step whose position lives in backend memory (a recorded step
     * replayed at later positions, step_replay): with pos_dev set, n is 1,
     * sel is NULL, pos0 is read from *pos_dev when the slot runs, and this
     * token's key and value rows k_new / v_new (one cache row each: k_stride
     * resp. v_stride floats, or n_kv*dk / n_kv*dv when 0; v_new may equal
     * k_new when v aliases k) are written into cache row pos0 first, then
     * attended to as if they had been there. NULL: pos0 as given, the
     * caller has written row pos0 itself. */
    const int64_t *pos_dev;
    const float *k_new, *v_new;
} mk_attn_args;

/* DeepSeek sparse attention's lightning indexer (deepseek_v32, glm_moe_dsa):
 * which past positions each of n query tokens (positions pos0 .. pos0+n-1)
 * attends to. Token t scores every position s <= pos0 + t as
 *   score(t, s) = sum_h (w[t,h] * w_scale) * relu((q[t,h] . k[s]) * scale)
 * (heads in ascending order, f32) and keeps the m = min(topk, pos0 + t + 1)
 * best: higher score first, and on equal scores the LOWER position (the
 * documented tie rule; ReLU makes exact ties common, e.g. all-zero scores).
 * The kept positions go to sel[t*topk ..] in ascending order, the rest of
 * the row is -1. A query therefore selects among its own causal past only,
 * so one prefill, a chunked prefill and cached decode select the same
 * positions. sc [n, topk] is scratch of the backend's choosing. */
typedef struct mk_dsa_args {
    const float *q;   /* [n, n_heads, dim] indexer queries (roped) */
    const float *k;   /* [>= pos0 + n, dim] indexer key cache (normed, roped) */
    const float *w;   /* [n, n_heads] per-head weights (weights_proj x) */
    float w_scale;    /* multiplies w (transformers: n_heads^-0.5) */
    float scale;      /* multiplies q.k before the ReLU (dim^-0.5) */
    int32_t *sel;     /* [n, topk] out */
    float *sc;        /* [n, topk] scratch */
    int64_t n, pos0;
    int n_heads, dim, topk;
} mk_dsa_args;

/* Per-head products with slices of one weight, for MLA's absorbed attention:
 * head h owns the nr rows of w starting at r0 + h*hstep. DeepSeek-V3's kv_b
 * [nH*(dn+dvh), kl] has hstep = dn+dvh, W_k_h at r0 = 0 (nr = dn) and W_v_h
 * at r0 = dn (nr = dvh). Token t of head h reads x + t*x_tok + h*x_head and
 * writes y + t*y_tok + h*y_head; x and y must not overlap. */
typedef struct mk_head_mm_args {
    const mk_wt *w;
    int64_t r0, hstep, nr;
    int n_heads;
    int64_t n;                 /* tokens */
    const float *x;
    int64_t x_tok, x_head;
    float *y;
    int64_t y_tok, y_head;
} mk_head_mm_args;

/* Gated DeltaNet recurrence (Qwen3-Next / Qwen3.5) over n tokens, in f32:
 * per value head h (key head h / (nv/nk)): beta = sigmoid(b), g = -exp(A_log)
 * * softplus(a + dt_bias), q = l2norm(q) / sqrt(dk), k = l2norm(k),
 * S = exp(g) S; S += k (beta (v - S^T k))^T; o = S^T q. */
typedef struct mk_gdn_args {
    const float *q;   /* [n, nk, dk] row stride `stride` */
    const float *k;   /* [n, nk, dk] row stride `stride` */
    const float *v;   /* [n, nv, dv] row stride `stride` */
    int64_t stride;
    const float *a;   /* [n, nv] */
    const float *b;   /* [n, nv] */
    const float *A_log, *dt_bias; /* [nv] */
    float *state;     /* [nv, dk, dv], read and updated */
    float *out;       /* [n, nv, dv] */
    int64_t n;
    int nk, nv, dk, dv;
} mk_gdn_args;

/* Routing of n tokens among E experts (one MoE layer). Writes the k chosen
 * experts per token (descending score, lowest index first on ties) and the
 * weights their outputs are scaled by.
 * MK_ROUTE_SOFTMAX (Qwen): p = softmax(logits) in f32, top-k of p, weights
 *   p renormalised to sum 1 when `norm`.
 * MK_ROUTE_GROUPED_SIGMOID (DeepSeek-V3): s = sigmoid(logits); choice = s +
 *   bias; keep the topk_group of n_group groups with the best sum of their
 *   top-2 choices (others masked to 0), top-k of choice; weights s,
 *   normalised (+1e-20) when `norm`, times `scale`. */
typedef enum mk_route_kind {
    MK_ROUTE_SOFTMAX = 0,
    MK_ROUTE_GROUPED_SIGMOID = 1,
} mk_route_kind;

/* Most experts a router may have (stack scratch of the CPU backend). */
#define MK_BACKEND_MAX_EXPERTS 4096

typedef struct mk_route_args {
    const float *logits; /* [n, E] */
    const float *bias;   /* [E] selection bias, or NULL */
    int32_t *idx;        /* [n, k] out */
    float *w;            /* [n, k] out */
    int64_t n;
    int E, k;
    mk_route_kind kind;
    bool norm;
    int n_group, topk_group; /* grouped only; <= 0 means 1 */
    float scale;             /* grouped only: routed_scaling_factor */
} mk_route_args;

/* One MoE layer for the fused slot (`moe`): y = sum over the k routed
 * experts of w_j * down_e(silu(gate_e x) * up_e x) (+ the shared expert,
 * times sigmoid(shared_gate x) when given), with the routing computed from
 * `route` (its logits/idx/w/n fields are ignored: the slot keeps them
 * itself). experts[0..E) are the layer's views, all of one format and
 * shape; they and the model memory behind them must not change while the
 * backend lives (the engine passes them only with its all-resident expert
 * store). */
typedef struct mk_moe_args {
    const float *x;           /* [n, H] normed input */
    float *y;                 /* [n, H] output (not accumulated) */
    int64_t n;                /* tokens */
    int64_t H;                /* hidden size */
    const mk_wt *router;      /* [E, H] */
    const mk_expert *experts; /* [E] */
    int E, k;
    mk_route_args route;      /* kind, bias, norm, n_group, topk_group, scale */
    const mk_wt *sh_gate, *sh_up, *sh_down; /* shared expert, or NULLs */
    const mk_wt *sh_gate_w;   /* [1, H] shared-expert gate, or NULL */
} mk_moe_args;

/* One copy of host bytes into backend memory (step_chain's uploads). */
typedef struct mk_upload {
    void *dst;       /* backend memory */
    const void *src; /* host memory */
    size_t bytes;
} mk_upload;

typedef struct mk_backend_i {
    const char *name;
    /* Buffers from `alloc` are host memory: the engine may pass caller
     * memory to slots (no staging copies). */
    bool host_mem;
    /* `attention` honours mk_attn_args.window and .sinks (gpt_oss); false:
     * the engine refuses models that need them at create. */
    bool sinks_window;

    /* ---- memory ---- */
    /* `bytes` of zeroed backend memory, 64-byte aligned. Errors name the size. */
    mk_status (*alloc)(void *ctx, size_t bytes, void **out);
    /* Release memory from alloc (NULL ok). */
    void (*buf_free)(void *ctx, void *p);
    /* Copies between host memory and backend memory. */
    void (*upload)(void *ctx, void *dst, const void *host_src, size_t bytes);
    void (*download)(void *ctx, void *host_dst, const void *src, size_t bytes);
    /* Zero `bytes` of backend memory. */
    void (*zero)(void *ctx, void *dst, size_t bytes);
    /* Wait for every queued slot; the first failure since the last sync, or MK_OK. */
    mk_status (*sync)(void *ctx);

    /* ---- data movement ---- */
    /* Strided copy of float runs: for i < n0, j < n1, `width` floats from
     * src + i*ss0 + j*ss1 to dst + i*ds0 + j*ds1 (regions do not overlap).
     * Splits and joins of per-head blocks (gated q | gate, MLA's absorbed
     * query, qwen3_next's grouped projections) are copies of this shape. */
    void (*copy)(void *ctx, float *dst, int64_t ds0, int64_t ds1, const float *src, int64_t ss0,
                 int64_t ss1, int64_t n0, int64_t n1, int64_t width);
    /* dst[i] = src[rows[i]] for i < m, rows of `dim` floats (rows: backend memory). */
    void (*gather)(void *ctx, float *dst, const float *src, const int32_t *rows, int64_t m,
                   int64_t dim);
    /* dst[rows[i]] = src[i] for i < m, rows of `dim` floats (rows distinct). */
    void (*scatter)(void *ctx, float *dst, const float *src, const int32_t *rows, int64_t m,
                    int64_t dim);

    /* Index of the first NaN or infinity among x[0..n), or -1 (synchronous:
     * the engine refuses non-finite activations, naming the block). */
    int64_t (*find_nonfinite)(void *ctx, const float *x, int64_t n);

    /* ---- numeric ---- */
    /* y[n, w.rows] = x[n, w.cols] W^T, any weight format, f32 accumulation. */
    void (*matmul)(void *ctx, const mk_wt *w, const float *x, int64_t n, float *y);
    /* y[n, w.cols] = rows ids[0..n) of W dequantized (embedding lookup; ids
     * in backend memory). */
    void (*get_rows)(void *ctx, const mk_wt *w, const int32_t *ids, int64_t n, float *y);
    /* rows of dim: y = x * rsqrt(mean(x^2) + eps) * g (g NULL: 1). y may be x. */
    void (*rmsnorm)(void *ctx, float *y, int64_t y_stride, const float *x, int64_t x_stride,
                    const float *g, int64_t rows, int64_t dim, float eps);
    /* Rotate the first rot_dim dims of each head in place. cos/sin are
     * [n, rot_dim/2] per token. interleave=false pairs (i, i + rot/2) (HF
     * rotate_half); true pairs (2i, 2i+1) and writes the result in HF's
     * de-interleaved order (evens first), as transformers' deepseek_v3 does. */
    void (*rope)(void *ctx, float *x, int64_t n, int64_t tok_stride, int n_heads,
                 int64_t head_stride, int rot_dim, const float *cos, const float *sin,
                 bool interleave);
    /* Causal attention, see mk_attn_args. */
    void (*attention)(void *ctx, const mk_attn_args *a);
    /* Per head (mk_head_mm_args): y[t,h][0..nr) = W_h x[t,h][0..w.cols). */
    void (*head_matmul)(void *ctx, const mk_head_mm_args *a);
    /* Per head, transposed: y[t,h][0..w.cols) = W_h^T x[t,h][0..nr), i.e.
     * sum_i x[t,h][i] * row i of W_h, accumulated in f32. */
    void (*head_matmul_t)(void *ctx, const mk_head_mm_args *a);
    /* Causal depthwise conv + SiLU over channels: y[t,c] = silu(sum_j w[c,j]
     * u[t-K+1+j, c]) with w [C, K]; state [K-1, C] holds the inputs before
     * u[0] and is advanced by n tokens. u has row stride u_stride; y [n, C]. */
    void (*conv1d_silu)(void *ctx, const float *u, int64_t u_stride, float *y, int64_t n,
                        int64_t C, int K, const float *w, float *state);
    /* Gated DeltaNet recurrence, see mk_gdn_args. */
    void (*gdn)(void *ctx, const mk_gdn_args *a);
    /* rows of dim: x = rmsnorm(x) * g * silu(z) (z rows same shape as x). */
    void (*gated_rmsnorm)(void *ctx, float *x, const float *z, const float *g, int64_t rows,
                          int64_t dim, float eps);
    /* y = silu(gate) * up, n elements (y may alias gate). */
    void (*swiglu)(void *ctx, float *y, const float *gate, const float *up, int64_t n);
    /* (optional) gpt_oss's clamped SwiGLU, for i < n: g = min(gate[i*s],
     * limit), u = clamp(up[i*s], -limit, limit), y[i] = g * sigmoid(alpha
     * g) * (u + 1), in f32. s = 2 reads interleaved gate|up pairs (y must
     * then not overlap them); with s = 1 y may alias up. NULL: the backend
     * cannot run gpt_oss (the engine refuses it at create). */
    void (*clamped_swiglu)(void *ctx, float *y, const float *gate, const float *up, int64_t n,
                           int64_t s, float alpha, float limit);
    /* (optional) the SwiGLU MLPs of `count` routed experts on ONE token
     * (decode): ys[i][0..down.rows) = down_i(silu(gate_i(x)) * up_i(x)),
     * each bitwise what matmul, swiglu, matmul give for that expert alone;
     * g and u are scratch of sum_i gate_i.rows floats each. One parallel
     * region for all gate and up products and one for all down products,
     * instead of three per expert. NULL: the engine runs the experts one at
     * a time. */
    void (*expert_mlps)(void *ctx, const mk_expert *const *ex, int count, const float *x, float *const *ys,
                        float *g, float *u);
    /* (optional, DSA models need it) rows of dim: y = (x - mean) /
     * sqrt(var + eps) * g + b, biased variance, f32 (torch LayerNorm). y may be x. */
    void (*layernorm)(void *ctx, float *y, const float *x, const float *g, const float *b,
                      int64_t rows, int64_t dim, float eps);
    /* (optional, DSA models need it) the indexer's selection, see
     * mk_dsa_args; a backend that sets it honours mk_attn_args.sel. The
     * engine refuses a DSA model on a backend without it. */
    void (*dsa_select)(void *ctx, const mk_dsa_args *a);
    /* x *= sigmoid(gate) element-wise, n elements. */
    void (*sigmoid_mul)(void *ctx, float *x, const float *gate, int64_t n);
    /* y += a * x, n elements. */
    void (*axpy)(void *ctx, float *y, float a, const float *x, int64_t n);
    /* Router scores -> top-k experts and weights, see mk_route_args. */
    void (*route)(void *ctx, const mk_route_args *a);
    /* The weighted sum of each token's k expert outputs:
     * y[t] = sum_j w[t*k + s] * x[t*k + s] with s = order[t*k + j], for
     * t < n, rows of dim floats (x [n*k, dim]; order fixes the summation
     * order, so the result does not depend on when each expert finished). */
    void (*combine)(void *ctx, float *y, const float *x, const float *w, const int32_t *order,
                    int64_t n, int k, int64_t dim);
    /* y[t] += sigmoid(g[t]) * x[t] for t < n rows of dim (g NULL: weight 1):
     * the shared expert's gated add. */
    void (*gated_add)(void *ctx, float *y, const float *g, const float *x, int64_t n,
                      int64_t dim);
    /* ---- optional fused / deferred slots (NULL: the engine composes the
     * slots above instead; the CPU backend leaves them NULL, so its
     * results are those of the general path bit for bit) ---- */
    /* The whole MoE layer in the backend, routing included, with no host
     * round trip. Returns false, having queued nothing, when it does not
     * take this call (shape, format, routing kind, token count): the engine
     * then runs the general path. Decided on the host from the arguments
     * alone (never waits for the device). Each token's row must be bitwise
     * what a one-token call gives it (the engine then uses the slot in
     * batched decode steps, whose rows must not depend on the batch). */
    bool (*moe)(void *ctx, const mk_moe_args *a);
    /* (optional) The routed experts of a MoE layer for a prefill chunk, the
     * routing already in backend memory (idx, w: [n, k] from `route`):
     * y[t] = sum_j w[t*k + s] * down_e(silu(gate_e x_t) * up_e x_t) with
     * e = idx[t*k + s], the k terms summed in ascending expert order as
     * `combine` does (no shared expert; a->router, a->route and a->sh_* are
     * only the layer's description). The backend may group the tokens by
     * expert (one grouped GEMM over all routed rows), so a row is within
     * matmul's bound of the general path's, not bitwise a one-token call's:
     * the engine never offers it a batched decode step. Same conditions on
     * the experts' memory as `moe`. Returns false, having queued nothing,
     * when it does not take the call (format, shape); decided on the host
     * from the arguments alone. */
    bool (*moe_grouped)(void *ctx, const mk_moe_args *a, const int32_t *idx, const float *w);
    /* Queue a check of x[0..n) for NaN or infinity. The first check in
     * queue order that finds one keeps (tag, the lowest index it found,
     * that value); later checks keep nothing until nonfinite_take. Lets
     * the engine check every block without waiting for the device. */
    void (*check_finite)(void *ctx, const float *x, int64_t n, int32_t tag);
    /* Wait for queued work and take the kept finding (clearing it): true
     * and (*tag, *index, *value) when a check found one. Both or neither
     * of check_finite and nonfinite_take are set. */
    bool (*nonfinite_take)(void *ctx, int32_t *tag, int64_t *index, float *value);
    /* Record the slots queued from here to step_end instead of running
     * them, then run the recording as one unit (a CUDA graph: one launch,
     * no per-slot host overhead). Between the two the caller queues only
     * slots that never wait for the device and read no host memory
     * (no upload, download, sync, find_nonfinite or nonfinite_take).
     * step_begin false: nothing is being recorded (slots run as usual).
     * step_end(run false) drops the recording (the caller failed midway);
     * false from step_end(run true): the recording could not be made or
     * run and NOTHING of it ran; the caller queues the same work again
     * without recording. Both or neither are set. */
    bool (*step_begin)(void *ctx);
    bool (*step_end)(void *ctx, bool run);
    /* (optional, with step_begin) Run a recording again without queuing its
     * slots: the same slots with the same arguments, so whatever varies
     * between steps must be read from backend memory the caller updated
     * before (token ids, rotary rows, mk_attn_args.pos_dev). step_last
     * names the recording the last successful step_end ran (0: none);
     * step_replay(id) runs it and returns true while it is still the
     * backend's last recording and nothing it used was freed or forgotten
     * since, else false with nothing run (the caller records again). */
    uint64_t (*step_last)(void *ctx);
    bool (*step_replay)(void *ctx, uint64_t id);
    /* (optional, with step_replay) Decode lookahead (forward.c): the next
     * token's step is queued before this one's result is read, so the
     * device never waits on the host between steps. step_chain queues,
     * after everything queued: the uploads ups[0..nup) (the host bytes are
     * taken now, so the caller may reuse them at once), then, when link_dst
     * is given, `link_bytes` bytes from link_src to link_dst in backend
     * memory (the token id the previous step's argmax chose), then the
     * recording `id` as step_replay runs it, then a copy of the `res_bytes`
     * (<= 16) bytes at `res` and of the kept non-finite finding into result
     * slot `slot` (0 or 1). False when the step did not run (step_replay
     * would refuse, the slot's last step was not taken, the uploads exceed
     * the backend's staging, or the backend must step on the host between
     * replays); the uploads and link may then have been done. step_take
     * waits for the slot's step (also after a failure) and gives its
     * result bytes, whether a non-finite finding was kept when it ended
     * (*found, then *tag, *index, *value as nonfinite_take gives them; the
     * finding stays kept, for nonfinite_take to clear), and whether it ran
     * under other process-wide kernel settings than the backend has now
     * (*stale: step_replay would have refused it; the caller may discard
     * its result and step again, where running the step twice changes
     * nothing else). Returns the first failure since the last
     * sync (cleared, as sync does), or MK_OK. Both or neither are set. */
    bool (*step_chain)(void *ctx, uint64_t id, int slot, const mk_upload *ups, int nup,
                       void *link_dst, const void *link_src, size_t link_bytes, const void *res,
                       size_t res_bytes);
    mk_status (*step_take)(void *ctx, int slot, void *res, size_t res_bytes, bool *found,
                           bool *stale, int32_t *tag, int64_t *index, float *value);
    /* (optional) The residual step between blocks in one launch: x += y
     * (rows of dim), then check_finite(x, rows*dim, tag), then, when xb is
     * given, xb = rmsnorm(x) * g (rows of dim, g NULL: 1). The same values
     * as axpy(x, 1, y), check_finite, rmsnorm. Set only with check_finite. */
    void (*add_rmsnorm)(void *ctx, float *x, const float *y, int64_t rows, int64_t dim, int32_t tag,
                        float *xb, const float *g, float eps);
    /* (optional) Attention's query/key preparation in one launch: for n
     * tokens, q [n, nq, hd] and k [n, nk, hd] (packed rows), each head
     * RMS-normed over hd with qg / kg when qg is given (both or neither),
     * then rotated as rope(.., rot_dim, cos, sin, interleave false). The
     * same values as rmsnorm and rope on q and on k. */
    void (*qk_norm_rope)(void *ctx, float *q, int nq, float *k, int nk, int64_t n, int hd,
                         const float *qg, const float *kg, float eps, int rot_dim, const float *cos,
                         const float *sin);
    /* (optional) ys[i][n, w[i].rows] = x W_i^T for i < count (<= 4): the
     * products of one input with several weights (attention's q, k, v),
     * each as matmul computes it, in as few launches as the backend can. */
    void (*matmul_n)(void *ctx, const mk_wt *const *w, int count, const float *x, int64_t n,
                     float *const *ys);
    /* (optional) out[0] = the index of the largest of x[0..n) (backend
     * memory, the lowest index on ties, as mk_argmax; x finite): greedy
     * decoding without copying the logits to the host. */
    void (*argmax)(void *ctx, const float *x, int64_t n, int32_t *out);
    /* (optional) Batch-invariant matmul for a decode step over several
     * sequences (mk_engine_decode_batch): y[n, w.rows] = x[n, w.cols] W^T
     * where each token's row is bitwise what `matmul` gives for that token
     * alone (n == 1), reading the weight once for the n tokens. NULL: the
     * engine calls `matmul` once per token (the same results, the weight
     * read n times). */
    void (*matmul_each)(void *ctx, const mk_wt *w, const float *x, int64_t n, float *y);
    /* (optional) The SwiGLU MLPs of `count` routed experts of a batched
     * decode step: expert i over its n[i] tokens, x[i] [n_i, gate.cols]
     * -> ys[i] [n_i, down.rows], every row bitwise what matmul_each,
     * swiglu, matmul_each give (so what one token alone gets); g and u are
     * scratch of sum_i n_i * gate_i.rows floats each. A few parallel
     * regions for all of them instead of three per expert. NULL: the
     * engine runs the experts one at a time. */
    void (*expert_mlps_each)(void *ctx, const mk_expert *const *ex, int count,
                             const float *const *x, const int64_t *n, float *const *ys, float *g,
                             float *u);
    /* (optional) The attention of a batched decode step: n sequences (n <=
     * 64), one token each; a[i] is sequence i's call (a[i].n 1, its own
     * caches k/v and pos0, no selection, no device position) with its key
     * and value rows in a[i].k_new / a[i].v_new, which are written into
     * cache row pos0 first (as a replayed step's are); the other fields
     * are equal across i. Sequence i's output is bitwise what `attention`
     * gives for it alone once the caller has written those rows. Returns
     * false, having done nothing, when it does not take the call (the
     * engine then writes the rows and calls `attention` per sequence). */
    bool (*attention_each)(void *ctx, const mk_attn_args *a, int n);
    /* (optional) The causal conv of a batched decode step: n sequences (n
     * <= 64), one token each: row i of u (stride u_stride) through
     * conv1d_silu with state states[i] into row i of y ([n, C]); each row
     * and state bitwise what conv1d_silu gives that sequence alone. False,
     * having done nothing, when it does not take the call (the engine then
     * calls conv1d_silu per sequence). */
    bool (*conv1d_silu_each)(void *ctx, const float *u, int64_t u_stride, float *y, int n, int64_t C,
                             int K, const float *w, float *const *states);
    /* (optional) The delta rule of a batched decode step: a[i] is sequence
     * i's one-token call (a[i].n 1, its own state), the calls alike but for
     * their state and rows, which are row i of one batch each: q, k, v at
     * i * stride, a and b at i * nv, out at i * nv * dv from a[0]'s. Each
     * output and state bitwise what gdn gives that sequence alone. False,
     * having done nothing, when it does not take the call. */
    bool (*gdn_each)(void *ctx, const mk_gdn_args *a, int n);
    /* (optional) The host bytes [p, p + n) were replaced: an expert cache
     * reused a slot buffer for another expert. A backend that keeps device
     * copies of host memory must not use any copy it made from that range
     * again (slots queued before this call still read the old bytes), and
     * from now on the range is volatile: the cache may overwrite it as soon
     * as the slot that used a view into it returns, so a copy made from it
     * must have read the host bytes before that slot returns. Views handed
     * out later at the same addresses are new weights. NULL: the backend
     * reads host memory as it is (the CPU backend). */
    void (*host_changed)(void *ctx, const void *p, size_t n);
    /* (optional) free ctx. */
    void (*free)(void *ctx);
} mk_backend_i;

typedef struct mk_backend mk_backend;

/* Wrap a table and its context (the backend owns ctx from here on, even on
 * failure). */
mk_status mk_backend_create(const mk_backend_i *iface, void *ctx, mk_backend **out);
/* The CPU reference backend over src/kernels, threaded by `pool` (NULL:
 * single thread; the pool must outlive the backend). */
mk_status mk_backend_cpu_create(mk_pool *pool, mk_backend **out);
void mk_backend_free(mk_backend *b); /* NULL ok */
const mk_backend_i *mk_backend_iface(const mk_backend *b);
void *mk_backend_ctx(const mk_backend *b);

#ifdef __cplusplus
}
#endif
#endif
