/* The generation loop (generate.h): prefill, sample, stream, stop; the
 * stop-id set of a model; the context policy of a conversation.
 *
 * The loop owns no output: text goes to the caller's callback, so `run`
 * prints it and a server would send it. Sampling sees the whole history
 * (prompt and generated ids) for its repetition penalty. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "engine/engine_impl.h" /* mk_engine_no_ahead */
#include "moekit/generate.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- stop ids ------------------------------------------------------------- */

mk_status mk_gen_stopset_add(mk_gen_stopset *s, int32_t id) {
    if (id < 0 || mk_gen_stopset_has(s, id))
        return MK_OK;
    if (s->n >= MK_GEN_MAX_STOP)
        return mk_err(MK_E_ARG, "more than %d stop ids", MK_GEN_MAX_STOP);
    s->ids[s->n++] = id;
    return MK_OK;
}

bool mk_gen_stopset_has(const mk_gen_stopset *s, int32_t id) {
    for (int i = 0; s && i < s->n; i++)
        if (s->ids[i] == id)
            return true;
    return false;
}

mk_status mk_gen_stopset_model(mk_gen_stopset *s, const mk_model *m, const mk_tok *tok) {
    if (tok) {
        const int32_t *eos;
        size_t ne = mk_tok_eos_ids(tok, &eos);
        for (size_t i = 0; i < ne; i++)
            MK_TRY(mk_gen_stopset_add(s, eos[i]));
        /* ChatML ends a turn with <|im_end|> whatever the configs say */
        MK_TRY(mk_gen_stopset_add(s, mk_tok_token_id(tok, "<|im_end|>")));
    }
    const mk_config *c = mk_model_config(m);
    for (int i = 0; i < c->n_eos; i++)
        MK_TRY(mk_gen_stopset_add(s, c->eos_ids[i]));
    return MK_OK;
}

/* ---- the loop ------------------------------------------------------------------ */

static bool emit(const mk_gen_opts *o, mk_tok_stream *ts, int32_t id) {
    if (!o->on_token)
        return true;
    const char *txt = NULL;
    size_t len = 0;
    if (ts && mk_tok_stream_push(ts, id, &txt, &len) != MK_OK) {
        txt = "";
        len = 0;
    }
    return o->on_token(o->user, id, ts ? txt : NULL, len);
}

struct mk_gen_seq {
    mk_engine *e;
    mk_gen_opts o;
    int32_t *hist; /* prompt then generated ids */
    int64_t np, nh, pf; /* prompt length, history length, prompt tokens in the engine */
    float *logits;
    int64_t V;
    bool argmax;  /* plain greedy, no logits observer: the engine's argmax, no logits */
    int32_t next; /* with argmax: the next token from the last forward */
    mk_tok_stream *ts;
    bool done;
    bool pending; /* mk_gen_sample chose a token whose logits are not fed yet */
    mk_gen_stop reason;
    double t0, t1, t_end;
};

mk_status mk_gen_begin(mk_engine *e, const int32_t *prompt, int64_t np, const mk_gen_opts *o,
                       mk_gen_seq **out) {
    *out = NULL;
    if (!o || !o->sampler || o->max_tokens <= 0 || np <= 0 || !prompt || o->cached < 0 ||
        o->cached >= np || (o->cached > 0 && o->cached != mk_engine_pos(e)))
        return mk_err(MK_E_ARG, "generate: bad arguments (prompt %lld tokens, %lld cached at "
                      "position %lld, max_tokens %lld)", (long long)np, o ? (long long)o->cached : 0LL,
                      (long long)mk_engine_pos(e), o ? (long long)o->max_tokens : 0LL);
    int64_t V = mk_model_config(mk_engine_model(e))->vocab_size;
    int64_t cap = np + o->max_tokens;
    mk_gen_seq *s = mk_calloc(1, sizeof *s);
    if (s) {
        s->hist = mk_malloc((size_t)cap * sizeof *s->hist);
        s->logits = mk_malloc((size_t)V * sizeof *s->logits);
    }
    if (!s || !s->hist || !s->logits) {
        mk_gen_end(s, NULL);
        return mk_err(MK_E_NOMEM, "generate: no memory for %lld tokens of history and %lld logits",
                      (long long)cap, (long long)V);
    }
    s->e = e;
    s->o = *o;
    s->V = V;
    s->argmax = !o->on_logits && !o->on_mask && mk_sampler_plain_greedy(o->sampler);
    if (o->tok && o->on_token) {
        mk_status st = mk_tok_stream_create(o->tok, !o->keep_special, &s->ts);
        if (st != MK_OK) {
            mk_gen_end(s, NULL);
            return st;
        }
    }
    memcpy(s->hist, prompt, (size_t)np * sizeof *s->hist);
    s->np = s->nh = np;
    s->pf = o->cached;
    s->reason = MK_GEN_STOP_LENGTH;
    s->t0 = s->t1 = now_s();
    *out = s;
    return MK_OK;
}

int64_t mk_gen_prefilled(const mk_gen_seq *s) { return s->pf; }
int64_t mk_gen_generated(const mk_gen_seq *s) { return s->nh - s->np; }

/* The sampling half of a decode step: sample from s->logits, emit, and
 * decide whether the sequence goes on (then *next is the id whose forward
 * gives the next logits). */
static void sample_next(mk_gen_seq *s, int32_t *next) {
    const mk_gen_opts *o = &s->o;
    *next = -1;
    if (o->cancel && *o->cancel) {
        s->reason = MK_GEN_STOP_CANCELLED;
        s->done = true;
        return;
    }
    int32_t id;
    if (s->argmax) { /* what mk_sampler_sample would pick (mk_sampler_plain_greedy) */
        id = s->next;
    } else {
        if (o->on_logits)
            o->on_logits(o->user, s->logits, s->V);
        if (o->on_mask)
            o->on_mask(o->user, s->logits, s->V);
        id = mk_sampler_sample(o->sampler, s->logits, s->hist, s->nh);
    }
    if (mk_gen_stopset_has(o->stop, id)) {
        s->reason = MK_GEN_STOP_ID;
        s->done = true;
        return;
    }
    s->hist[s->nh++] = id;
    if (!emit(o, s->ts, id)) {
        s->reason = MK_GEN_STOP_CANCELLED;
        s->done = true;
        return;
    }
    if (s->nh - s->np >= o->max_tokens) {
        s->done = true;
        return;
    }
    if (mk_engine_pos(s->e) >= mk_engine_max_ctx(s->e)) {
        s->reason = MK_GEN_STOP_CTX_FULL;
        s->done = true;
        return;
    }
    *next = id;
}

/* The forward about to run gives the last token max_tokens allows: the
 * engine queues no step ahead of it (its decode lookahead), which nothing
 * would take. */
static void last_forward(mk_gen_seq *s) {
    if (s->argmax && s->nh - s->np + 1 >= s->o.max_tokens)
        mk_engine_no_ahead(s->e);
}

static mk_status decode_step(mk_gen_seq *s) {
    int32_t id;
    sample_next(s, &id);
    if (s->done)
        return MK_OK;
    last_forward(s);
    mk_status st = s->argmax ? mk_engine_forward_argmax(s->e, &id, 1, &s->next)
                             : mk_engine_forward(s->e, &id, 1, MK_LOGITS_LAST, s->logits, NULL);
    if (st != MK_OK)
        s->done = true;
    return st;
}

mk_status mk_gen_step(mk_gen_seq *s, bool *done) {
    mk_status st = MK_OK;
    if (!s->done && s->pending) { /* mk_gen_sample's token was never fed */
        s->done = true;
        st = mk_err(MK_E_ARG, "generate: a step before the sampled token's logits were fed");
    } else if (!s->done && s->pf < s->np) { /* a prefill piece; logits only after the last one */
        int64_t n = s->np - s->pf;
        if (s->o.prefill_step > 0 && n > s->o.prefill_step)
            n = s->o.prefill_step;
        bool last = s->pf + n == s->np;
        if (last && s->argmax) {
            last_forward(s);
            st = mk_engine_forward_argmax(s->e, s->hist + s->pf, n, &s->next);
        } else {
            st = mk_engine_forward(s->e, s->hist + s->pf, n, last ? MK_LOGITS_LAST : MK_LOGITS_NONE,
                                   last ? s->logits : NULL, NULL);
        }
        s->pf += n;
        if (last)
            s->t1 = now_s();
        if (st != MK_OK)
            s->done = true;
    } else if (!s->done) {
        st = decode_step(s);
    }
    if (s->done && !s->t_end)
        s->t_end = now_s();
    *done = s->done;
    return st;
}

bool mk_gen_decoding(const mk_gen_seq *s) { return !s->done && s->pf >= s->np && !s->pending; }

mk_status mk_gen_sample(mk_gen_seq *s, bool *done, int32_t *next) {
    *next = -1;
    if (!s->done && (s->pf < s->np || s->pending)) {
        s->done = true;
        *done = true;
        return mk_err(MK_E_ARG, "generate: a token sampled %s", s->pending ? "before the last one's "
                      "logits were fed" : "before the prompt was prefilled");
    }
    if (!s->done) {
        sample_next(s, next);
        s->pending = !s->done;
        if (s->pending)
            last_forward(s); /* the caller's mk_engine_forward_argmax (mk_gen_fed_id) */
    }
    if (s->done && !s->t_end)
        s->t_end = now_s();
    *done = s->done;
    return MK_OK;
}

float *mk_gen_feed_buf(mk_gen_seq *s) { return s->logits; }

void mk_gen_fed(mk_gen_seq *s, mk_status st) {
    s->pending = false;
    /* a plain-greedy sequence reads its next token from s->next (what
     * mk_engine_forward_argmax gives on its own): the argmax of the fed logits */
    if (st == MK_OK && s->argmax)
        s->next = mk_argmax(s->logits, s->V);
    if (st != MK_OK && !s->done) {
        s->done = true;
        s->t_end = now_s();
    }
}

bool mk_gen_greedy(const mk_gen_seq *s) { return s->argmax; }

void mk_gen_fed_id(mk_gen_seq *s, mk_status st, int32_t next) {
    s->pending = false;
    if (st == MK_OK && s->argmax)
        s->next = next;
    if ((st != MK_OK || !s->argmax) && !s->done) { /* not greedy: it has no logits to sample from */
        s->done = true;
        s->t_end = now_s();
    }
}

void mk_gen_end(mk_gen_seq *s, mk_gen_result *r) {
    if (r)
        memset(r, 0, sizeof *r);
    if (!s)
        return;
    if (s->ts && s->o.on_token) { /* the bytes of a code point still held back */
        const char *txt;
        size_t len;
        if (mk_tok_stream_flush(s->ts, &txt, &len) == MK_OK && len)
            s->o.on_token(s->o.user, -1, txt, len);
    }
    if (r) {
        r->prefill_s = s->t1 - s->t0;
        r->decode_s = (s->t_end ? s->t_end : now_s()) - s->t1;
        r->reason = s->reason;
        r->n = s->nh - s->np;
        memmove(s->hist, s->hist + s->np, (size_t)r->n * sizeof *s->hist);
        r->ids = s->hist;
        s->hist = NULL;
    }
    mk_tok_stream_free(s->ts);
    free(s->hist);
    free(s->logits);
    free(s);
}

mk_status mk_generate(mk_engine *e, const int32_t *prompt, int64_t np, const mk_gen_opts *o,
                      mk_gen_result *r) {
    memset(r, 0, sizeof *r);
    mk_gen_seq *s;
    MK_TRY(mk_gen_begin(e, prompt, np, o, &s));
    bool done = false;
    mk_status st = MK_OK;
    while (!done && st == MK_OK)
        st = mk_gen_step(s, &done);
    mk_gen_end(s, r);
    return st;
}

/* ---- context policy of a conversation ---------------------------------------- */

mk_status mk_gen_fit_chat(const mk_tok *tok, mk_chat_kind kind, unsigned flags, mk_chat_msg *msgs,
                          char **owned, size_t *n, size_t first, int64_t room, int32_t **ids,
                          int64_t *n_ids, size_t *dropped, bool *fits) {
    *fits = true;
    *dropped = 0;
    *ids = NULL;
    for (;;) {
        size_t nn = 0;
        MK_TRY(mk_chat_encode(tok, kind, msgs, *n, flags, ids, &nn));
        *n_ids = (int64_t)nn;
        if (*n_ids <= room)
            return MK_OK;
        free(*ids);
        *ids = NULL;
        if (first + 1 >= *n) { /* only the newest message is left: it cannot fit */
            *fits = false;
            return MK_OK;
        }
        /* the oldest exchange: from `first` to the next user message */
        size_t end = first + 1;
        while (end < *n - 1 && strcmp(msgs[end].role, "user") != 0)
            end++;
        for (size_t i = first; owned && i < end; i++)
            free(owned[i]);
        memmove(msgs + first, msgs + end, (*n - end) * sizeof *msgs);
        if (owned)
            memmove(owned + first, owned + end, (*n - end) * sizeof *owned);
        *dropped += end - first;
        *n -= end - first;
    }
}
