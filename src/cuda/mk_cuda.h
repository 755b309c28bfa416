/* The CUDA module: device buffers, weight upload, GEMV and the fused MoE
 * decode step for one token (docs/CUDA.md).
 *
 * This is the layer the CUDA backend (issue 14, behind issue 10's backend
 * seam) will call; it owns no model state itself. Every pointer documented
 * "device" is device memory (mk_cuda_malloc); weights on the device are
 * described by the same mk_wt view as on the host, with device pointers
 * (mk_cuda_wt_upload makes one). `stream` arguments are a cudaStream_t passed
 * as void* (NULL = the default stream) so that C callers need no CUDA header.
 *
 * Built without CUDA (MK_CUDA=OFF, cuda_stub.c) every call returns
 * MK_E_UNSUPPORTED with the message "built without CUDA"; on a machine with
 * no usable device mk_cuda_probe says why, and callers (tests, the backend
 * choice) fall back or skip.
 *
 * Numerics: inputs and outputs float32; weights dequantized in registers;
 * float32 accumulation (per-lane partial sums, then a warp tree), so results
 * differ from the CPU reference only by summation order (docs/CUDA.md
 * states the bounds the tests check). */
#ifndef MK_CUDA_H
#define MK_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "moekit/status.h"
#include "moekit/weight.h"

#ifdef __cplusplus
extern "C" {
#endif

/* MK_OK and *ndev >= 1 when a usable CUDA device is present (device 0 is
 * used); otherwise MK_E_UNSUPPORTED with the reason (built without CUDA, no
 * device, driver too old, ...) in mk_err_msg() and *ndev = 0. Never aborts. */
mk_status mk_cuda_probe(int *ndev);
/* "NVIDIA H200, sm_90, 132 SMs, 139.8 GiB" for logs and bench records. */
mk_status mk_cuda_describe(char *buf, size_t n);

/* Device memory. `what` names the buffer in the error message. */
mk_status mk_cuda_malloc(void **dptr, size_t bytes, const char *what);
void mk_cuda_free(void *dptr);
mk_status mk_cuda_upload(void *dst, const void *src, size_t bytes);
mk_status mk_cuda_download(void *dst, const void *src, size_t bytes);
/* Fill `bytes` of device memory with byte `v` (tests poison outputs). */
mk_status mk_cuda_memset(void *dst, int v, size_t bytes);
/* Wait for all device work; reports an asynchronous kernel error. */
mk_status mk_cuda_sync(void);
/* The device's copy roofline for benchmarks: median of 10 timed (CUDA
 * events) device-to-device copies of `bytes` (after 3 warm-ups), counted as
 * bytes read + bytes written per second, in *gbs (GB/s). Random-filled
 * buffers; allocates 2 x bytes of device memory for the duration. */
mk_status mk_cuda_copy_bandwidth(size_t bytes, double *gbs);
/* The bus roofline of experts in mapped host memory, for benchmarks: a
 * kernel reading `bytes` of pinned mapped host memory once (median of 10),
 * GB/s. */
mk_status mk_cuda_host_read_bandwidth(size_t bytes, double *gbs);
/* The tensor-core roofline for benchmarks: the best of 10 timed cuBLAS bf16
 * GEMMs (float32 accumulation and output) of [m x k] . [k x n], in TFLOP/s. */
mk_status mk_cuda_bf16_gemm_rate(int m, int n, int k, double *tflops);

/* True when the device kernels take this weight format: F32, BF16, F16,
 * AFFINE with 4 or 8 bits (group 32/64/128, F32/BF16/F16 scales). */
bool mk_cuda_wt_supported(const mk_wt *w);
/* Copy a host weight view to the device: `dev` gets the same view with
 * device pointers (data, scales, biases in separate allocations, each
 * 256-byte aligned). Unsupported formats: MK_E_UNSUPPORTED naming `what`.
 * The copies are cudaMemcpy on the legacy default stream, which may return
 * before the DMA has landed: work on the default stream (or a blocking
 * stream) is ordered after them; a non-blocking stream must wait
 * (mk_cuda_sync) first. The CUDA backend queues its own copies instead. */
mk_status mk_cuda_wt_upload(const mk_wt *host, mk_wt *dev, const char *what);
/* Free what mk_cuda_wt_upload allocated; zeroes the view. */
void mk_cuda_wt_free(mk_wt *dev);
/* Bytes one row of the weight occupies on the device (data + scales + biases). */
size_t mk_cuda_wt_row_bytes_all(const mk_wt *w);

/* y[r] = sum_c W[r,c] x[c] (+ y[r] when accumulate), W a device view,
 * x and y device float32 arrays, x 16-byte aligned. Asynchronous on stream. */
mk_status mk_cuda_gemv(const mk_wt *w, const float *x, float *y, bool accumulate, void *stream);
/* The same for n tokens in one launch: x [n, cols] -> y [n, rows] (n > 1
 * needs cols % 4 == 0), each row bitwise mk_cuda_gemv of its x row alone;
 * the blocks of all tokens that read the same weight rows run together. */
mk_status mk_cuda_gemv_each(const mk_wt *w, const float *x, int64_t n, float *y, bool accumulate, void *stream);
/* y[i] = W_i x for i < count (1..MK_CUDA_GEMV_N) in one launch: device
 * views of one kind (mkc_kind_of) and one column count, each row computed
 * as mk_cuda_gemv computes it (attention's q, k and v products). */
#define MK_CUDA_GEMV_N 4
mk_status mk_cuda_gemv_n(const mk_wt *const *w, int count, const float *x, float *const *y, void *stream);

/* A one-row residual step folded into the kernel that reads its result
 * (mk_cuda_set_norm_fold; docs/CUDA.md "Norm steps folded into their
 * readers"): x += y (as axpy), the deferred non-finite check of x (the
 * CUDA backend's: its finding `key` = tag << 40 | index, ~0 while none,
 * and `val`), and xb = rmsnorm(x) * g (g may be NULL), each bitwise what
 * the backend's add_rmsnorm launch gives. Device pointers; `ticket` a
 * zeroed device word the launch leaves zeroed (the GEMV's; the MoE step
 * uses its workspace's). */
typedef struct mk_cuda_fold {
    float *x;
    const float *y;
    const float *g;
    float *xb;
    unsigned long long *key;
    float *val;
    unsigned *ticket;
    int64_t dim;
    int32_t tag;
    float eps;
} mk_cuda_fold;
/* mk_cuda_gemv_n of x = f's xb with f folded in: *taken false (nothing
 * queued) when the launch cannot take it (x not staged in shared memory,
 * the staged-weight kernel on, no ticket, an output overlapping x or y,
 * dim past 4096 threads' order); the caller then runs the step itself. */
mk_status mk_cuda_gemv_n_fold(const mk_wt *const *w, int count, const mk_cuda_fold *f, float *const *y,
                              void *stream, bool *taken);

/* Kernel generation of mk_cuda_gemv and mk_cuda_moe_step (docs/CUDA.md):
 * 1 the first kernels; 2 (the default: faster on the H200, same tests) the
 * pipelined affine row loads and the down projection spread over (expert,
 * chunk) tasks. Process-wide: set it before launching, not while launches
 * from other threads are being issued. MK_E_ARG for other values. */
mk_status mk_cuda_set_kernels(int gen);
int mk_cuda_kernels(void);

/* Programmatic dependent launch of mk_cuda_moe_step's three kernels
 * (docs/CUDA.md, "The MoE step under programmatic dependent launch"): each
 * is launched while its predecessor runs and loads the weights it can (the
 * router's rows; the routed experts' first down rows) before waiting for
 * it. Same results either way; on by default. Process-wide like
 * mk_cuda_set_kernels. */
void mk_cuda_set_moe_pdl(bool on);
bool mk_cuda_moe_pdl(void);
/* Programmatic dependent launch of the rest of a decode step's kernels
 * (GEMV of one or several tokens, gemv_n, add_rmsnorm, rmsnorm and the
 * gated one, qk_norm_rope, rope, the element-wise ones, attention of one
 * or several sequences and its merge, the conv and Gated DeltaNet decode
 * steps of one or several sequences, the finite check, argmax; docs/CUDA.md
 * "The whole decode step under programmatic dependent launch"): each waits
 * for its predecessor before it reads or writes anything, then lets its
 * successor launch (with mk_cuda_set_step_prefetch, a GEMV first asks L2
 * for its warps' weight rows and an attention block for the cache rows it
 * will walk). Same results either way; on by default (the 30B decode
 * 310.5 -> 322.8 tok/s on the H200, bench/RESULTS.md 2026-12-05). Process-wide
 * like mk_cuda_set_kernels. */
void mk_cuda_set_step_pdl(bool on);
bool mk_cuda_step_pdl(void);
/* Under mk_cuda_set_step_pdl, which kernels ask L2 for what they will read
 * before the wait (MK_CUDA_PREFETCH_* bits): a GEMV its weight rows, an
 * attention block its first cache rows. None by default: with both, a
 * standalone large GEMV and short-context decode measured slower, decode
 * after 2048 tokens 2.5% faster (bench/RESULTS.md 2026-12-05); the bits are
 * for measuring each alone. Process-wide like mk_cuda_set_kernels. */
#define MK_CUDA_PREFETCH_GEMV 1u /* a GEMV's weight rows */
#define MK_CUDA_PREFETCH_ATTN 2u /* an attention block's first cache rows */
void mk_cuda_set_step_prefetch(unsigned what);
unsigned mk_cuda_step_prefetch(void);
/* The CUDA backend's Gated DeltaNet prefill in 16-token chunks with the
 * state in registers (k_gdn_chunk, docs/CUDA.md "Chunked Gated DeltaNet
 * prefill"); off: every token through the recurrent step, as decode. On by
 * default; process-wide, for measuring one against the other. */
void mk_cuda_set_gdn_chunked(bool on);
bool mk_cuda_gdn_chunked(void);
/* MK_CUDA_GEMM_INT8's grouped GEMM through the pipelined kernel
 * (k_grp_mm_q8p: cp.async stages in shared memory) where it takes the
 * shape, else the register-staged one (k_grp_mm_q8); the same bits either
 * way. On by default; process-wide, for measuring one against the other. */
void mk_cuda_set_q8_pipelined(bool on);
bool mk_cuda_q8_pipelined(void);
/* The pipelined int8 kernel's stages for 4-bit weights: 3 (60 KiB of
 * shared memory a block, 3 blocks an SM) or 4 (80 KiB, 2 blocks: more
 * copies in flight); 0 (or any other value): the default, Q8P_STAGES (3
 * since session 25: +6-8% on the 30B cut's prefill on an H100). The same
 * bits either way; process-wide, for measuring one against the other. */
void mk_cuda_set_q8p_stages(int stages);
int mk_cuda_q8p_stages(void);
/* A one-token GEMV (mk_cuda_gemv, mk_cuda_gemv_n) over MLX affine weights
 * through the staged-weight kernel (cuda_gemv_kernel.cuh k_gemv_s): each
 * block copies all its rows' codes, scales and biases into shared memory
 * with cp.async before it waits for x, then computes them with generation
 * 2's lane steps, so the results are bitwise generation 2's. With int8
 * activations on (the default), the same staging with k_gemv_q8's
 * arithmetic instead (k_gemv_q8s, bitwise k_gemv_q8; session 33), where the
 * blocks hold every row in one wave (not lm_head); before session 33 the
 * int8 kernel went first and this switch did nothing under int8. Off by
 * default until measured on a device; process-wide, like
 * mk_cuda_set_kernels. */
void mk_cuda_set_gemv_staged(bool on);
bool mk_cuda_gemv_staged(void);
/* The one-token MoE step's gate/up and down through the staged-weight
 * kernels (cuda_moe_kernels.cuh k_gateup_s, k_down_s: the block's expert
 * rows copied into shared memory with cp.async, all in flight at once,
 * the down rows before the wait), bitwise generation 2's k_gateup and
 * k_down2; layers they do not take keep those. Off by default until
 * measured; process-wide, like mk_cuda_set_kernels. */
void mk_cuda_set_moe_staged(bool on);
bool mk_cuda_moe_staged(void);
/* The one-token MoE step's gate/up on int8 activations through
 * k_gateup_q8s (cuda_moe_kernels.cuh: each warp's row pairs copied into
 * shared memory with cp.async once the routing is read, the blocks sized
 * so that they all run in one wave), bitwise k_gateup_q8's h; layers it
 * does not take keep k_gateup_q8. mk_cuda_set_moe_staged (the float
 * kernels) goes first. Off by default until measured on a device;
 * process-wide; a recorded step is recorded again after a change. */
void mk_cuda_set_gateup_staged(bool on);
bool mk_cuda_gateup_staged(void);
/* The one-token MoE step's routing ranked where it is read (session 35):
 * k_router only writes the logits (no ticket, no last block ranking them),
 * every k_gateup_q8 block ranks them after its wait (block 0 writes the
 * routing out to the workspace and adds to the routing counts) and every
 * k_down2_q8 block before its wait (the router finished before the gate/up
 * blocks passed theirs). Why: a ticket costs about what a kernel boundary
 * does (bench_cuda_sync, ~0.9 us), and the router's last block read the
 * logits back through L2 before ranking them, all on the step's critical
 * path; the gate/up blocks read the routing through L2 anyway. The same
 * route_block over the same logits: the same routing, h and y. Taken for
 * one token on the int8 experts (k_gateup_q8, k_down2_q8) without a
 * residual fold into the router; elsewhere the router ranks as before.
 * Off: measured 2.8 us a layer slower (session 35); process-wide; a
 * recorded step is recorded again after a change. */
void mk_cuda_set_route_late(bool on);
bool mk_cuda_route_late(void);
/* qk_norm_rope over several tokens (prefill chunks, batched steps) with a
 * warp a head row, 8 rows a block (k_qk_norm_rope_w, cuda_norm_kernel.cuh:
 * bitwise k_qk_norm_rope's one block a row) for head dims up to 256. Off:
 * measured neutral on the 30B cut's prefill (session 36); process-wide; a
 * recorded step is recorded again after a change. */
void mk_cuda_set_qk_rows_warp(bool on);
bool mk_cuda_qk_rows_warp(void);
/* MK_CUDA_GEMM_INT8's GEMMs (the grouped MoE slot and the plain matmul) on
 * Hopper's warpgroup MMA (k_grp_mm_q8w, cuda_grouped_q8w.cuh: the same
 * bits, the CPU's int8 rule) where the device runs this build's sm_90a code
 * and the kernel takes the weight (q8w_takes: affine 4 or 8-bit, groups of
 * 32 to 512); elsewhere the kernels as before. Off: measured 9% slower on
 * the 30B cut's prefill (session 36, docs/CUDA.md); process-wide. */
void mk_cuda_set_q8_wgmma(bool on);
bool mk_cuda_q8_wgmma(void);
/* Whether this build's sm_90a code (wgmma) runs on the current device: a
 * one-off probe kernel, cached per device; false without one. */
bool mk_cuda_wgmma_available(void);
/* One wgmma m64n128k32 (s8 x u8) on the device, for checking the layout
 * cuda_wgmma.cuh assumes: A [64][32] int8 and B [128][32] uint8 (row r of
 * B: output column r) placed in shared memory as the kernels place them,
 * and each thread's 64 accumulators written out, thread t's at frag + 64 t
 * (128 threads). MK_OK, or an error when the device cannot run it. */
mk_status mk_cuda_wgmma_probe(const int8_t *A, const uint8_t *B, int32_t *frag);
/* MoE steps launched with the routing ranked late so far (process-wide; a recording's once) */
unsigned long long mk_cuda_route_late_launches(void);
/* k_gemv_q8s launches so far (mk_cuda_set_gemv_staged with int8 activations; process-wide, a
 * recording's once): tests check that the switch took */
unsigned long long mk_cuda_gemv_staged_launches(void);
/* k_gateup_q8s launches so far (process-wide; a recording's once): tests check that the switch took */
unsigned long long mk_cuda_gateup_staged_launches(void);
/* A split decode attention's shares combined by the last share of each
 * (token, head) to finish (an atomic ticket), instead of a k_attn_merge
 * launch: one kernel fewer per layer, the same code, so the same bits. On
 * by default; process-wide, for measuring one against the other. */
void mk_cuda_set_attn_merge_fused(bool on);
bool mk_cuda_attn_merge_fused(void);
/* The tiled prefill attention's generation (1 to 5; MK_E_ARG otherwise):
 * 1 k_attn_tile (float32, 32 queries a block), 2 k_attn_tile2 (float32,
 * 4 queries x 4 keys a thread in registers; measured 449 against 727 us a
 * 512-token chunk of the 30B shape on an H100), 3 k_attn_tile3 (tensor
 * cores on bf16 thirds, cuda_attn_mma.cuh; head dims of 64 or 128, blocks
 * of 4 warps and 64 queries), 4 the same kernel in blocks of 8 warps and
 * 128 queries (each tile's split serves twice the queries; bitwise 3's),
 * 5 generation 4 on tiles split once per chunk into device memory
 * (k_att3_planes; bitwise 3's; where that memory or the shared memory is
 * refused, generation 4 runs).
 * A generation that does not take a shape leaves it to the one before.
 * Generations 1-3 are the same function in another float order; default
 * 3; process-wide, for measuring one against another. */
mk_status mk_cuda_set_attn_tile_gen(int gen);
int mk_cuda_attn_tile_gen(void);
/* Blocks per head a one-token (decode) attention is split over, each
 * walking a share of the cache (1 to 32; default 8): more shares, shorter
 * walks per block and more states to merge. Changes the float order of
 * the merge, not what is summed. Process-wide, for measuring; a recorded
 * step keeps the split it was recorded with. MK_E_ARG outside 1..32. */
mk_status mk_cuda_set_attn_shares(int n);
int mk_cuda_attn_shares(void);
/* The one-token attention grouped by kv head (k_attn_gqa,
 * cuda_attn_gqa.cuh): a block per kv head and share of the cache for all
 * of its query heads, the share's rows copied into shared memory (the
 * first before the wait for the previous kernel), 32 shares a kv head
 * merged by their last. Where it takes the call (no DSA selection, no MLA
 * latent cache, at most 16 query heads a kv head, head dims up to 256,
 * 16-byte rows), else k_attn; a batched step's attention_each likewise
 * (k_attn_gqa_each, each sequence exactly k_attn_gqa's: the batch
 * contract); a held-back q/k norm folds into it as k_attn_gqa<.., true>
 * (mk_cuda_set_qk_fold; the batched step does not fold). The same
 * function as k_attn in another float order.
 * On by default (session 30, an H100: the full-depth 30B decode +4%,
 * +15% after 2048 tokens; docs/CUDA.md); process-wide, for measuring one
 * against the other; a recorded step is recorded again after a change. */
void mk_cuda_set_attn_gqa(bool on);
bool mk_cuda_attn_gqa(void);
/* The int8 decode products' rows primed early (k_gemv_q8: before its PDL
 * wait, the weights not depending on the previous kernel; k_gateup_q8:
 * once the routing is read, before x is staged) instead of after x is
 * staged: the same sums in the same order, their loads' latency overlapped
 * with what comes first. On by default since session 32 (-3.4% of the
 * step's GPU span on an H100, docs/CUDA.md); process-wide; a recorded step
 * is recorded again after a change. */
void mk_cuda_set_q8_early(bool on);
bool mk_cuda_q8_early(void);
/* The decode lookahead (the backend's step_chain / step_take: the next
 * greedy step queued before this one's token is read, its token linked on
 * the device; docs/CUDA.md "Decode lookahead"). Off by default until its
 * tests have passed and it has been measured on a device: step_chain then
 * refuses and the engine steps one at a time as before. Process-wide; read
 * at each step_chain. */
void mk_cuda_set_lookahead(bool on);
bool mk_cuda_lookahead(void);
/* Tests only: the next n step_take calls (process-wide) report their step
 * stale, as if a process-wide switch had changed while it ran, so a test can
 * reach the engine's handling of a stale step (forward.c la_run) at a chosen
 * step; 0 disarms. */
void mk_cuda_test_stale(int n);
/* k_attn_gqa and k_attn_gqa_each launches so far (process-wide): tests and benches check that the
 * switch took */
unsigned long long mk_cuda_attn_gqa_launches(void);
/* The CUDA backend's one-row add_rmsnorm (x += y, its check, xb =
 * rmsnorm(x) * g) folded into the next launch when that launch reads xb
 * and can take it (mk_cuda_gemv_n_fold: the q/k/v GEMV of a decode step,
 * or a single GEMV; mk_cuda_moe_step_fold: the MoE router), and its
 * one-token qk_norm_rope into the attention of that q and new k row: one
 * kernel fewer each, the same bits. Off by default until measured;
 * process-wide, like mk_cuda_set_kernels. */
void mk_cuda_set_norm_fold(bool on);
bool mk_cuda_norm_fold(void);
/* Which readers take the held-back residual step: MK_CUDA_NORM_FOLD_ALL
 * (mk_cuda_set_norm_fold(true): the GEMVs, the router, and the q/k norms
 * into the attention), MK_CUDA_NORM_FOLD_ROUTER (the MoE router only: its
 * 16-odd blocks norm the row in parallel, where a GEMV's hundreds of blocks
 * each norming it cost more than the launch saved; bench/RESULTS.md
 * session 22), 0 none. mk_cuda_norm_fold() is mode != 0. */
#define MK_CUDA_NORM_FOLD_ALL 1
#define MK_CUDA_NORM_FOLD_ROUTER 2
void mk_cuda_set_norm_fold_mode(int mode);
int mk_cuda_norm_fold_mode(void);
/* The one-token qk_norm_rope folded into the attention alone (what
 * mk_cuda_set_norm_fold also does), the residual steps left as their own
 * launches: the residual folds cost more than the launches they save
 * (every reader block norms the whole row; bench/RESULTS.md session 22),
 * the q/k fold's blocks norm one head each (k_attn) or their G query
 * heads and key head, a warp a head (k_attn_gqa). Off: measured slower
 * under both kernels (sessions 24 and 32, docs/CUDA.md); process-wide. */
void mk_cuda_set_qk_fold(bool on);
bool mk_cuda_qk_fold(void);
/* Decode products over MLX affine 4/8-bit weights on int8 activations:
 * the CPU's decode rule (kernels.h mk_kernels_set_int8; src/cuda/
 * cuda_q8x.cuh), x quantized in blocks of 32 to the CPU's bits, the codes
 * multiplied four at a time (dp4a). Taken by the GEMVs (mk_cuda_gemv,
 * mk_cuda_gemv_n and their folds) and the MoE step (router, experts'
 * gate/up over x and down over their h; one token or a batch, each token's
 * rows its one-token step's). Within float rounding of the CPU's int8
 * decode products, not the float kernels' bits. By default it follows the
 * engine's setting (mk_kernels_int8_setting: on, as the CLI's --act-int8
 * default, off when --act-int8 off / MK_ACT_INT8=0 forced float; measured
 * +13% decode on an H100, bench/RESULTS.md 2026-12-06);
 * mk_cuda_set_act_int8 forces it either way, mk_cuda_reset_act_int8
 * returns to following. Process-wide. */
void mk_cuda_set_act_int8(bool on);
void mk_cuda_reset_act_int8(void);
bool mk_cuda_act_int8(void);
/* The setting behind mk_cuda_act_int8: -1 following, 0 / 1 forced; and
 * putting one back (a caller that forces it for a while) */
int mk_cuda_act_int8_setting(void);
void mk_cuda_restore_act_int8(int setting);
/* Whether the device's batches (prefill chunks past the one-token-step
 * sizes, the grouped MoE) run the CPU's int8 prefill rule under the
 * backend's default GEMM mode (backend_cuda.h MK_CUDA_GEMM_AUTO): the
 * engine's prefill setting when forced (mk_kernels_prefill_int8_setting:
 * MK_PREFILL_INT8, --verify's float reference), else mk_cuda_act_int8, as
 * the CPU's prefill follows its decode setting. */
bool mk_cuda_prefill_int8(void);

/* ---- one MoE block for one token ---------------------------------------- */

typedef enum mk_cuda_score {
    MK_CUDA_SCORE_SOFTMAX = 0, /* Qwen3-MoE, Qwen3-Next, Qwen3.5: softmax over all experts */
    MK_CUDA_SCORE_SIGMOID = 1  /* sigmoid per expert (DeepSeek-V3, Kimi-K2: with sel_bias and groups) */
} mk_cuda_score;

/* Device weights of one MoE block, MLX's stacked layout: the experts' gate
 * and up are one [E*I, H] matrix each (expert e owns rows e*I..e*I+I-1),
 * down is [E*H, I]. The shared expert (optional) is three plain matrices
 * [Is, H], [Is, H], [H, Is]; its gate (optional) a [1, H] row whose
 * sigmoid scales the shared output.
 *   y = sum_j w_j * down_e(silu(gate_e x) * up_e x)  over the top-k experts e
 *     + sigmoid(shared_gate x) * shared_down(silu(shared_gate_proj x) * shared_up x)
 * Routing: s = softmax(router x) or sigmoid(router x); top-k of s (lowest
 * index first on ties, as the CPU engine); w = s_top, divided by their sum
 * when norm_topk (+1e-20 for sigmoid scoring, as DeepSeek-V3), times scale.
 * Sigmoid scoring may add DeepSeek-V3's group-limited choice (backend.h's
 * MK_ROUTE_GROUPED_SIGMOID): the experts are chosen by c = s + sel_bias
 * among the topk_group of n_group groups with the best sum of their two
 * best c (the other groups' c set to 0), the weights are the unbiased s.
 * Experts and shared expert must share one format (bits, group, scale
 * dtype); router and shared gate may each have any supported format. */
typedef struct mk_cuda_moe {
    int64_t hidden, n_experts, top_k, inter, shared_inter;
    mk_cuda_score score;
    bool norm_topk;
    float scale; /* routed_scaling_factor; 1 for Qwen */
    const float *sel_bias; /* sigmoid only: device float32[n_experts] selection bias
                              (e_score_correction_bias), or NULL */
    int n_group, topk_group; /* sigmoid only: group-limited choice; <= 1: none. n_group
                                <= 64 and dividing n_experts into groups of >= 2 */
    mk_wt router;
    mk_wt gate, up, down;
    bool has_shared, has_shared_gate;
    mk_wt sh_gate, sh_up, sh_down, sh_gate_w;
    /* (optional) a VRAM cache of some of the experts (the CUDA backend keeps
     * the hottest experts of layers it holds in host memory there):
     * slot_of, device int32[n_experts], names the cache slot holding expert
     * e (rows slot*inter.. of cgate and cup, slot*hidden.. of cdown, stored
     * exactly as gate/up/down) or -1; the kernels read a cached expert from
     * the cache, the same bytes, so the same results. The step reads
     * slot_of once, in the routing: change it only between steps, in stream
     * order. NULL: no cache. */
    const int32_t *slot_of;
    mk_wt cgate, cup, cdown;
    /* (optional) device int32[n_experts]: the routing adds 1 for every
     * chosen expert (the cache's frequency counts). NULL: not counted. */
    int32_t *counts;
} mk_cuda_moe;

typedef struct mk_cuda_moe_ws mk_cuda_moe_ws;

/* Validate shapes and formats (the message names the matrix, expected vs
 * found). top_k <= 32, n_experts <= 1024. */
mk_status mk_cuda_moe_check(const mk_cuda_moe *m);
/* Device scratch for one MoE step of this shape (router logits, routing,
 * the k expert activations); reusable across layers of the same shape.
 * _n: for steps of up to nmax (<= MK_CUDA_MOE_TOKENS) tokens. */
#define MK_CUDA_MOE_TOKENS 64
mk_status mk_cuda_moe_ws_new(const mk_cuda_moe *m, mk_cuda_moe_ws **ws);
mk_status mk_cuda_moe_ws_new_n(const mk_cuda_moe *m, int64_t nmax, mk_cuda_moe_ws **ws);
/* The workspace zeroed again in stream order (its tickets start at 0): the
 * _new functions zero it on the legacy default stream, which a
 * non-blocking stream is not ordered after. */
mk_status mk_cuda_moe_ws_zero(mk_cuda_moe_ws *ws, void *stream);
void mk_cuda_moe_ws_free(mk_cuda_moe_ws *ws);
/* y = moe(x) (y += moe(x) when accumulate: the residual add), x and y
 * device float32[hidden], x 16-byte aligned; y may be x. Three kernels, no host
 * round trip and no synchronisation: the routing stays on the device, so
 * the step can be captured in a CUDA graph. */
mk_status mk_cuda_moe_step(const mk_cuda_moe *m, mk_cuda_moe_ws *ws, const float *x, float *y,
                           bool accumulate, void *stream);
/* The step of x = f's xb with f folded into its router (f->ticket unused:
 * the router's own): *taken false (nothing queued) when the router cannot
 * take it (x of hidden floats past its shared memory, the width's norm
 * order past 4 threads' terms each). */
mk_status mk_cuda_moe_step_fold(const mk_cuda_moe *m, mk_cuda_moe_ws *ws, const mk_cuda_fold *f, float *y,
                                bool accumulate, void *stream, bool *taken);
/* The step for n tokens at once (a batched decode step: x and y [n, hidden],
 * n <= the workspace's nmax; n > 1 needs hidden % 4 == 0): the same three
 * kernels, each launched once with every token's blocks, so the weight rows
 * the tokens share are read from DRAM about once. Row t is bitwise
 * mk_cuda_moe_step on row t alone (each block does the one-token step's
 * arithmetic for one token); mk_cuda_moe_routing gives token 0's routing. */
mk_status mk_cuda_moe_step_n(const mk_cuda_moe *m, mk_cuda_moe_ws *ws, const float *x, float *y, int64_t n,
                             bool accumulate, void *stream);
/* Copy the last step's routing to the host (tests, --verify, profiling):
 * idx[top_k] expert ids in selection order, w[top_k] their weights. Syncs. */
mk_status mk_cuda_moe_routing(const mk_cuda_moe_ws *ws, int32_t *idx, float *w);
/* Copy the last step's expert activations of token 0 to the host (tests):
 * h[top_k * inter] (choice by choice, silu(gate x) * up x) and, with a
 * shared expert, hs[shared_inter] (hs may be NULL otherwise). Syncs. */
mk_status mk_cuda_moe_activations(const mk_cuda_moe_ws *ws, float *h, float *hs);
/* Copy the last step's VRAM cache slots of token 0 to the host (tests):
 * loc[top_k], the slot of each choice (slot_of of its expert), or -1 for
 * an expert read from its resident stack. Meaningful only after a step
 * with slot_of set. Syncs. */
mk_status mk_cuda_moe_cache_slots(const mk_cuda_moe_ws *ws, int32_t *loc);
/* Weight bytes one step reads: router + shared gate + k routed experts +
 * shared expert (data, scales, biases). The roofline numerator. */
size_t mk_cuda_moe_bytes(const mk_cuda_moe *m);

/* ---- a stack of MoE layers in one persistent kernel ---------------------- */

/* x += moe_l(x) for l = 0..L-1 in ONE launch: a cooperative (co-resident)
 * grid that runs router, routing, gate/up and down of every layer with
 * grid-wide barriers between them instead of kernel boundaries (the
 * per-kernel launch and ramp latency dominates mk_cuda_moe_step at batch
 * 1: bench/RESULTS.md). All layers one shape; x and the k experts'
 * activations must fit in 48 KB of shared memory (else MK_E_UNSUPPORTED:
 * use mk_cuda_moe_step per layer). Same kernels' arithmetic as the step.
 * Attention between the MoE blocks is not in it yet (issue 14). */
typedef struct mk_cuda_stack mk_cuda_stack;
mk_status mk_cuda_stack_new(const mk_cuda_moe *layers, int L, mk_cuda_stack **out);
void mk_cuda_stack_free(mk_cuda_stack *s);
/* The workspace the stack uses (mk_cuda_moe_routing on it gives the last
 * layer's routing). */
mk_cuda_moe_ws *mk_cuda_stack_ws(mk_cuda_stack *s);
mk_status mk_cuda_stack_run(mk_cuda_stack *s, float *x, void *stream);

#ifdef __cplusplus
}
#endif
#endif
