/* The CUDA backend: every slot of mk_backend_i (backend.h) on one NVIDIA
 * GPU (src/cuda/cuda_backend.cu and its siblings, docs/CUDA.md).
 *
 * Memory from `alloc` is device memory (host_mem false): the engine stages
 * through upload/download. Slots are queued on one stream; the first CUDA
 * error is recorded and returned by `sync` (download and find_nonfinite
 * wait for the stream). Weights arrive as mk_wt views of host memory
 * (mmapped checkpoints): the backend keeps one device copy per distinct view
 * (data, scales and biases), uploaded on first use and resident until the
 * backend is freed or mk_backend_cuda_forget drops it. The host memory
 * behind a view must therefore not change while the backend lives, unless
 * the caller forgets the view first, or an expert cache reports the buffer
 * it reuses (backend.h host_changed: the engine does so for a streaming
 * expert store).
 *
 * Built without CUDA, or on a machine without a usable GPU, create returns
 * MK_E_UNSUPPORTED and says why; nothing else needs an #ifdef. */
#ifndef MOEKIT_BACKEND_CUDA_H
#define MOEKIT_BACKEND_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "moekit/backend.h"
#include "moekit/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A CUDA backend on GPU `device` (0 for the first), which must be sm_90 or
 * newer (the kernels are built for sm_90 plus its PTX). The calling thread's
 * current device is set to it; use the backend from one thread. */
mk_status mk_backend_cuda_create(int device, mk_backend **out);
/* Drop the device copies of every weight view whose host data is
 * `host_data` (waits for queued work first), and the fused MoE slot's
 * state of any layer with an expert there (its stacked copies and every
 * expert view mapped into them). No-op for other backends. */
void mk_backend_cuda_forget(mk_backend *b, const void *host_data);
/* Bytes of weights resident on the device (0 for other backends). */
size_t mk_backend_cuda_weight_bytes(const mk_backend *b);
/* Norm steps (a one-row add_rmsnorm, a one-token qk_norm_rope) folded
 * into the launch that read their result since the backend was made
 * (mk_cuda_set_norm_fold; tests and benchmarks: 0 for other backends). */
int64_t mk_backend_cuda_folds(const mk_backend *b);
/* Device bytes of copies made from host memory an expert cache reuses
 * (ranges reported by host_changed): *live in use, *spare held for the
 * next expert of the same size. live stays within the host cache's size
 * (one expert's copies per slot). Zeros for other backends. */
void mk_backend_cuda_cache_stats(const mk_backend *b, size_t *live, size_t *spare);
/* Record decode steps as CUDA graphs (step_begin / step_end / step_replay)
 * or not (step_begin answers false). On by default: the engine records a
 * single-token step once, its position in device memory, and replays the
 * graph for the following tokens (docs/CUDA.md, bench/RESULTS.md
 * 2026-12-04). Captured and updated every step instead, as before, the
 * 48-layer Qwen3-30B-A3B shape ran 2-10% slower than plain launches. No-op
 * for other backends. */
void mk_backend_cuda_set_graphs(mk_backend *b, bool on);
/* How matmul multiplies a batch of more than 8 tokens (a prefill chunk,
 * an expert's routed rows, a large batched decode step):
 * - MK_CUDA_GEMM_AUTO (the default): MK_CUDA_GEMM_INT8 where the engine's
 *   prefill runs on int8 activations as the device reads that setting
 *   (mk_cuda_prefill_int8: MK_PREFILL_INT8 / mk_kernels_set_prefill_int8 if
 *   forced, else the device's decode setting, on unless --act-int8 off), so
 *   a prefill row gets the CPU's default int8 bits; else MK_CUDA_GEMM_SPLIT.
 *   Read at each call (a setting changed between calls is followed);
 * - MK_CUDA_GEMM_SPLIT: tensor-core bf16 GEMMs (cuBLAS) over
 *   x split exactly into three bf16 parts, and W too unless its values are
 *   bf16 already (bf16, MXFP4, MXFP8, unscaled FP8): 3 or 6 GEMMs whose
 *   products are the float32 ones, float32 sums: the float32 kernels'
 *   bound (docs/CUDA.md "Tensor-core prefill");
 * - MK_CUDA_GEMM_BF16: one GEMM of x and W rounded to bf16 (the serving
 *   engines' arithmetic): 3-6x less tensor work, up to 2^-8 per product;
 * - MK_CUDA_GEMM_GENERIC: the format-generic float32 kernel (slow);
 * - MK_CUDA_GEMM_INT8: MLX affine 4/8-bit weights (groups dividing 512)
 *   against x quantized to int8 by the CPU's int8 prefill rule
 *   (src/kernels/kern_gemm_q8.h, the CPU's default for prefill): exact
 *   int8 x uint8 tensor-core dots, the CPU's float folds, so each row is
 *   the CPU int8 GEMM's bits; the grouped MoE slot too. Other weights as
 *   SPLIT. 1.6-1.75x SPLIT's prefill on an H100 (bench/RESULTS.md session 25).
 * W is dequantized into bf16 tiles of at most scratch_bytes (0: 64 MiB;
 * at least one row), plus x's split (6 bytes per element of the batch) and
 * cuBLAS's 32 MiB workspace: device memory outside the engine's plan. No-op
 * for other backends. */
typedef enum mk_cuda_gemm {
    MK_CUDA_GEMM_SPLIT = 0,
    MK_CUDA_GEMM_BF16 = 1,
    MK_CUDA_GEMM_GENERIC = 2,
    MK_CUDA_GEMM_INT8 = 3,
    MK_CUDA_GEMM_AUTO = 4
} mk_cuda_gemm;
#define MK_CUDA_GEMM_SCRATCH_DEFAULT ((size_t)64 << 20)
/* The prefill chunk `moekit run --backend cuda` (and bench_decode on CUDA)
 * takes when none is given: 4x the CPU's 512, its activations in device
 * memory; the grouped expert GEMMs reuse each weight tile over 4x the
 * routed rows (bench/RESULTS.md session 25: +15% on the 30B cut). */
#define MK_CUDA_PREFILL_CHUNK 2048
void mk_backend_cuda_set_gemm(mk_backend *b, mk_cuda_gemm mode, size_t scratch_bytes);
/* Whether cuBLAS (loaded on first use, not linked) is there for the GEMMs,
 * or why not (batches then run the float32 kernel). Loads it. */
const char *mk_backend_cuda_gemm_status(void);
/* Models whose experts exceed the GPU's memory: the fused MoE slot stacks
 * a layer's experts in device memory while their total stays within
 * `bytes` (SIZE_MAX, the default: while they fit, leaving 2 GiB free for
 * the engine's later allocations) and every later layer's in pinned host
 * memory mapped into the device's address space, which the same kernels
 * read over the bus (zero-copy; results bitwise those of resident
 * experts). Layers are placed in the order of their first use; takes
 * effect for layers not yet stacked. No-op for other backends. */
void mk_backend_cuda_set_expert_vram(mk_backend *b, size_t bytes);
/* Beside the expert budget, `bytes` of device memory for a cache of the most
 * routed experts of the MoE layers kept in host memory (cuda_xcache.cu):
 * the routing counts each expert on the device, every 16 decode steps the
 * counts come back (no wait), decayed scores pick the experts to hold and
 * copies on a second stream fill the slots while the decode goes on; a
 * cached expert is read from device memory, the same bytes, so results
 * are unchanged. Set before the first token (the layers' placement leaves
 * it free; at most what is free less 2 GiB is taken). 0 (default): none.
 * No-op for other backends. */
void mk_backend_cuda_set_expert_cache(mk_backend *b, size_t bytes);
/* The cache's slots, the copies made so far, and the share of the routed
 * experts counted so far that were read from the cache (0 without one). */
void mk_backend_cuda_expert_cache_stats(const mk_backend *b, int *slots, uint64_t *copies, double *hit_share);
/* Stacked expert bytes in device memory and in mapped host memory, and the
 * number of layers in host memory (zeros for other backends). */
void mk_backend_cuda_expert_stats(const mk_backend *b, size_t *vram, size_t *host, int *host_layers);
/* Recorded steps so far: graphs instantiated, graphs updated in place,
 * and recordings replayed (step_replay) (zeros for other backends). */
void mk_backend_cuda_graph_stats(const mk_backend *b, int *built, int *updated, int *replayed);
/* Of those replays, the steps queued through step_chain (the engine's
 * decode lookahead: queued before the previous one's result was read). */
int mk_backend_cuda_chained(const mk_backend *b);
/* For benchmarks: time each replayed step on the GPU (an event before and
 * after its graph; off by default, on resets the sums), and the sum of the
 * timed steps' GPU spans in ms and their count (waits for queued work).
 * The span is the graph's first kernel to its last: a step's wall time
 * beyond it is the host's (the round trip between steps). No-ops (zeros)
 * for other backends. */
void mk_backend_cuda_time_steps(mk_backend *b, bool on);
void mk_backend_cuda_step_time(mk_backend *b, double *ms, int *n);

#ifdef __cplusplus
}
#endif
#endif
