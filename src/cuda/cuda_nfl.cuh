/* The CUDA backend's deferred non-finite checks' device state (its own
 * header: the backend's context, k_add_rmsnorm's header and the host
 * emulation of that kernel all need it, not the kernels). */
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

#endif
