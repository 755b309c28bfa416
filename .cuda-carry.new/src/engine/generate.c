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

mk_status mk_generate(mk_engine *e, const int32_t *prompt, int64_t np, const mk_gen_opts *o,
                      mk_gen_result *r) {
    memset(r, 0, sizeof *r);
    if (!o || !o->sampler || o->max_tokens <= 0 || np <= 0 || !prompt)
        return mk_err(MK_E_ARG, "generate: bad arguments (prompt %lld tokens, max_tokens %lld)",
                      (long long)np, o ? (long long)o->max_tokens : 0LL);
    int64_t V = mk_model_config(mk_engine_model(e))->vocab_size;
    int64_t cap = np + o->max_tokens;
    int32_t *hist = mk_malloc((size_t)cap * sizeof *hist);
    float *logits = mk_malloc((size_t)V * sizeof *logits);
    mk_tok_stream *ts = NULL;
    mk_status st = hist && logits ? MK_OK
                                  : mk_err(MK_E_NOMEM, "generate: no memory for %lld tokens of "
                                           "history and %lld logits", (long long)cap, (long long)V);
    if (st == MK_OK && o->tok && o->on_token)
        st = mk_tok_stream_create(o->tok, true, &ts);
    if (st != MK_OK)
        goto out;
    memcpy(hist, prompt, (size_t)np * sizeof *hist);
    int64_t nh = np;
    double t0 = now_s();
    st = mk_engine_forward(e, prompt, np, MK_LOGITS_LAST, logits, NULL);
    double t1 = now_s();
    r->prefill_s = t1 - t0;
    r->reason = MK_GEN_STOP_LENGTH;
    while (st == MK_OK && nh - np < o->max_tokens) {
        if (o->cancel && *o->cancel) {
            r->reason = MK_GEN_STOP_CANCELLED;
            break;
        }
        int32_t id = mk_sampler_sample(o->sampler, logits, hist, nh);
        if (mk_gen_stopset_has(o->stop, id)) {
            r->reason = MK_GEN_STOP_ID;
            break;
        }
        hist[nh++] = id;
        if (!emit(o, ts, id)) {
            r->reason = MK_GEN_STOP_CANCELLED;
            break;
        }
        if (nh - np >= o->max_tokens)
            break;
        if (mk_engine_pos(e) >= mk_engine_max_ctx(e)) {
            r->reason = MK_GEN_STOP_CTX_FULL;
            break;
        }
        st = mk_engine_forward(e, &id, 1, MK_LOGITS_LAST, logits, NULL);
    }
    r->decode_s = now_s() - t1;
    if (ts && o->on_token) { /* the bytes of a code point still held back */
        const char *txt;
        size_t len;
        if (mk_tok_stream_flush(ts, &txt, &len) == MK_OK && len)
            o->on_token(o->user, -1, txt, len);
    }
    r->n = nh - np;
    memmove(hist, hist + np, (size_t)r->n * sizeof *hist);
    r->ids = hist;
    hist = NULL;
out:
    mk_tok_stream_free(ts);
    free(hist);
    free(logits);
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
