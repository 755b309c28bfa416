/* The CUDA backend (include/moekit/backend_cuda.h): its slot table, device
 * memory, data movement, error recording and the resident weight map.
 *
 * Every slot is queued on the backend's one stream (non-blocking, so other
 * streams' work does not serialise with it); a launch or copy failure is
 * recorded in an mk_err_slot (the first one wins) and reported by `sync`,
 * which waits for the stream. `download` and `find_nonfinite` wait too:
 * their callers read host memory right after.
 *
 * Weights: the map keys every field of the host mk_wt view (data, scales
 * and biases pointers, format and shape), bucketed by the data pointer; a
 * view seen for the first time is copied to cudaMalloc'ed memory
 * (synchronously: it is once per weight) and stays resident. The
 * per-element dequantizer (mkb_wel) needs its format's code tables on the
 * device: they are built here from dtype.h's conversions, the same ones
 * the CPU's tables come from. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_backend.cuh"
#include "moekit/dtype.h"

extern "C" {
#include "core/alloc.h"
}

/* ---- errors ---------------------------------------------------------------- */

mk_status mkb_fail(mkb_ctx *c, mk_status s) {
    return mk_err_slot_set(&c->err, s);
}

void mkb_launched(mkb_ctx *c, const char *what) {
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        mkb_fail(c, mkc_fail(e, what));
}

void mkb_ck(mkb_ctx *c, cudaError_t e, const char *what) {
    if (e != cudaSuccess)
        mkb_fail(c, mkc_fail(e, what));
}

/* ---- memory ---------------------------------------------------------------- */

static mk_status cu_alloc(void *ctx, size_t bytes, void **out) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    *out = NULL;
    size_t n = (bytes + 63) & ~(size_t)63; /* cudaMalloc is 256-byte aligned */
    cudaError_t e = cudaMalloc(out, n ? n : 64);
    if (e != cudaSuccess) {
        *out = NULL;
        (void)cudaGetLastError();
        return mk_err(e == cudaErrorMemoryAllocation ? MK_E_NOMEM : MK_E_INTERNAL,
                      "CUDA backend: cannot allocate %zu bytes of device memory: %s", bytes, cudaGetErrorString(e));
    }
    e = cudaMemsetAsync(*out, 0, n ? n : 64, c->s);
    if (e != cudaSuccess) {
        (void)cudaFree(*out);
        *out = NULL;
        return mkc_fail(e, "zeroing new device memory");
    }
    return MK_OK;
}

static void cu_buf_free(void *ctx, void *p) {
    if (p) {
        mkb_graph_free((mkb_ctx *)ctx); /* a recorded step may use it */
        (void)cudaFree(p); /* waits for work that may still use it */
    }
}

/* A host round trip while a step is being recorded breaks the recording
 * (the step is then queued again unrecorded): record why, for step_end. */
static bool recording_refuses(mkb_ctx *c, const char *what) {
    if (!c->recording)
        return false;
    mkb_fail(c, mk_err(MK_E_INTERNAL, "CUDA backend: %s while a step is being recorded", what));
    return true;
}

static void cu_upload(void *ctx, void *dst, const void *src, size_t bytes) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (recording_refuses(c, "upload"))
        return;
    if (bytes) /* pageable source: returns once the source is staged */
        mkb_ck(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->s), "upload to the device");
}

static void cu_download(void *ctx, void *dst, const void *src, size_t bytes) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (!bytes || recording_refuses(c, "download"))
        return;
    mkb_ck(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->s), "download from the device");
    mkb_ck(c, cudaStreamSynchronize(c->s), "download from the device");
}

static void cu_zero(void *ctx, void *dst, size_t bytes) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (bytes)
        mkb_ck(c, cudaMemsetAsync(dst, 0, bytes, c->s), "zeroing device memory");
}

static mk_status cu_sync(void *ctx) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (recording_refuses(c, "sync"))
        return mk_err(MK_E_INTERNAL, "CUDA backend: sync while a step is being recorded");
    mkb_ck(c, cudaStreamSynchronize(c->s), "running queued device work");
    mk_status s = mk_err_slot_raise(&c->err);
    c->err.st = MK_OK;
    c->err.msg[0] = '\0';
    return s;
}

/* ---- data movement --------------------------------------------------------- */

__global__ void k_copy(float *dst, int64_t ds0, int64_t ds1, const float *src, int64_t ss0, int64_t ss1, int64_t n1,
                       int64_t width, int64_t total) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t w = i % width, ij = i / width, j = ij % n1, a = ij / n1;
        dst[a * ds0 + j * ds1 + w] = src[a * ss0 + j * ss1 + w];
    }
}

static void cu_copy(void *ctx, float *dst, int64_t ds0, int64_t ds1, const float *src, int64_t ss0, int64_t ss1,
                    int64_t n0, int64_t n1, int64_t width) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    const int64_t total = n0 * n1 * width;
    if (total <= 0)
        return;
    k_copy<<<mkb_blocks(total, 256), 256, 0, c->s>>>(dst, ds0, ds1, src, ss0, ss1, n1, width, total);
    mkb_launched(c, "copy");
}

/* gather (scatter = 0): dst[i] = src[rows[i]]; scatter: dst[rows[i]] = src[i] */
__global__ void k_rows(float *dst, const float *src, const int32_t *rows, int64_t dim, int64_t total, int scatter) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t m = i / dim, d = i % dim, r = rows[m];
        if (scatter)
            dst[r * dim + d] = src[m * dim + d];
        else
            dst[m * dim + d] = src[r * dim + d];
    }
}

static void cu_gather(void *ctx, float *dst, const float *src, const int32_t *rows, int64_t m, int64_t dim) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (m * dim <= 0)
        return;
    k_rows<<<mkb_blocks(m * dim, 256), 256, 0, c->s>>>(dst, src, rows, dim, m * dim, 0);
    mkb_launched(c, "gather");
}

static void cu_scatter(void *ctx, float *dst, const float *src, const int32_t *rows, int64_t m, int64_t dim) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (m * dim <= 0)
        return;
    k_rows<<<mkb_blocks(m * dim, 256), 256, 0, c->s>>>(dst, src, rows, dim, m * dim, 1);
    mkb_launched(c, "scatter");
}

__global__ void k_nonfinite(const float *x, int64_t n, unsigned long long *first) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        if (!isfinite(x[i]))
            atomicMin(first, (unsigned long long)i);
}

static int64_t cu_find_nonfinite(void *ctx, const float *x, int64_t n) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (n <= 0 || recording_refuses(c, "find_nonfinite"))
        return -1;
    unsigned long long first = ~0ull;
    mkb_ck(c, cudaMemcpyAsync(c->nf, &first, sizeof first, cudaMemcpyHostToDevice, c->s), "find_nonfinite");
    unsigned blocks = mkb_blocks(n, 256);
    if (blocks > 4096)
        blocks = 4096; /* grid-stride loop */
    k_nonfinite<<<blocks, 256, 0, c->s>>>(x, n, c->nf);
    mkb_launched(c, "find_nonfinite");
    mkb_ck(c, cudaMemcpyAsync(&first, c->nf, sizeof first, cudaMemcpyDeviceToHost, c->s), "find_nonfinite");
    mkb_ck(c, cudaStreamSynchronize(c->s), "find_nonfinite");
    return c->err.st != MK_OK || first == ~0ull ? -1 : (int64_t)first;
}

/* Deferred checks. Every block scans a grid-stride share of x unless an
 * earlier check already kept a finding (then the launch does nothing);
 * the lowest non-finite index goes to `cand`; the last block (atomic
 * ticket, mkb_nfl_close) keeps (tag, cand, x[cand]) when nothing was kept
 * and resets the scratch for the next launch. x is not written before the
 * last block reads it: the next slot runs after this launch (stream
 * order). */
__global__ void k_check_finite(const float *x, int64_t n, unsigned long long tag, mkb_nfl *f) {
    mkc_pdl_enter(); /* launched under PDL (mkb_launch) */
    if (__ldcg(&f->key) == ~0ull)
        for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
            if (!isfinite(x[i])) {
                atomicMin(&f->cand, (unsigned long long)i);
                break; /* this thread's later indices are larger */
            }
    mkb_nfl_close(f, x, tag);
}

static void cu_check_finite(void *ctx, const float *x, int64_t n, int32_t tag) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (n <= 0)
        return;
    if (tag < 0 || n >= (1ll << 40)) {
        mkb_fail(c, mk_err(MK_E_ARG, "check_finite: tag %d or size %lld out of range", (int)tag, (long long)n));
        return;
    }
    unsigned blocks = mkb_blocks(n, 256);
    if (blocks > 264)
        blocks = 264; /* grid-stride loop: two blocks per SM of an H200 */
    mkb_launch(c, "check_finite", k_check_finite, dim3(blocks), dim3(256), 0, x, n, (unsigned long long)tag, c->nfl);
}

static bool cu_nonfinite_take(void *ctx, int32_t *tag, int64_t *index, float *value) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (recording_refuses(c, "nonfinite_take"))
        return false;
    mkb_nfl h;
    mkb_ck(c, cudaMemcpyAsync(&h, c->nfl, sizeof h, cudaMemcpyDeviceToHost, c->s), "reading the non-finite check");
    mkb_ck(c, cudaStreamSynchronize(c->s), "reading the non-finite check");
    if (c->err.st != MK_OK || h.key == ~0ull)
        return false; /* a recorded failure is sync's to report */
    mkb_ck(c, cudaMemsetAsync(&c->nfl->key, 0xff, sizeof h.key, c->s), "clearing the non-finite check");
    *tag = (int32_t)(h.key >> 40);
    *index = (int64_t)(h.key & ((1ull << 40) - 1));
    *value = h.val;
    return true;
}

/* ---- resident weights ------------------------------------------------------- */

static bool same_view(const mk_wt *a, const mk_wt *b) {
    return a->data == b->data && a->scales == b->scales && a->biases == b->biases && a->fmt == b->fmt &&
           a->rows == b->rows && a->cols == b->cols && a->sdtype == b->sdtype && a->bits == b->bits &&
           a->group == b->group && a->block_r == b->block_r && a->block_c == b->block_c &&
           a->global_scale == b->global_scale;
}

static size_t bucket(const mkb_ctx *c, const void *p) {
    uint64_t h = (uint64_t)(uintptr_t)p * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 32) & (c->nb - 1);
}

static void entry_free(mkb_entry *e) {
    if (!e->borrowed) {
        mk_cuda_free((void *)e->dev.data);
        mk_cuda_free((void *)e->dev.scales);
        mk_cuda_free((void *)e->dev.biases);
    }
    free(e);
}

/* A device copy of `bytes` at host p (NULL when bytes == 0), queued on the
 * backend's stream so that the slots queued after it read it whole. (A plain
 * cudaMemcpy from pageable memory may return before its DMA has landed, and
 * the legacy stream it runs on does not order with a non-blocking one: the
 * first fixture runs on the H200 read half-uploaded weights that way.) */
static mk_status up(mkb_ctx *c, const void *p, size_t bytes, const void **out, const char *what) {
    *out = NULL;
    if (!bytes || !p)
        return MK_OK;
    void *d = NULL;
    MK_TRY(mk_cuda_malloc(&d, bytes, what));
    cudaError_t e = cudaMemcpyAsync(d, p, bytes, cudaMemcpyHostToDevice, c->s);
    if (e != cudaSuccess) {
        mk_cuda_free(d);
        return mkc_fail(e, "copying a weight to the device");
    }
    *out = d;
    return MK_OK;
}

static mk_status grow(mkb_ctx *c) {
    size_t nb = c->nb * 2;
    mkb_entry **t = (mkb_entry **)mk_calloc(nb, sizeof *t);
    if (!t)
        return mk_err(MK_E_NOMEM, "CUDA backend: no memory for a weight map of %zu buckets", nb);
    size_t old = c->nb;
    mkb_entry **ot = c->tab;
    c->tab = t;
    c->nb = nb;
    for (size_t i = 0; i < old; i++)
        for (mkb_entry *e = ot[i], *nx; e; e = nx) {
            nx = e->next;
            size_t b = bucket(c, e->host.data);
            e->next = t[b];
            t[b] = e;
        }
    free(ot);
    return MK_OK;
}

static const mkb_entry *entry_insert(mkb_ctx *c, mkb_entry *e, size_t b);

const mkb_entry *mkb_weight_alias(mkb_ctx *c, const mk_wt *w, const mk_wt *dev) {
    size_t b = bucket(c, w->data);
    for (mkb_entry *e = c->tab[b]; e; e = e->next)
        if (same_view(&e->host, w))
            return e;
    mkb_entry *e = (mkb_entry *)mk_calloc(1, sizeof *e);
    if (!e) {
        mkb_fail(c, mk_err(MK_E_NOMEM, "CUDA backend: no memory for a weight map entry"));
        return NULL;
    }
    e->host = *w;
    e->dev = *dev;
    e->borrowed = true;
    return entry_insert(c, e, b);
}

void mkb_weight_unalias(mkb_ctx *c, const mk_wt *w) {
    for (mkb_entry **pp = &c->tab[bucket(c, w->data)]; *pp;) {
        mkb_entry *e = *pp;
        if (e->borrowed && same_view(&e->host, w)) {
            *pp = e->next;
            c->n--;
            entry_free(e);
        } else {
            pp = &e->next;
        }
    }
}

/* Device bytes of a view's data, scales and biases (0: none). */
static void sizes_of(const mk_wt *w, size_t sz[3]) {
    const size_t ns = mk_wt_scale_bytes(w);
    sz[0] = (size_t)w->rows * mk_wt_row_bytes(w);
    sz[1] = w->scales ? ns : 0;
    sz[2] = w->fmt == MK_WF_AFFINE && w->biases ? ns : 0;
}

/* Whether host address q lies in memory an expert cache reuses (a range
 * host_changed reported): a copy from there must have read the host bytes
 * before the slot that made it returns. */
static bool is_volatile(const mkb_ctx *c, const void *q) {
    const char *a = (const char *)q;
    for (int i = 0; i < c->nvr; i++)
        if (a >= c->vr[i].p && a - c->vr[i].p < (ptrdiff_t)c->vr[i].n)
            return true;
    return false;
}

/* A spare entry (dropped by host_changed) whose device arrays have w's
 * sizes, taken off the spare list; NULL when none. */
static mkb_entry *take_spare(mkb_ctx *c, const mk_wt *w) {
    size_t want[3], have[3];
    sizes_of(w, want);
    for (mkb_entry **pp = &c->spare; *pp; pp = &(*pp)->next) {
        sizes_of(&(*pp)->host, have);
        if (memcmp(want, have, sizeof want))
            continue;
        mkb_entry *e = *pp;
        *pp = e->next;
        c->nspare--;
        e->next = NULL;
        return e;
    }
    return NULL;
}

const mkb_entry *mkb_weight(mkb_ctx *c, const mk_wt *w) {
    size_t b = bucket(c, w->data);
    for (mkb_entry *e = c->tab[b]; e; e = e->next)
        if (same_view(&e->host, w))
            return e;
    char what[96];
    snprintf(what, sizeof what, "a %lldx%lld weight (format %d)", (long long)w->rows, (long long)w->cols, (int)w->fmt);
    if (recording_refuses(c, "a weight's first upload"))
        return NULL;
    mk_status s = mk_wt_check(w, what);
    if (s != MK_OK) {
        mkb_fail(c, s);
        return NULL;
    }
    size_t sz[3];
    sizes_of(w, sz);
    const void *src[3] = {w->data, w->scales, w->biases};
    mkb_entry *e = take_spare(c, w);
    if (e) { /* the device memory of a weight whose host bytes changed, after every
                slot queued before that read it (stream order) */
        const void *dv[3] = {e->dev.data, e->dev.scales, e->dev.biases};
        e->host = *w;
        e->dev = *w;
        e->dev.data = dv[0];
        e->dev.scales = dv[1];
        e->dev.biases = dv[2];
        for (int q = 0; q < 3 && s == MK_OK; q++)
            if (sz[q]) {
                cudaError_t r = cudaMemcpyAsync((void *)dv[q], src[q], sz[q], cudaMemcpyHostToDevice, c->s);
                if (r != cudaSuccess)
                    s = mkc_fail(r, "copying a weight to the device");
            }
    } else {
        e = (mkb_entry *)mk_calloc(1, sizeof *e);
        if (!e) {
            mkb_fail(c, mk_err(MK_E_NOMEM, "CUDA backend: no memory for the entry of %s", what));
            return NULL;
        }
        e->host = *w;
        e->dev = *w;
        e->dev.data = e->dev.scales = e->dev.biases = NULL; /* nothing to free yet */
        const void **dst[3] = {&e->dev.data, &e->dev.scales, &e->dev.biases};
        for (int q = 0; q < 3 && s == MK_OK; q++) /* NULL where there is nothing to copy */
            s = up(c, src[q], sz[q], dst[q], what);
        e->bytes = sz[0] + sz[1] + sz[2];
    }
    /* memory an expert cache may overwrite once the calling slot returns:
     * the copy must have read it by then (a copy from pageable memory
     * may be staged and return early, but the runtime does not promise
     * that for cudaMemcpyAsync) */
    if (s == MK_OK && is_volatile(c, w->data)) {
        cudaError_t r = cudaStreamSynchronize(c->s);
        if (r != cudaSuccess)
            s = mkc_fail(r, "waiting for a copy from an expert cache slot");
    }
    if (s != MK_OK) {
        entry_free(e);
        mkb_fail(c, mk_err_wrap(s, "CUDA backend: uploading %s", what));
        return NULL;
    }
    return entry_insert(c, e, b);
}

/* Fill e's generic-kernel view from e->dev and enter e into bucket b. */
static const mkb_entry *entry_insert(mkb_ctx *c, mkb_entry *e, size_t b) {
    const mk_wt *w = &e->host;
    e->fast = mkc_kind_of(&e->dev) >= 0;
    mkb_w *d = &e->dw;
    d->data = (const uint8_t *)e->dev.data;
    d->scales = e->dev.scales;
    d->biases = e->dev.biases;
    d->lut = c->luts;
    d->rows = w->rows;
    d->cols = w->cols;
    d->row_bytes = (int64_t)mk_wt_row_bytes(w);
    d->fmt = (int32_t)w->fmt;
    d->sdtype = (int32_t)w->sdtype;
    d->bits = w->bits;
    d->group = w->group;
    d->block_r = w->block_r;
    d->block_c = w->block_c;
    d->gs = w->global_scale;
    e->next = c->tab[b];
    c->tab[b] = e;
    c->n++;
    c->bytes += e->bytes;
    if (c->n > 2 * c->nb && grow(c) != MK_OK)
        (void)0; /* a longer chain is slower, not wrong */
    return e;
}

const float *mkb_param(mkb_ctx *c, const float *p, int64_t n) {
    if (!p || n <= 0)
        return p;
    /* a host vector seen before: its copy (no driver call on the hot path) */
    mk_wt w;
    memset(&w, 0, sizeof w);
    w.fmt = MK_WF_F32;
    w.rows = 1;
    w.cols = n;
    w.data = p;
    w.global_scale = 1.0f;
    for (mkb_entry *e = c->tab[bucket(c, p)]; e; e = e->next)
        if (same_view(&e->host, &w))
            return (const float *)e->dev.data;
    cudaPointerAttributes at;
    cudaError_t err = cudaPointerGetAttributes(&at, p);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        at.type = cudaMemoryTypeUnregistered;
    }
    if (at.type == cudaMemoryTypeDevice || at.type == cudaMemoryTypeManaged)
        return p;
    const mkb_entry *e = mkb_weight(c, &w);
    return e ? (const float *)e->dev.data : NULL;
}

/* ---- the table ------------------------------------------------------------------ */

static void cu_free(void *ctx) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (!c)
        return;
    (void)cudaStreamSynchronize(c->s);
    for (size_t i = 0; i < c->nb; i++)
        for (mkb_entry *e = c->tab[i], *nx; e; e = nx) {
            nx = e->next;
            entry_free(e);
        }
    free(c->tab);
    for (mkb_entry *e = c->spare, *nx; e; e = nx) {
        nx = e->next;
        entry_free(e);
    }
    free(c->vr);
    mkb_moe_free(c);
    mkb_graph_free(c);
    mkb_chain_free(c);
    mkb_gemm_free(c);
    mkb_grp_free(c);
    mk_cuda_free(c->dsa_keys);
    mk_cuda_free(c->att_part);
    mk_cuda_free(c->att_tickets);
    mk_cuda_free(c->att3_planes);
    mk_cuda_free(c->luts);
    mk_cuda_free(c->nf);
    mk_cuda_free(c->nfl);
    mk_cuda_free(c->amax);
    mk_cuda_free(c->fold_ticket);
    mk_cuda_free(c->qk_kt);
    if (c->ev[0])
        (void)cudaEventDestroy(c->ev[0]);
    if (c->ev[1])
        (void)cudaEventDestroy(c->ev[1]);
    if (c->s)
        (void)cudaStreamDestroy(c->s);
    free(c);
}

static void cu_host_changed(void *ctx, const void *p, size_t n);

/* Every slot but add_rmsnorm and qk_norm_rope (which hold a one-token step
 * back), matmul, matmul_n, moe and attention (which may fold it into their launch)
 * and free first launches a held-back step (mkb_fold_flush), so the queue
 * order is the engine's call order. */
template <auto F> struct mkb_flushed;
template <typename R, typename... A, R (*F)(void *, A...)> struct mkb_flushed<F> {
    static R call(void *ctx, A... a) {
        mkb_fold_flush((mkb_ctx *)ctx);
        return F(ctx, a...);
    }
};
#define FL(f) mkb_flushed<f>::call

static const mk_backend_i g_cuda = {
    .name = "cuda",
    .host_mem = false,
    .sinks_window = true, /* gpt_oss: window and sinks in mkb_attention */
    .alloc = FL(cu_alloc),
    .buf_free = FL(cu_buf_free),
    .upload = FL(cu_upload),
    .download = FL(cu_download),
    .zero = FL(cu_zero),
    .sync = FL(cu_sync),
    .copy = FL(cu_copy),
    .gather = FL(cu_gather),
    .scatter = FL(cu_scatter),
    .find_nonfinite = FL(cu_find_nonfinite),
    .matmul = mkb_matmul,
    .get_rows = FL(mkb_get_rows),
    .rmsnorm = FL(mkb_rmsnorm),
    .rope = FL(mkb_rope),
    .attention = mkb_attention,
    .head_matmul = FL(mkb_head_matmul),
    .head_matmul_t = FL(mkb_head_matmul_t),
    .conv1d_silu = FL(mkb_conv1d_silu),
    .gdn = FL(mkb_gdn),
    .gated_rmsnorm = FL(mkb_gated_rmsnorm),
    .swiglu = FL(mkb_swiglu),
    .clamped_swiglu = FL(mkb_clamped_swiglu),
    .expert_mlps = nullptr, /* the engine runs experts one at a time (backend.h) */
    .layernorm = FL(mkb_layernorm),   /* DeepSeek sparse attention (cuda_dsa.cu) */
    .dsa_select = FL(mkb_dsa_select),
    .sigmoid_mul = FL(mkb_sigmoid_mul),
    .axpy = FL(mkb_axpy),
    .route = FL(mkb_route),
    .combine = FL(mkb_combine),
    .gated_add = FL(mkb_gated_add),
    .moe = mkb_moe,
    .moe_grouped = FL(mkb_moe_grouped),
    .check_finite = FL(cu_check_finite),
    .nonfinite_take = FL(cu_nonfinite_take),
    .step_begin = FL(mkb_step_begin),
    .step_end = FL(mkb_step_end),
    .step_last = FL(mkb_step_last),
    .step_replay = FL(mkb_step_replay),
    .step_chain = FL(mkb_step_chain),
    .step_take = FL(mkb_step_take),
    .add_rmsnorm = mkb_add_rmsnorm,
    .qk_norm_rope = mkb_qk_norm_rope,
    .matmul_n = mkb_matmul_n,
    .argmax = FL(mkb_argmax),
    .matmul_each = FL(mkb_matmul_each),
    .expert_mlps_each = nullptr, /* the engine runs the experts one at a time */
    .attention_each = FL(mkb_attention_each),
    .conv1d_silu_each = FL(mkb_conv1d_silu_each),
    .gdn_each = FL(mkb_gdn_each),
    .host_changed = FL(cu_host_changed), /* an expert cache reusing its host slots */
    .free = cu_free,
};

extern "C" mk_status mk_backend_cuda_create(int device, mk_backend **out) {
    *out = NULL;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return mk_err(MK_E_UNSUPPORTED, "CUDA backend: no usable CUDA device: %s (%s)", cudaGetErrorString(e),
                      cudaGetErrorName(e));
    }
    if (device < 0 || device >= n)
        return mk_err(MK_E_UNSUPPORTED, "CUDA backend: no CUDA device %d (%d present)", device, n);
    cudaDeviceProp p;
    MKC_TRY(cudaGetDeviceProperties(&p, device), "reading the device's properties");
    if (p.major < 9)
        return mk_err(MK_E_UNSUPPORTED,
                      "CUDA backend: device %d (%s) is sm_%d%d; moekit's kernels are built for sm_90 (PTX for newer)",
                      device, p.name, p.major, p.minor);
    MKC_TRY(cudaSetDevice(device), "selecting the device");
    mkb_ctx *c = (mkb_ctx *)mk_calloc(1, sizeof *c);
    if (!c)
        return mk_err(MK_E_NOMEM, "no memory for the CUDA backend");
    c->device = device;
    c->graphs = true; /* decode steps recorded once and replayed (cuda_graph.cu) */
    c->gemm_mode = MK_CUDA_GEMM_AUTO; /* int8 where the engine's prefill is (mkb_gemm_mode) */
    c->expert_vram = SIZE_MAX; /* experts in device memory while they fit (cuda_fused.cu) */
    c->gemm_scratch = MK_CUDA_GEMM_SCRATCH_DEFAULT;
    c->nb = 1024;
    c->tab = (mkb_entry **)mk_calloc(c->nb, sizeof *c->tab);
    mk_status s = c->tab ? MK_OK : mk_err(MK_E_NOMEM, "no memory for the CUDA backend's weight map");
    if (s == MK_OK) {
        e = cudaStreamCreateWithFlags(&c->s, cudaStreamNonBlocking);
        if (e != cudaSuccess)
            s = mkc_fail(e, "creating the CUDA backend's stream");
    }
    if (s == MK_OK) {
        mkb_luts *h = (mkb_luts *)mk_calloc(1, sizeof *h);
        if (!h)
            s = mk_err(MK_E_NOMEM, "no memory for the CUDA backend's code tables");
        else {
            static const float e2m1[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
            for (int b = 0; b < 256; b++) { /* as wt.c's luts_build */
                h->e4m3[b] = mk_e4m3_to_f32((uint8_t)b);
                h->e4m3_mx[b] = h->e4m3[b]; /* MLX's E4M3 is E4M3FN: 0x7f/0xff NaN */
                h->e5m2[b] = mk_e5m2_to_f32((uint8_t)b);
                h->e8m0[b] = mk_e8m0_to_f32((uint8_t)b);
            }
            for (int b = 0; b < 16; b++)
                h->e2m1[b] = (b & 8) ? -e2m1[b & 7] : e2m1[b & 7];
            s = mk_cuda_malloc((void **)&c->luts, sizeof *h, "the CUDA backend's code tables");
            if (s == MK_OK) /* on the stream, and waited for: h is freed next */
                s = mk_cuda_upload(c->luts, h, sizeof *h);
            if (s == MK_OK && (e = cudaDeviceSynchronize()) != cudaSuccess)
                s = mkc_fail(e, "copying the code tables to the device");
            free(h);
        }
    }
    if (s == MK_OK)
        s = mk_cuda_malloc((void **)&c->nf, sizeof *c->nf, "find_nonfinite's result");
    if (s == MK_OK)
        s = mk_cuda_malloc((void **)&c->nfl, sizeof *c->nfl, "the non-finite checks' state");
    if (s == MK_OK) /* zeroed by cudaMemset below: key 0 (none), ticket 0 */
        s = mk_cuda_malloc((void **)&c->amax, sizeof *c->amax, "the argmax slot's state");
    if (s == MK_OK && (e = cudaMemsetAsync(c->amax, 0, sizeof *c->amax, c->s)) != cudaSuccess)
        s = mkc_fail(e, "initialising the argmax slot's state");
    if (s == MK_OK)
        s = mk_cuda_malloc((void **)&c->fold_ticket, sizeof *c->fold_ticket, "the folded residual norm's ticket");
    if (s == MK_OK && (e = cudaMemsetAsync(c->fold_ticket, 0, sizeof *c->fold_ticket, c->s)) != cudaSuccess)
        s = mkc_fail(e, "initialising the folded residual norm's ticket");
    if (s == MK_OK) { /* key and cand ~0 (none), ticket 0; waited for by the first sync */
        const mkb_nfl z = {~0ull, ~0ull, 0.0f, 0u};
        e = cudaMemcpyAsync(c->nfl, &z, sizeof z, cudaMemcpyHostToDevice, c->s);
        if (e == cudaSuccess)
            e = cudaStreamSynchronize(c->s);
        if (e != cudaSuccess)
            s = mkc_fail(e, "initialising the non-finite checks");
    }
    if (s != MK_OK) {
        cu_free(c);
        return s;
    }
    return mk_backend_create(&g_cuda, c, out);
}

/* Drop every copy made from host_data (waiting first: queued slots may
 * read them). */
static void forget_host(mkb_ctx *c, const void *host_data) {
    mkb_fold_flush(c); /* a held-back step may read a dropped norm weight */
    mkb_ck(c, cudaStreamSynchronize(c->s), "waiting before dropping a weight");
    mkb_graph_free(c); /* a recorded step may read the dropped copies */
    mkb_moe_forget(c, host_data);
    mkb_entry **pp = &c->tab[bucket(c, host_data)];
    while (*pp) {
        mkb_entry *e = *pp;
        if (e->host.data == host_data) {
            *pp = e->next;
            c->n--;
            c->bytes -= e->bytes;
            entry_free(e);
        } else {
            pp = &e->next;
        }
    }
}

mkb_ctx *mkb_ctx_of(const mk_backend *b) {
    return b && mk_backend_iface(b) == &g_cuda ? (mkb_ctx *)mk_backend_ctx(b) : NULL;
}

extern "C" void mk_backend_cuda_forget(mk_backend *b, const void *host_data) {
    if (!b || mk_backend_iface(b) != &g_cuda)
        return;
    forget_host((mkb_ctx *)mk_backend_ctx(b), host_data);
}

/* Spare entries kept for reuse; past this many they are freed (after a
 * stream sync: queued slots may still read them). Experts of one shape
 * need 3 (gate, up, down of the slot just reloaded). */
#define MKB_SPARE_MAX 32

static bool overlaps(const void *q, size_t len, const char *p, size_t n) {
    const char *a = (const char *)q;
    return q && len && a < p + n && p < a + len;
}

/* Whether any host array of entry e lies in [p, p + n). */
static bool entry_in(const mkb_entry *e, const char *p, size_t n) {
    size_t sz[3];
    sizes_of(&e->host, sz);
    return overlaps(e->host.data, sz[0], p, n) || overlaps(e->host.scales, sz[1], p, n) ||
           overlaps(e->host.biases, sz[2], p, n);
}

/* backend.h host_changed: every copy made from [p, p + n) leaves the map
 * (the views handed out there from now on are other weights); their device
 * memory waits on the spare list for the next weight of the same size,
 * which mkb_weight copies into it in stream order, after every slot that
 * read the old bytes, so VRAM holds about one expert per host cache slot.
 * The range is remembered as volatile (copies from it complete before the
 * slot returns: mkb_weight). An alias into a fused layer's slab drops its
 * whole layer (forget_host). */
static void cu_host_changed(void *ctx, const void *p0, size_t n) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    const char *p = (const char *)p0;
    if (!p || !n)
        return;
    bool known = false;
    for (int i = 0; i < c->nvr && !known; i++)
        known = c->vr[i].p == p && c->vr[i].n == n;
    if (!known) {
        if (c->nvr == c->capvr) {
            int cap = c->capvr ? 2 * c->capvr : 64;
            mkb_range *v = (mkb_range *)realloc(c->vr, (size_t)cap * sizeof *v);
            if (!v) {
                mkb_fail(c, mk_err(MK_E_NOMEM, "CUDA backend: no memory for the expert cache's ranges"));
                return;
            }
            c->vr = v;
            c->capvr = cap;
        }
        c->vr[c->nvr++] = (mkb_range){p, n};
    }
    bool moved = false;
    for (;;) {
        const void *alias = NULL;
        for (size_t i = 0; i < c->nb && !alias; i++)
            for (mkb_entry **pp = &c->tab[i]; *pp;) {
                mkb_entry *e = *pp;
                if (!entry_in(e, p, n)) {
                    pp = &e->next;
                } else if (e->borrowed) {
                    alias = e->host.data;
                    break;
                } else {
                    *pp = e->next;
                    c->n--;
                    c->bytes -= e->bytes;
                    e->next = c->spare;
                    c->spare = e;
                    c->nspare++;
                    moved = true;
                }
            }
        if (!alias)
            break;
        forget_host(c, alias);
    }
    if (moved)
        mkb_graph_free(c); /* a recorded step may read the moved copies */
    if (c->nspare > MKB_SPARE_MAX) {
        mkb_ck(c, cudaStreamSynchronize(c->s), "waiting before freeing spare weight copies");
        for (mkb_entry *e = c->spare, *nx; e; e = nx) {
            nx = e->next;
            entry_free(e);
        }
        c->spare = NULL;
        c->nspare = 0;
    }
}

extern "C" void mk_backend_cuda_cache_stats(const mk_backend *b, size_t *live, size_t *spare) {
    *live = *spare = 0;
    if (!b || mk_backend_iface(b) != &g_cuda)
        return;
    const mkb_ctx *c = (const mkb_ctx *)mk_backend_ctx(b);
    for (size_t i = 0; i < c->nb; i++)
        for (const mkb_entry *e = c->tab[i]; e; e = e->next)
            if (!e->borrowed && is_volatile(c, e->host.data))
                *live += e->bytes;
    for (const mkb_entry *e = c->spare; e; e = e->next)
        *spare += e->bytes;
}

extern "C" size_t mk_backend_cuda_weight_bytes(const mk_backend *b) {
    if (!b || mk_backend_iface(b) != &g_cuda)
        return 0;
    return ((const mkb_ctx *)mk_backend_ctx(b))->bytes;
}

extern "C" int64_t mk_backend_cuda_folds(const mk_backend *b) {
    if (!b || mk_backend_iface(b) != &g_cuda)
        return 0;
    return ((const mkb_ctx *)mk_backend_ctx(b))->folds;
}

extern "C" void mk_backend_cuda_graph_stats(const mk_backend *b, int *built, int *updated, int *replayed) {
    *built = *updated = *replayed = 0;
    if (!b || mk_backend_iface(b) != &g_cuda)
        return;
    const mkb_ctx *c = (const mkb_ctx *)mk_backend_ctx(b);
    *built = c->graph_builds;
    *updated = c->graph_updates;
    *replayed = c->graph_replays;
}

extern "C" int mk_backend_cuda_chained(const mk_backend *b) {
    if (!b || mk_backend_iface(b) != &g_cuda)
        return 0;
    return ((const mkb_ctx *)mk_backend_ctx(b))->chain_steps;
}

extern "C" void mk_backend_cuda_time_steps(mk_backend *b, bool on) {
    if (!b || mk_backend_iface(b) != &g_cuda)
        return;
    mkb_ctx *c = (mkb_ctx *)mk_backend_ctx(b);
    c->time_steps = on;
    c->ev_pending = false;
    c->step_ms = 0.0;
    c->step_n = 0;
}

extern "C" void mk_backend_cuda_step_time(mk_backend *b, double *ms, int *n) {
    *ms = 0.0;
    *n = 0;
    if (!b || mk_backend_iface(b) != &g_cuda)
        return;
    mkb_ctx *c = (mkb_ctx *)mk_backend_ctx(b);
    if (c->time_steps) {
        (void)cudaStreamSynchronize(c->s);
        (void)mkb_step_time_take(c);
    }
    *ms = c->step_ms;
    *n = c->step_n;
}

extern "C" void mk_backend_cuda_set_graphs(mk_backend *b, bool on) {
    if (!b || mk_backend_iface(b) != &g_cuda)
        return;
    ((mkb_ctx *)mk_backend_ctx(b))->graphs = on;
}

extern "C" void mk_backend_cuda_set_gemm(mk_backend *b, mk_cuda_gemm mode, size_t scratch_bytes) {
    if (!b || mk_backend_iface(b) != &g_cuda)
        return;
    mkb_ctx *c = (mkb_ctx *)mk_backend_ctx(b);
    c->gemm_mode = (int)mode;
    c->gemm_scratch = scratch_bytes ? scratch_bytes : MK_CUDA_GEMM_SCRATCH_DEFAULT;
}

extern "C" void mk_backend_cuda_set_expert_vram(mk_backend *b, size_t bytes) {
    if (!b || mk_backend_iface(b) != &g_cuda)
        return;
    ((mkb_ctx *)mk_backend_ctx(b))->expert_vram = bytes;
}

extern "C" void mk_backend_cuda_expert_stats(const mk_backend *b, size_t *vram, size_t *host, int *host_layers) {
    *vram = *host = 0;
    *host_layers = 0;
    if (!b || mk_backend_iface(b) != &g_cuda)
        return;
    const mkb_ctx *c = (const mkb_ctx *)mk_backend_ctx(b);
    *vram = c->vram_expert_bytes;
    *host = c->host_expert_bytes;
    *host_layers = c->host_layers;
}
