/* Decoding: ids -> UTF-8 text, whole or streamed.
 *
 * Every id's bytes were computed at load from the decoder chain (for
 * byte-level BPE: each stand-in character back to its byte). Tokens do not
 * end on code-point boundaries - a CJK character or an emoji is often split
 * over two or three tokens - so the stream keeps the tail of an unfinished
 * UTF-8 sequence (at most 3 bytes) until the next token completes it, and
 * emits only whole, valid code points. Bytes that can never become valid
 * UTF-8 are replaced by U+FFFD per maximal subpart, matching HF's
 * String::from_utf8_lossy, so the streamed text and mk_tok_decode agree
 * byte for byte with each other and with HF's decode. */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "tokenizer/tok_impl.h"

static const char REPLACEMENT[] = "\xEF\xBF\xBD"; /* U+FFFD */

struct mk_tok_stream {
    const mk_tok *t;
    bool skip_special;
    bool started;        /* for the space-joining of a tokenizer without decoder */
    uint8_t pend[4];     /* held-back prefix of an unfinished code point */
    size_t npend;
    char *out;           /* what the last call emitted */
    size_t n, cap;
    uint8_t *in;         /* scratch: pend + new bytes */
    size_t in_cap;
};

static mk_status reserve(void **p, size_t *cap, size_t need) {
    if (need <= *cap)
        return MK_OK;
    size_t nc = *cap ? *cap : 64;
    while (nc < need)
        nc *= 2;
    void *np = mk_realloc(*p, nc);
    if (!np)
        return mk_err(MK_E_NOMEM, "tokenizer: out of memory decoding");
    *p = np;
    *cap = nc;
    return MK_OK;
}

mk_status mk_tok_stream_create(const mk_tok *t, bool skip_special, mk_tok_stream **out) {
    if (!out || !t)
        return mk_err(MK_E_ARG, "mk_tok_stream_create: NULL argument");
    *out = mk_calloc(1, sizeof **out);
    if (!*out)
        return mk_err(MK_E_NOMEM, "tokenizer: no memory for a decoding stream");
    (*out)->t = t;
    (*out)->skip_special = skip_special;
    return MK_OK;
}

void mk_tok_stream_free(mk_tok_stream *s) {
    if (!s)
        return;
    free(s->out);
    free(s->in);
    free(s);
}

/* Emit the valid prefix of in[0..n) (repairing invalid bytes) into s->out,
 * keeping an unfinished final sequence in s->pend. */
static mk_status consume(mk_tok_stream *s, const uint8_t *in, size_t n) {
    /* Worst case every byte becomes a 3-byte U+FFFD. */
    MK_TRY(reserve((void **)&s->out, &s->cap, s->n + 3 * n + 1));
    size_t i = 0, l;
    s->npend = 0;
    while (i < n) {
        if (in[i] < 0x80) {
            s->out[s->n++] = (char)in[i++];
            continue;
        }
        tok_u8_state st = tok_utf8_scan(in + i, n - i, &l);
        if (st == TOK_U8_PARTIAL) {
            memcpy(s->pend, in + i, l); /* l <= 3 */
            s->npend = l;
            break;
        }
        if (st == TOK_U8_OK)
            memcpy(s->out + s->n, in + i, l), s->n += l;
        else
            memcpy(s->out + s->n, REPLACEMENT, 3), s->n += 3;
        i += l;
    }
    s->out[s->n] = 0;
    return MK_OK;
}

static mk_status push(mk_tok_stream *s, int32_t id) {
    const mk_tok *t = s->t;
    if (id < 0 || (size_t)id >= t->n_ids || !(t->id_flags[id] & TOK_ID_PRESENT))
        return mk_err(MK_E_ARG, "token id %d is not in the vocabulary (size %zu)", (int)id, t->n_ids);
    if (s->skip_special && (t->id_flags[id] & TOK_ID_SPECIAL))
        return MK_OK;
    tok_span b = t->id_bytes[id];
    bool space = t->dec_join_space && s->started;
    s->started = true;
    size_t n = s->npend + space + b.len;
    MK_TRY(reserve((void **)&s->in, &s->in_cap, n));
    /* pend and bytes are NULL while empty (nothing pending, an empty token) */
    if (s->npend)
        memcpy(s->in, s->pend, s->npend);
    if (space)
        s->in[s->npend] = ' ';
    if (b.len)
        memcpy(s->in + s->npend + space, t->bytes + b.off, b.len);
    return consume(s, s->in, n);
}

mk_status mk_tok_stream_push(mk_tok_stream *s, int32_t id, const char **text, size_t *len) {
    if (!s || !text || !len)
        return mk_err(MK_E_ARG, "mk_tok_stream_push: NULL argument");
    s->n = 0;
    mk_status st = push(s, id);
    *text = s->out ? s->out : "";
    *len = s->n;
    return st;
}

mk_status mk_tok_stream_flush(mk_tok_stream *s, const char **text, size_t *len) {
    if (!s || !text || !len)
        return mk_err(MK_E_ARG, "mk_tok_stream_flush: NULL argument");
    s->n = 0;
    MK_TRY(reserve((void **)&s->out, &s->cap, 4));
    if (s->npend) /* a truncated sequence is one maximal subpart: one U+FFFD */
        memcpy(s->out, REPLACEMENT, 3), s->n = 3;
    s->out[s->n] = 0;
    s->npend = 0;
    s->started = false;
    *text = s->out;
    *len = s->n;
    return MK_OK;
}

mk_status mk_tok_decode(const mk_tok *t, const int32_t *ids, size_t n, bool skip_special, char **text,
                        size_t *len) {
    if (!text || !len || !t || (!ids && n))
        return mk_err(MK_E_ARG, "mk_tok_decode: NULL argument");
    *text = NULL;
    *len = 0;
    /* One stream whose output accumulates: push() appends to s.out. */
    mk_tok_stream s = {.t = t, .skip_special = skip_special};
    mk_status st = reserve((void **)&s.out, &s.cap, 64);
    for (size_t i = 0; i < n && st == MK_OK; i++)
        st = push(&s, ids[i]);
    if (st == MK_OK && s.npend) {
        st = reserve((void **)&s.out, &s.cap, s.n + 4);
        if (st == MK_OK)
            memcpy(s.out + s.n, REPLACEMENT, 3), s.n += 3;
    }
    free(s.in);
    if (st != MK_OK) {
        free(s.out);
        return st;
    }
    s.out[s.n] = 0;
    *text = s.out;
    *len = s.n;
    return MK_OK;
}
