/* The CUDA backend's deferred non-finite checks' device state and the
 * launch's closing step the checking kernels share (its own header: the
 * backend's context, k_add_rmsnorm's header and the host emulation of
 * that kernel all need it). The includer of mkb_nfl_close provides
 * cuda_impl.cuh (or the emulation's emu_impl.h). */
#ifndef MK_CUDA_NFL_CUH
#define MK_CUDA_NFL_CUH

/* Device state of the deferred non-finite checks: `key` is the kept finding
 * (tag << 40 | index, ~0 when none) and `val` its value; `cand` and
 * `ticket` are one launch's scratch (reset by its last block). */
struct mkb_nfl {
    unsigned long long key, cand;
    float val;
    unsigned ticket;
};

#if defined(__CUDACC__) || defined(MK_CUDA_EMU)
#include "cuda/cuda_ticket.cuh"

/* The end of a checking launch of several blocks (k_check_finite,
 * k_add_rmsnorm over rows): every block has put its lowest non-finite
 * index of x into f->cand; the last block in (atomic ticket) keeps (tag,
 * cand, x[cand]) when nothing was kept before and resets the scratch for
 * the next launch. Every thread of every block calls it. x[cand] is read
 * through L2: another block of the launch may have written it. */
__device__ __forceinline__ void mkb_nfl_close(mkb_nfl *f, const float *x, unsigned long long tag) {
    if (!mkc_last_in(&f->ticket, gridDim.x) || threadIdx.x != 0)
        return;
    const unsigned long long cand = atomicExch(&f->cand, ~0ull);
    if (cand != ~0ull && f->key == ~0ull) {
        f->val = __ldcg(x + cand);
        f->key = tag << 40 | cand;
    }
    f->ticket = 0u;
}
#endif

#endif
