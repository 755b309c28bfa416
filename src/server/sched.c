/* The slots and their scheduler: requests wait in a bounded FIFO queue, a
 * free slot takes the oldest, and one scheduler thread advances the busy
 * slots in steps, so new requests join between steps. A step is:
 *   - one prefill piece (mk_gen_step, o.prefill_step tokens, the same
 *     boundaries as `run`) of one slot still reading its prompt, in turn
 *     (every such slot when nothing decodes), so a long prompt delays the
 *     running streams by one piece per token, never by its whole length;
 *   - continuous batching: every decoding slot samples its next token
 *     (mk_gen_sample) and all of them are fed in ONE forward
 *     (mk_engine_decode_batch: dense products over the batch, each MoE
 *     expert read and multiplied once for all the sequences that chose it).
 * Each slot has its own engine (position, caches, recurrent state) over
 * the shared model, backend and store. The batched step is batch-invariant
 * (engine.h), so each slot's tokens are exactly what its engine gives
 * alone, and equal `run`'s; engines that cannot share a step
 * (mk_engine_batchable) are fed one at a time.
 *
 * Prompt cache: a slot remembers the tokens in its engine. A request goes
 * to the free slot with the longest usable common prefix: an engine that
 * can rewind (attention only) keeps any prefix; one with recurrent state
 * (Gated DeltaNet) keeps the slot's whole history when the new prompt
 * extends it, and otherwise goes back to its latest recurrent-state
 * snapshot inside the common prefix (mk_engine_state_restore). Snapshots
 * are taken at turn boundaries (the end of each prompt) and every
 * mk_server_opts.snap_every prompt tokens, mk_server_opts.snapshots per slot (least
 * recently used replaced) and mk_server_opts.snap_bytes in all (the least
 * recently used of any slot evicted), so a chat whose next prompt re-renders the last answer
 * differently (a template that drops reasoning, an edited message) does
 * not re-prefill its history. A snapshot stays valid while the slot's
 * history keeps its prefix: those after a restore point and all of them
 * at a reset are dropped. Otherwise the least recently used free slot is
 * reset.
 *
 * Stop sequences are applied to the text as it is generated: text that
 * could still be the start of a stop sequence is held back (job->safe). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "server/srv_impl.h"

double srv_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

srv_job *srv_job_new(const int32_t *prompt, int64_t np, int64_t max_tokens,
                     const mk_sample_params *sp, const char *const *stop, const size_t *stop_len,
                     int nstop) {
    srv_job *j = mk_calloc(1, sizeof *j);
    if (!j)
        return NULL;
    pthread_cond_init(&j->cv, NULL);
    j->prompt = mk_malloc((size_t)np * sizeof *j->prompt);
    bool ok = j->prompt != NULL;
    for (int i = 0; ok && i < nstop; i++) {
        j->stop[i] = mk_malloc(stop_len[i] + 1);
        if ((ok = j->stop[i] != NULL)) {
            memcpy(j->stop[i], stop[i], stop_len[i]);
            j->stop[i][stop_len[i]] = 0;
            j->stop_len[i] = stop_len[i];
            j->nstop = i + 1;
        }
    }
    if (!ok) {
        j->refs = 1;
        srv_job_unref_locked(j);
        return NULL;
    }
    memcpy(j->prompt, prompt, (size_t)np * sizeof *j->prompt);
    j->np = np;
    j->max_tokens = max_tokens;
    j->sp = *sp;
    j->refs = 1;
    j->logprobs = -1;
    j->t_submit = srv_now();
    return j;
}

void srv_job_unref_locked(srv_job *j) {
    if (!j || --j->refs > 0)
        return;
    pthread_cond_destroy(&j->cv);
    for (int i = 0; i < j->nstop; i++)
        free(j->stop[i]);
    free(j->prompt);
    free(j->forced);
    mk_grammar_match_free(j->gm);
    mk_grammar_free(j->grammar);
    free(j->text);
    free(j->raw);
    free(j->lp);
    free(j->marks);
    free(j);
}

bool srv_job_advance(srv_job *j, size_t safe) {
    if (j->n_marks == j->cap_marks) {
        size_t nc = j->cap_marks ? 2 * j->cap_marks : 64;
        size_t *nm = mk_realloc(j->marks, nc * sizeof *nm);
        if (!nm)
            return false;
        j->marks = nm;
        j->cap_marks = nc;
    }
    j->marks[j->n_marks++] = safe;
    j->safe = safe;
    return true;
}

int srv_submit(mk_server *s, srv_job *j) {
    pthread_mutex_lock(&s->mu);
    int code = 0;
    if (s->draining || s->quit)
        code = 503;
    else if (s->qlen >= s->queue_cap)
        code = 429;
    if (!code) {
        j->refs++; /* the queue's, then the slot's */
        s->queue[(s->qhead + s->qlen++) % s->queue_cap] = j;
        pthread_cond_signal(&s->sched_cv);
    }
    pthread_mutex_unlock(&s->mu);
    return code;
}

/* ---- output: text, stop sequences, timing ----------------------------------- */

static bool grow(char **p, size_t *cap, size_t need) {
    if (need <= *cap)
        return true;
    size_t nc = *cap ? *cap : 256;
    while (nc < need)
        nc *= 2;
    char *np = mk_realloc(*p, nc);
    if (!np)
        return false;
    *p = np;
    *cap = nc;
    return true;
}

/* Bytes at the end of text[0..len) that could begin a stop sequence. */
static size_t stop_prefix_tail(const srv_job *j, const char *text, size_t len) {
    size_t hold = 0;
    for (int i = 0; i < j->nstop; i++)
        for (size_t k = j->stop_len[i] - 1; k > hold; k--)
            if (k <= len && !memcmp(text + len - k, j->stop[i], k)) {
                hold = k;
                break;
            }
    return hold;
}

/* Before each token is sampled (logprobs only): keep the logits and their
 * log-sum-exp, the distribution the token's log probability is read from. */
static void on_logits(void *user, const float *logits, int64_t V) {
    srv_slot *sl = user;
    memcpy(sl->raw, logits, (size_t)V * sizeof *logits);
    float mx = logits[0];
    for (int64_t i = 1; i < V; i++)
        if (logits[i] > mx)
            mx = logits[i];
    double sum = 0;
    for (int64_t i = 0; i < V; i++)
        sum += exp((double)logits[i] - mx);
    sl->lse = mx + log(sum);
}

/* The entry of token id: its log probability and the best alternatives
 * (descending, lowest id first on ties). */
static void lp_entry(const srv_slot *sl, int ntop, int32_t id, srv_lp *e) {
    int64_t V = mk_model_config(sl->srv->m.model)->vocab_size;
    e->id = id;
    e->lp = (float)(sl->raw[id] - sl->lse);
    e->ntop = 0;
    for (int64_t v = 0; ntop > 0 && v < V; v++) { /* insertion into a sorted list of at most ntop */
        float x = sl->raw[v];
        int k = e->ntop;
        if (k == ntop && !(x > sl->raw[e->top_id[k - 1]]))
            continue;
        if (k < ntop)
            e->ntop++;
        else
            k--;
        while (k > 0 && x > sl->raw[e->top_id[k - 1]]) {
            e->top_id[k] = e->top_id[k - 1];
            k--;
        }
        e->top_id[k] = (int32_t)v;
    }
    for (int k = 0; k < e->ntop; k++)
        e->top_lp[k] = (float)(sl->raw[e->top_id[k]] - sl->lse);
}

/* Test-only forced output (mk_server_opts.test_output): every id but the
 * next forced one, then but the first stop id, is masked out, so the
 * sampler, whatever its settings, emits the forced text through the whole
 * path a sampled one takes (stop sequences, streaming, parsing). */
static void on_mask(void *user, float *logits, int64_t V) {
    srv_slot *sl = user;
    srv_job *j = sl->job;
    if (j->gm) { /* response_format (respfmt.c): the tokens max_tokens still allows, this one included */
        mk_grammar_match_mask(j->gm, j->max_tokens - j->n_gen, logits, V);
        return;
    }
    int32_t want = j->i_forced < j->n_forced ? j->forced[j->i_forced] : sl->srv->stopset.n ? sl->srv->stopset.ids[0] : -1;
    j->i_forced++;
    if (want < 0 || want >= V)
        return;
    for (int64_t v = 0; v < V; v++)
        if (v != want)
            logits[v] = -INFINITY;
}

/* The generation loop's per-token callback (scheduler thread): append the
 * text, cut it at the first stop sequence (which ends generation), publish
 * what can no longer change. */
static bool on_token(void *user, int32_t id, const char *text, size_t len) {
    srv_slot *sl = user;
    mk_server *s = sl->srv;
    srv_job *j = sl->job;
    if (j->finish == SRV_FIN_STOP) /* the flush after a stop sequence: past the end */
        return false;
    double now = srv_now();
    if (id >= 0 && j->gm && mk_grammar_match_token(j->gm, id) != MK_OK)
        return false; /* never: the id came through the grammar's mask */
    if (id >= 0) {
        if (j->n_gen == 0) {
            j->t_first = now;
            srv_metrics_observe(&s->metrics.ttft, &s->metrics, now - j->t_submit);
        } else {
            srv_metrics_observe(&s->metrics.itl, &s->metrics, now - j->t_last);
        }
        j->t_last = now;
    }
    if (!grow(&j->raw, &j->raw_cap, j->raw_len + len + 1))
        return false; /* out of memory: end the generation (reported as an error) */
    size_t before = j->raw_len;
    memcpy(j->raw + j->raw_len, text ? text : "", text ? len : 0);
    j->raw_len += text ? len : 0;
    j->raw[j->raw_len] = 0;
    /* the earliest stop sequence that ends in the new text */
    size_t cut = j->raw_len;
    bool stop = false;
    for (int i = 0; i < j->nstop; i++) {
        size_t from = before >= j->stop_len[i] ? before - j->stop_len[i] + 1 : 0;
        char *hit = memmem(j->raw + from, j->raw_len - from, j->stop[i], j->stop_len[i]);
        if (hit && (size_t)(hit - j->raw) < cut) {
            cut = (size_t)(hit - j->raw);
            stop = true;
        }
    }
    size_t safe = stop ? cut : cut - stop_prefix_tail(j, j->raw, cut);
    srv_lp e;
    if (id >= 0 && j->logprobs >= 0) {
        lp_entry(sl, j->logprobs, id, &e);
        e.start = before;
        e.end = j->raw_len;
    }
    pthread_mutex_lock(&s->mu);
    bool ok = grow(&j->text, &j->cap, cut + 1);
    if (ok && id >= 0 && j->logprobs >= 0) {
        if (j->n_lp == j->cap_lp) {
            size_t nc = j->cap_lp ? 2 * j->cap_lp : 64;
            srv_lp *nl = mk_realloc(j->lp, nc * sizeof *nl);
            if ((ok = nl != NULL)) {
                j->lp = nl;
                j->cap_lp = nc;
            }
        }
        if (ok)
            j->lp[j->n_lp++] = e;
    }
    if (ok) {
        /* a stop sequence may begin inside text already held back (it spans
         * tokens): then the text shrinks; safe never passed its start */
        if (cut > j->len)
            memcpy(j->text + j->len, j->raw + j->len, cut - j->len);
        j->len = cut;
        j->text[cut] = 0;
        if (safe > j->safe && !srv_job_advance(j, safe))
            ok = false; /* out of memory: end the generation (reported as an error) */
        if (id >= 0)
            j->n_gen++;
        if (stop)
            j->finish = SRV_FIN_STOP;
        pthread_cond_broadcast(&j->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return ok && !stop && !j->cancel;
}

/* ---- slots ------------------------------------------------------------------ */

static int64_t common_prefix(const int32_t *a, int64_t na, const int32_t *b, int64_t nb) {
    int64_t n = na < nb ? na : nb, k = 0;
    while (k < n && a[k] == b[k])
        k++;
    return k;
}

/* ---- recurrent-state snapshots ---------------------------------------------- */

static void snap_free(mk_server *s, srv_snap *sn) {
    free(sn->buf);
    *sn = (srv_snap){0};
    s->snap_count--;
    pthread_mutex_lock(&s->metrics.mu);
    s->metrics.snap_bytes = (uint64_t)s->snap_count * s->snap_size;
    pthread_mutex_unlock(&s->metrics.mu);
}

/* Drop the snapshots past position p (all of them for p = 0): the history
 * is about to be rewritten from p on. */
static void snaps_drop_after(srv_slot *sl, int64_t p) {
    for (int i = 0; i < SRV_SNAPS; i++)
        if (sl->snaps[i].buf && sl->snaps[i].pos > p)
            snap_free(sl->srv, &sl->snaps[i]);
}

/* Make room in the pool (mk_server_opts.snap_bytes) for one more
 * snapshot: evict the least recently used of every slot's. False when the
 * pool holds none at all (its bound is below one snapshot). */
static bool snap_evict_lru(mk_server *s) {
    srv_snap *lru = NULL;
    for (int i = 0; i < s->nslots; i++)
        for (int k = 0; k < SRV_SNAPS; k++) {
            srv_snap *sn = &s->slots[i].snaps[k];
            if (sn->buf && (!lru || sn->used < lru->used))
                lru = sn;
        }
    if (!lru)
        return false;
    snap_free(s, lru);
    pthread_mutex_lock(&s->metrics.mu);
    s->metrics.snap_evictions++;
    pthread_mutex_unlock(&s->metrics.mu);
    return true;
}

/* Save the engine's recurrent state at its position (scheduler thread,
 * server mutex held). A snapshot that cannot be allocated is skipped: it
 * only saves work. */
static void snap_take(mk_server *s, srv_slot *sl) {
    size_t bytes = mk_engine_state_bytes(sl->e);
    int64_t pos = mk_engine_pos(sl->e);
    if (!bytes || pos <= 0 || s->nsnap <= 0)
        return;
    srv_snap *sn = NULL;
    for (int i = 0; i < s->nsnap && !sn; i++) /* the same position: refresh it */
        if (sl->snaps[i].buf && sl->snaps[i].pos == pos)
            sn = &sl->snaps[i];
    for (int i = 0; i < s->nsnap && !sn; i++)
        if (!sl->snaps[i].buf)
            sn = &sl->snaps[i];
    if (!sn) { /* the least recently used */
        sn = &sl->snaps[0];
        for (int i = 1; i < s->nsnap; i++)
            if (sl->snaps[i].used < sn->used)
                sn = &sl->snaps[i];
    }
    if (!sn->buf) { /* a new one: within the pool's bound */
        while (s->snap_count >= s->snap_cap)
            if (!snap_evict_lru(s))
                return;
        if (!(sn->buf = mk_malloc(bytes)))
            return;
        s->snap_count++;
    }
    if (mk_engine_state_save(sl->e, sn->buf) != MK_OK) {
        snap_free(s, sn);
        return;
    }
    sn->pos = pos;
    sn->used = ++s->tick;
    pthread_mutex_lock(&s->metrics.mu);
    s->metrics.snap_saves++;
    s->metrics.snap_bytes = (uint64_t)s->snap_count * s->snap_size;
    pthread_mutex_unlock(&s->metrics.mu);
}

/* Tokens of slot sl's cache that job j can keep (0: none); *snap the
 * snapshot to restore for them, or -1 (the engine continues or rewinds). */
static int64_t usable_prefix(const srv_slot *sl, const srv_job *j, int *snap) {
    *snap = -1;
    int64_t pos = mk_engine_pos(sl->e);
    int64_t k = common_prefix(sl->cache, pos, j->prompt, j->np);
    if (k >= j->np) /* one prompt token must be fed to get the first logits */
        k = j->np - 1;
    if (k < pos && !mk_engine_rewindable(sl->e)) { /* the latest snapshot inside the prefix */
        int64_t best = 0;
        for (int i = 0; i < SRV_SNAPS; i++)
            if (sl->snaps[i].buf && sl->snaps[i].pos <= k && sl->snaps[i].pos > best) {
                best = sl->snaps[i].pos;
                *snap = i;
            }
        return best;
    }
    return k;
}

/* Start job j on a free slot (server mutex held; the engine work happens
 * here too: it is the scheduler thread and engines are only its). */
static void start_job(mk_server *s, srv_job *j) {
    srv_slot *best = NULL;
    int64_t best_k = -1;
    int best_snap = -1;
    for (int i = 0; i < s->nslots; i++) {
        srv_slot *sl = &s->slots[i];
        if (sl->job)
            continue;
        int snap;
        int64_t k = usable_prefix(sl, j, &snap);
        if (k > best_k || (k == best_k && sl->last_used < best->last_used)) {
            best = sl;
            best_k = k;
            best_snap = snap;
        }
    }
    best->job = j;
    best->last_used = ++s->tick;
    s->busy++;
    j->started = true;
    mk_status st = MK_OK;
    if (best_snap >= 0) {
        srv_snap *sn = &best->snaps[best_snap];
        if (mk_engine_state_restore(best->e, sn->buf, best_k) != MK_OK) {
            best_k = 0;
        } else {
            sn->used = ++s->tick;
            pthread_mutex_lock(&s->metrics.mu);
            s->metrics.snap_restores++;
            pthread_mutex_unlock(&s->metrics.mu);
        }
    } else if (best_k > 0 && mk_engine_rewind(best->e, best_k) != MK_OK) {
        best_k = 0;
    }
    snaps_drop_after(best, best_k); /* the history is rewritten from best_k on */
    if (best_k == 0)
        mk_engine_reset(best->e);
    j->n_cached = best_k;
    if (best_k > 0) {
        pthread_mutex_lock(&s->metrics.mu);
        s->metrics.cache_hits++;
        s->metrics.cache_tokens += (uint64_t)best_k;
        pthread_mutex_unlock(&s->metrics.mu);
    }
    const mk_config *c = mk_model_config(s->m.model);
    st = mk_sampler_create(&j->sp, c->vocab_size, &best->smp);
    if (st == MK_OK && j->logprobs >= 0 && !best->raw &&
        !(best->raw = mk_malloc((size_t)c->vocab_size * sizeof *best->raw)))
        st = mk_err(MK_E_NOMEM, "no memory for the logits of a logprobs request (%d floats)", c->vocab_size);
    mk_gen_opts go = {.on_logits = j->logprobs >= 0 ? on_logits : NULL, .on_mask = j->forced || j->gm ? on_mask : NULL,
                      .keep_special = j->keep_special,.max_tokens = j->max_tokens, .stop = j->ignore_eos ? NULL : &s->stopset, .sampler = best->smp,
                      .tok = s->m.tok, .on_token = on_token, .user = best, .cancel = &j->cancel,
                      .cached = best_k, .prefill_step = s->o.prefill_step};
    if (st == MK_OK)
        st = mk_gen_begin(best->e, j->prompt, j->np, &go, &best->seq);
    if (st != MK_OK) {
        snprintf(j->err, sizeof j->err, "%s", mk_err_msg());
        j->finish = SRV_FIN_ERROR;
    }
}

/* End the slot's job (server mutex held): record the cache, wake the
 * connection, free the slot. */
static void end_job(mk_server *s, srv_slot *sl, mk_status st) {
    srv_job *j = sl->job;
    mk_gen_result r;
    pthread_mutex_unlock(&s->mu); /* the final flush calls on_token, which locks */
    mk_gen_end(sl->seq, &r);
    pthread_mutex_lock(&s->mu);
    sl->seq = NULL;
    mk_sampler_free(sl->smp);
    sl->smp = NULL;
    /* the engine holds prompt ++ generated up to its position */
    int64_t pos = mk_engine_pos(sl->e);
    if (st != MK_OK || j->finish == SRV_FIN_ERROR || pos > sl->cache_cap) {
        mk_engine_reset(sl->e);
        snaps_drop_after(sl, 0);
    } else {
        int64_t np = j->np < pos ? j->np : pos;
        memcpy(sl->cache, j->prompt, (size_t)np * sizeof *sl->cache);
        if (pos > np)
            memcpy(sl->cache + np, r.ids, (size_t)(pos - np) * sizeof *sl->cache);
    }
    free(r.ids);
    if (st != MK_OK && j->finish != SRV_FIN_ERROR) {
        snprintf(j->err, sizeof j->err, "%s", mk_err_msg());
        j->finish = SRV_FIN_ERROR;
    } else if (j->finish == SRV_RUNNING && j->cancel) { /* caught by the loop or before a step */
        j->finish = SRV_FIN_CANCEL;
    } else if (j->finish == SRV_RUNNING) {
        j->finish = r.reason == MK_GEN_STOP_ID ? SRV_FIN_STOP
                    : r.reason == MK_GEN_STOP_CANCELLED ? (j->cancel ? SRV_FIN_CANCEL : SRV_FIN_ERROR)
                                                         : SRV_FIN_LENGTH;
        if (j->finish == SRV_FIN_ERROR) /* on_token could not grow its buffers */
            snprintf(j->err, sizeof j->err, "out of memory for the generated text");
    }
    /* nothing more will come: a partial stop sequence is text (its event unmarked
     * if the mark finds no memory: srv_stream_upto then ends at safe) */
    if (j->len > j->safe && !srv_job_advance(j, j->len))
        j->safe = j->len;
    j->done = true;
    pthread_mutex_lock(&s->metrics.mu);
    s->metrics.prompt_tokens += (uint64_t)j->np;
    s->metrics.prompt_fed += (uint64_t)(j->np - j->n_cached);
    s->metrics.gen_tokens += (uint64_t)j->n_gen;
    if (j->finish == SRV_FIN_CANCEL)
        s->metrics.cancelled++;
    if (j->n_gen > 0) /* GET /v1/stats: the last answer (the web page's panel) */
        s->metrics.last = (srv_last){
            .set = true, .np = j->np, .cached = j->n_cached, .gen = j->n_gen,
            .ttft = j->t_first - j->t_submit, .decode_s = j->t_last - j->t_first};
    pthread_mutex_unlock(&s->metrics.mu);
    pthread_cond_broadcast(&j->cv);
    sl->job = NULL;
    s->busy--;
    srv_job_unref_locked(j);
    pthread_cond_broadcast(&s->idle_cv);
}

/* ---- one scheduler step ------------------------------------------------------ */

static bool prefilling(const srv_slot *sl) {
    return sl->job && sl->seq && !mk_gen_decoding(sl->seq) &&
           mk_gen_prefilled(sl->seq) < sl->job->np;
}

/* Prefill: one piece of the next prefilling slot in turn while others
 * decode (their tokens wait one piece at most), else one piece of each
 * (server mutex held; released around the engine work). */
static void prefill_pieces(mk_server *s) {
    bool any_decoding = false;
    for (int i = 0; i < s->nslots; i++)
        any_decoding |= s->slots[i].job && s->slots[i].seq && mk_gen_decoding(s->slots[i].seq);
    for (int k = 0; k < s->nslots; k++) {
        int i = (s->pf_next + k) % s->nslots;
        srv_slot *sl = &s->slots[i];
        if (!prefilling(sl))
            continue;
        pthread_mutex_unlock(&s->mu);
        bool done = false;
        int64_t before = mk_gen_prefilled(sl->seq);
        mk_status st = mk_gen_step(sl->seq, &done);
        int64_t after = mk_gen_prefilled(sl->seq);
        /* a snapshot at the turn boundary (the whole prompt) and every
         * snap_every tokens of a long one (hybrid models only) */
        pthread_mutex_lock(&s->mu);
        if (st == MK_OK && !mk_engine_rewindable(sl->e) && mk_engine_pos(sl->e) == after &&
            (after == sl->job->np || after / s->snap_every > before / s->snap_every))
            snap_take(s, sl);
        if (done || st != MK_OK)
            end_job(s, sl, st);
        if (any_decoding) {
            s->pf_next = (i + 1) % s->nslots;
            return;
        }
    }
}

/* Decode: every decoding slot samples its token (streaming it), then one
 * forward feeds them all (server mutex held; released around the work). */
static void decode_step(mk_server *s) {
    int n = 0;
    for (int i = 0; i < s->nslots; i++) {
        srv_slot *sl = &s->slots[i];
        if (!sl->job || !sl->seq || !mk_gen_decoding(sl->seq))
            continue;
        pthread_mutex_unlock(&s->mu); /* on_token locks */
        bool done = false;
        int32_t next;
        mk_status st = mk_gen_sample(sl->seq, &done, &next);
        pthread_mutex_lock(&s->mu);
        if (done || st != MK_OK) {
            end_job(s, sl, st);
            continue;
        }
        s->b_slot[n] = sl;
        s->b_eng[n] = sl->e;
        s->b_ids[n++] = next;
    }
    if (!n)
        return;
    pthread_mutex_unlock(&s->mu);
    /* in batches of what one step may take (all of them, but for very many
     * slots); a batch of one, or engines that cannot share a step, alone */
    int64_t V = mk_model_config(s->m.model)->vocab_size;
    int bm = s->batch_max > 1 ? s->batch_max : 1;
    uint64_t steps = 0;
    for (int g = 0; g < n; g += bm) {
        int m = n - g < bm ? n - g : bm;
        steps++;
        if (m > 1) {
            mk_status st = mk_engine_decode_batch(s->b_eng + g, m, s->b_ids + g, s->b_logits);
            for (int i = g; i < g + m; i++) {
                if (st == MK_OK)
                    memcpy(mk_gen_feed_buf(s->b_slot[i]->seq), s->b_logits + (int64_t)(i - g) * V,
                           (size_t)V * sizeof(float));
                mk_gen_fed(s->b_slot[i]->seq, st);
                s->b_st[i] = st;
            }
        } else if (mk_gen_greedy(s->b_slot[g]->seq)) {
            /* greedy and alone: the token, not the logits (on CUDA the argmax stays on the device
             * and the next step is queued ahead while this one's token is streamed) */
            int32_t nx = -1;
            s->b_st[g] = mk_engine_forward_argmax(s->b_eng[g], &s->b_ids[g], 1, &nx);
            mk_gen_fed_id(s->b_slot[g]->seq, s->b_st[g], nx);
        } else {
            s->b_st[g] = mk_engine_forward(s->b_eng[g], &s->b_ids[g], 1, MK_LOGITS_LAST,
                                           mk_gen_feed_buf(s->b_slot[g]->seq), NULL);
            mk_gen_fed(s->b_slot[g]->seq, s->b_st[g]);
        }
    }
    pthread_mutex_lock(&s->metrics.mu);
    s->metrics.dec_steps += steps;
    s->metrics.dec_seqs += (uint64_t)n;
    pthread_mutex_unlock(&s->metrics.mu);
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < n; i++)
        if (s->b_st[i] != MK_OK)
            end_job(s, s->b_slot[i], s->b_st[i]);
}

static void *sched_main(void *arg) {
    mk_server *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->quit && !s->busy && !s->qlen)
            pthread_cond_wait(&s->sched_cv, &s->mu);
        if (s->quit && !s->busy && !s->qlen)
            break;
        while (s->qlen && s->busy < s->nslots) {
            srv_job *j = s->queue[s->qhead];
            s->qhead = (s->qhead + 1) % s->queue_cap;
            s->qlen--;
            if (j->cancel) { /* gone while waiting */
                j->finish = SRV_FIN_CANCEL;
                j->done = true;
                pthread_cond_broadcast(&j->cv);
                srv_job_unref_locked(j);
                continue;
            }
            start_job(s, j);
        }
        for (int i = 0; i < s->nslots; i++) {
            srv_slot *sl = &s->slots[i];
            if (!sl->job)
                continue;
            if (sl->job->finish == SRV_FIN_ERROR && !sl->seq) { /* failed to start */
                end_job(s, sl, MK_OK);
                continue;
            }
            if (sl->job->cancel)
                end_job(s, sl, MK_OK);
        }
        prefill_pieces(s);
        decode_step(s);
        if (s->m.store) { /* the store is the scheduler's: /metrics reads this copy */
            mk_expert_stats es;
            mk_expert_store_stats(s->m.store, &es);
            pthread_mutex_lock(&s->metrics.mu);
            s->metrics.streaming = true;
            s->metrics.ex_uses = es.uses;
            s->metrics.ex_hits = es.hits;
            s->metrics.ex_bytes = es.bytes_read;
            pthread_mutex_unlock(&s->metrics.mu);
        }
        pthread_cond_broadcast(&s->idle_cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

mk_status srv_sched_start(mk_server *s) {
    int n = s->m.n_engines;
    s->slots = mk_calloc((size_t)n, sizeof *s->slots);
    if (!s->slots)
        return mk_err(MK_E_NOMEM, "no memory for %d slots", n);
    s->nslots = n;
    for (int i = 0; i < n; i++) {
        srv_slot *sl = &s->slots[i];
        sl->srv = s;
        sl->e = s->m.engines[i];
        sl->cache_cap = mk_engine_max_ctx(sl->e);
        sl->cache = mk_malloc((size_t)sl->cache_cap * sizeof *sl->cache);
        if (!sl->cache)
            return mk_err(MK_E_NOMEM, "no memory for slot %d's prompt cache index (%lld tokens)", i,
                          (long long)sl->cache_cap);
        mk_engine_reset(sl->e);
    }
    int64_t V = mk_model_config(s->m.model)->vocab_size;
    s->b_eng = mk_calloc((size_t)n, sizeof *s->b_eng);
    s->b_slot = mk_calloc((size_t)n, sizeof *s->b_slot);
    s->b_ids = mk_calloc((size_t)n, sizeof *s->b_ids);
    s->b_st = mk_calloc((size_t)n, sizeof *s->b_st);
    s->b_logits = mk_malloc((size_t)n * (size_t)V * sizeof *s->b_logits);
    if (!s->b_eng || !s->b_slot || !s->b_ids || !s->b_st || !s->b_logits)
        return mk_err(MK_E_NOMEM, "no memory for the decode batch of %d slots (%lld logits)", n,
                      (long long)(n * V));
    /* the most slots one step takes: all of them, unless there are more
     * than a step may hold; 1 (each fed alone) for a family the batched
     * step does not know */
    s->nsnap = s->o.snapshots == 0 ? 4 : s->o.snapshots < 0 ? 0 : s->o.snapshots;
    if (s->nsnap > SRV_SNAPS)
        s->nsnap = SRV_SNAPS;
    s->snap_every = s->o.snap_every > 0 ? s->o.snap_every : SRV_SNAP_EVERY;
    s->snap_size = mk_engine_state_bytes(s->slots[0].e);
    s->snap_cap = (int64_t)s->nsnap * n;
    if (s->o.snap_bytes && s->snap_size && (int64_t)(s->o.snap_bytes / s->snap_size) < s->snap_cap)
        s->snap_cap = (int64_t)(s->o.snap_bytes / s->snap_size);
    s->batch_max = n;
    while (s->batch_max > 1 && !mk_engine_batchable(s->m.engines, s->batch_max))
        s->batch_max--;
    if (pthread_create(&s->sched, NULL, sched_main, s))
        return mk_err(MK_E_NOMEM, "cannot start the scheduler thread");
    s->sched_started = true;
    return MK_OK;
}

void srv_sched_stop(mk_server *s) {
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->qlen; i++)
        s->queue[(s->qhead + i) % s->queue_cap]->cancel = 1;
    for (int i = 0; i < s->nslots; i++)
        if (s->slots[i].job)
            s->slots[i].job->cancel = 1;
    s->quit = true;
    pthread_cond_broadcast(&s->sched_cv);
    pthread_mutex_unlock(&s->mu);
    if (s->sched_started)
        pthread_join(s->sched, NULL);
    s->sched_started = false;
    for (int i = 0; s->slots && i < s->nslots; i++) {
        free(s->slots[i].cache);
        free(s->slots[i].raw);
        snaps_drop_after(&s->slots[i], 0);
    }
    free(s->slots);
    s->slots = NULL;
    free(s->b_eng);
    free(s->b_slot);
    free(s->b_ids);
    free(s->b_logits);
    free(s->b_st);
    s->b_st = NULL;
    s->b_eng = NULL;
    s->b_slot = NULL;
    s->b_ids = NULL;
    s->b_logits = NULL;
    s->nslots = 0;
}
