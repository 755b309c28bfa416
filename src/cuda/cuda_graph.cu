/* Step recording for the CUDA backend (mk_backend_i.step_begin / step_end):
 * the slots a decode step queues between the two are captured from the
 * backend's stream into a CUDA graph and run as one graph launch, so the
 * GPU runs the step's ~20 kernels per layer back to back instead of one
 * host launch each.
 *
 * The graph is captured anew every step (a step's kernel arguments change
 * with the position: cache rows, attention length) and the executable graph
 * of the previous step is updated in place (cudaGraphExecUpdate, as
 * llama.cpp does), which succeeds while the step's shape (the sequence of
 * kernels and their launch geometry) is the same; otherwise a new one is
 * instantiated. Anything that breaks the recording — a host round trip
 * (refused by the slots while recording), a weight seen for the first time
 * (its upload would land in the graph), a failed capture, update or
 * instantiation — makes step_end return false with nothing of the step
 * run, and the caller queues the step again unrecorded.
 *
 * Captured and updated every step, a graph of ~500 nodes cost more than
 * launching them on the 48-layer Qwen3-30B-A3B shape (bench/RESULTS.md
 * 2026-12-03/04). So the engine records a decode step once, with every
 * argument that varies between steps in device memory (the position of
 * mk_attn_args.pos_dev, the token id, the rotary rows), and then only
 * replays it (step_replay): no slot runs on the host, one graph launch per
 * token. step_last names the recording (rec_id) so that an engine replays
 * only its own; freeing any buffer or forgetting any weight drops it (the
 * graph may point there), and the next step records again. On by default
 * (mk_backend_cuda_set_graphs). */
#include "cuda/cuda_backend.cuh"

/* The process-wide switches a recorded step's kernels were chosen under
 * (on the host, while recording). A replay under other switches would run
 * the old choice: --act-int8 follows a setting the caller may change
 * between steps (crosscheck's reference run, tests), so such a replay is
 * refused, the recording dropped, and the engine records the step again. */
static uint64_t switch_sig(void) {
    uint64_t s = (uint64_t)mk_cuda_kernels();
    const bool b[] = {mk_cuda_act_int8(),   mk_cuda_norm_fold(),   mk_cuda_moe_pdl(),
                      mk_cuda_step_pdl(),   mk_cuda_gemv_staged(), mk_cuda_moe_staged(),
                      mk_cuda_attn_merge_fused(), mk_cuda_qk_fold(), mk_cuda_attn_gqa(), mk_cuda_q8_early(),
                      mk_cuda_gateup_staged(), mk_cuda_route_late(), mk_cuda_qk_rows_warp()};
    for (bool v : b)
        s = s << 1 | (uint64_t)v;
    s = s << 2 | (uint64_t)(mk_cuda_norm_fold_mode() & 3);
    s = s << 8 | (uint64_t)(mk_cuda_step_prefetch() & 255u);
    return s << 8 | (uint64_t)(mk_cuda_attn_shares() & 255);
}

void mkb_graph_free(mkb_ctx *c) {
    if (c->exec)
        (void)cudaGraphExecDestroy(c->exec);
    c->exec = NULL;
    c->rec_id = 0;
}

uint64_t mkb_step_last(void *ctx) { return ((mkb_ctx *)ctx)->rec_id; }

static bool replay_launch(mkb_ctx *c);

/* Whether recording `id` may run now: still the backend's, nothing being
 * recorded or failed, and recorded under the switches in force (else it is
 * dropped: it would run the old choice of kernels). */
static bool replayable(mkb_ctx *c, uint64_t id) {
    if (!id || id != c->rec_id || !c->exec || c->recording || c->err.st != MK_OK)
        return false;
    if (switch_sig() != c->rec_sig) { /* recorded under other switches */
        mkb_graph_free(c);
        return false;
    }
    return true;
}

bool mkb_step_replay(void *ctx, uint64_t id) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (!replayable(c, id))
        return false;
    if (c->xc) {
        mkb_xcache_tick(c); /* a step boundary: slots published, counts taken, copies started */
        if (c->err.st != MK_OK)
            return false;
    } else if (c->expert_cache && c->host_layers > 0 && c->host_layers != c->xc_tried_at) {
        /* the expert cache made here (replayed steps never call the fused
         * slot): the recording is dropped with it, and the engine records
         * the step again, now with the cache's views */
        mkb_xcache_tick(c);
        if (c->err.st != MK_OK || !c->exec)
            return false;
    }
    return replay_launch(c);
}

/* Launch the recording, between the timing events when steps are timed
 * and the last timed pair is read (chained steps are queued before the
 * previous one ends: then only every other one is timed). */
static bool replay_launch(mkb_ctx *c) {
    const bool timed = c->time_steps && mkb_step_time_take(c) && !c->ev_pending &&
                       cudaEventRecord(c->ev[0], c->s) == cudaSuccess;
    if (cudaGraphLaunch(c->exec, c->s) != cudaSuccess) {
        (void)cudaGetLastError();
        mkb_graph_free(c);
        return false;
    }
    if (timed)
        c->ev_pending = cudaEventRecord(c->ev[1], c->s) == cudaSuccess;
    c->graph_replays++;
    return true;
}

/* Decode lookahead. A slot of chain_pin: the uploads' staging (CHAIN_UP
 * bytes), then the result bytes (16) and the non-finite record. */
enum { CHAIN_UP = 16384, CHAIN_RES = 16, CHAIN_SLOT = CHAIN_UP + CHAIN_RES + 64 };
static_assert(sizeof(mkb_nfl) <= 64, "the non-finite record fits its place in a chain slot");

void mkb_chain_free(mkb_ctx *c) {
    if (c->chain_pin)
        (void)cudaFreeHost(c->chain_pin);
    for (int i = 0; i < 2; i++)
        if (c->chain_ev[i])
            (void)cudaEventDestroy(c->chain_ev[i]);
    c->chain_pin = NULL;
    c->chain_ev[0] = c->chain_ev[1] = NULL;
}

static bool chain_ready(mkb_ctx *c) {
    if (c->chain_pin)
        return true;
    if (c->chain_failed)
        return false;
    void *p = NULL;
    bool ok = cudaHostAlloc(&p, 2 * (size_t)CHAIN_SLOT, cudaHostAllocDefault) == cudaSuccess;
    c->chain_pin = (unsigned char *)p;
    for (int i = 0; ok && i < 2; i++)
        ok = cudaEventCreateWithFlags(&c->chain_ev[i], cudaEventDisableTiming) == cudaSuccess;
    if (!ok) { /* no lookahead on this backend (a memlock limit, say): steps one at a time */
        (void)cudaGetLastError();
        mkb_chain_free(c);
        c->chain_failed = true;
    }
    return ok;
}

bool mkb_step_chain(void *ctx, uint64_t id, int slot, const mk_upload *ups, int nup, void *link_dst,
                    const void *link_src, size_t link_bytes, const void *res, size_t res_bytes) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (!mk_cuda_lookahead() || slot < 0 || slot > 1 || c->chain_busy[slot] || res_bytes > CHAIN_RES || nup < 0)
        return false; /* off (mk_cuda_set_lookahead) or a bad slot: the caller steps as before */
    /* an expert cache in VRAM steps on the host at every replay (mkb_xcache_tick): its counts
     * and copies follow the replays one at a time */
    if (c->xc || (c->expert_cache && c->host_layers > 0) || !replayable(c, id))
        return false;
    size_t total = 0;
    for (int i = 0; i < nup; i++)
        total += (ups[i].bytes + 15) & ~(size_t)15;
    if (total > CHAIN_UP || !chain_ready(c))
        return false;
    unsigned char *p = c->chain_pin + (size_t)slot * CHAIN_SLOT;
    /* pinned sources: queued without waiting for the stream (a pageable
     * upload may wait for everything queued before it) */
    size_t off = 0;
    for (int i = 0; i < nup; i++) {
        if (!ups[i].bytes)
            continue;
        memcpy(p + off, ups[i].src, ups[i].bytes);
        mkb_ck(c, cudaMemcpyAsync(ups[i].dst, p + off, ups[i].bytes, cudaMemcpyHostToDevice, c->s),
           "a chained step's upload");
        off += (ups[i].bytes + 15) & ~(size_t)15;
    }
    if (link_dst && link_bytes)
        mkb_ck(c, cudaMemcpyAsync(link_dst, link_src, link_bytes, cudaMemcpyDeviceToDevice, c->s),
           "a chained step's token");
    if (c->err.st != MK_OK || !replay_launch(c)) {
        /* copies queued from the slot's staging may still read it: done before it is reused */
        (void)cudaStreamSynchronize(c->s);
        return false;
    }
    if (res_bytes)
        mkb_ck(c, cudaMemcpyAsync(p + CHAIN_UP, res, res_bytes, cudaMemcpyDeviceToHost, c->s),
           "a chained step's result");
    mkb_ck(c, cudaMemcpyAsync(p + CHAIN_UP + CHAIN_RES, c->nfl, sizeof(mkb_nfl), cudaMemcpyDeviceToHost, c->s),
       "a chained step's non-finite check");
    mkb_ck(c, cudaEventRecord(c->chain_ev[slot], c->s), "a chained step's event");
    c->chain_busy[slot] = true; /* even on a failure above: step_take reports it */
    c->chain_sig[slot] = c->rec_sig;
    c->chain_steps++;
    return true;
}

static int g_test_stale; /* mk_cuda_test_stale: step_take calls left to report stale */

extern "C" void mk_cuda_test_stale(int n) { __atomic_store_n(&g_test_stale, n > 0 ? n : 0, __ATOMIC_RELEASE); }

mk_status mkb_step_take(void *ctx, int slot, void *res, size_t res_bytes, bool *found, bool *stale,
                        int32_t *tag, int64_t *index, float *value) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    *found = *stale = false;
    if (slot < 0 || slot > 1 || !c->chain_busy[slot] || res_bytes > CHAIN_RES)
        return mk_err(MK_E_INTERNAL, "CUDA backend: step_take of slot %d, which holds no chained step", slot);
    /* waited for even after a failure: its copies read and write the slot's pinned memory */
    const cudaError_t w = cudaEventSynchronize(c->chain_ev[slot]);
    if (w != cudaSuccess && c->err.st == MK_OK)
        mkb_ck(c, w, "running a chained step");
    if (w != cudaSuccess || c->err.st != MK_OK)
        (void)cudaStreamSynchronize(c->s); /* the event may not have been recorded */
    c->chain_busy[slot] = false;
    if (c->err.st != MK_OK) {
        mk_status s = mk_err_slot_raise(&c->err);
        c->err.st = MK_OK;
        c->err.msg[0] = '\0';
        return s;
    }
    const unsigned char *p = c->chain_pin + (size_t)slot * CHAIN_SLOT;
    memcpy(res, p + CHAIN_UP, res_bytes);
    mkb_nfl h;
    memcpy(&h, p + CHAIN_UP + CHAIN_RES, sizeof h);
    if (h.key != ~0ull) {
        *found = true;
        *tag = (int32_t)(h.key >> 40);
        *index = (int64_t)(h.key & ((1ull << 40) - 1));
        *value = h.val;
    }
    /* queued under other process-wide switches than now (switch_sig): the kernels of the old
     * choice ran, as a replay would not have */
    *stale = c->chain_sig[slot] != switch_sig();
    int n = __atomic_load_n(&g_test_stale, __ATOMIC_ACQUIRE);
    while (!*stale && n > 0)
        if (__atomic_compare_exchange_n(&g_test_stale, &n, n - 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            *stale = true;
    return MK_OK;
}

/* The last timed replay's GPU span into step_ms / step_n when its events
 * are done (a step the engine waited for: by the next replay; with steps
 * chained one ahead, not yet: kept pending, and that replay is not timed),
 * the events made on first use. False: none to time with. */
bool mkb_step_time_take(mkb_ctx *c) {
    if (!c->ev[0]) {
        if (cudaEventCreate(&c->ev[0]) != cudaSuccess || cudaEventCreate(&c->ev[1]) != cudaSuccess) {
            (void)cudaGetLastError();
            if (c->ev[0])
                (void)cudaEventDestroy(c->ev[0]);
            c->ev[0] = c->ev[1] = NULL;
            return false;
        }
    }
    if (c->ev_pending) {
        const cudaError_t q = cudaEventQuery(c->ev[1]);
        float ms = 0.0f;
        if (q == cudaSuccess && cudaEventElapsedTime(&ms, c->ev[0], c->ev[1]) == cudaSuccess) {
            c->step_ms += ms;
            c->step_n++;
        }
        if (q != cudaErrorNotReady)
            c->ev_pending = false;
        else
            (void)cudaGetLastError(); /* not done yet: no error of anyone's (the next replay re-records) */
    }
    return true;
}

bool mkb_step_begin(void *ctx) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (!c->graphs || c->recording || c->err.st != MK_OK)
        return false; /* an earlier failure is sync's to report, not the recording's */
    /* relaxed: the slots' host-side lookups may still call the runtime */
    if (cudaStreamBeginCapture(c->s, cudaStreamCaptureModeRelaxed) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
    }
    c->recording = true;
    return true;
}

bool mkb_step_end(void *ctx, bool run) {
    mkb_ctx *c = (mkb_ctx *)ctx;
    if (!c->recording)
        return false;
    c->recording = false;
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(c->s, &g);
    bool ok = run && e == cudaSuccess && g && c->err.st == MK_OK;
    if (ok && c->exec) {
        cudaGraphExecUpdateResultInfo info;
        if (cudaGraphExecUpdate(c->exec, g, &info) == cudaSuccess) {
            c->graph_updates++;
        } else {
            (void)cudaGetLastError();
            mkb_graph_free(c);
        }
    }
    if (ok && !c->exec) {
        ok = cudaGraphInstantiate(&c->exec, g, 0) == cudaSuccess;
        if (ok)
            c->graph_builds++;
        else
            c->exec = NULL;
    }
    if (ok)
        ok = cudaGraphLaunch(c->exec, c->s) == cudaSuccess;
    if (ok) {
        c->rec_id = ++c->rec_next; /* a new recording, even when updated in place */
        c->rec_sig = switch_sig();
    }
    if (g)
        (void)cudaGraphDestroy(g);
    if (!ok) {
        /* nothing of the step ran: drop what the recording recorded (its
         * refusals and launch errors recur, and are reported, when the
         * caller queues the step again unrecorded) */
        (void)cudaGetLastError();
        c->err.st = MK_OK;
        c->err.msg[0] = '\0';
        mkb_graph_free(c);
    }
    return ok;
}
