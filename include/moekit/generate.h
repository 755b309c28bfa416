/* The generation loop: what `moekit run` does and what the server will do
 * per request, in the library so both share it.
 *
 * mk_generate prefills a prompt on an engine, then samples one token at a
 * time until a stop id, max_tokens, the end of the engine's context, or
 * cancellation (the per-token callback returns false, or *cancel becomes
 * non-zero from another thread). With a tokenizer each token's text comes
 * out through the callback as it is produced, decoded incrementally (a code
 * point split across tokens is held back until complete).
 *
 * mk_gen_stopset_model gathers a model's stop ids; mk_gen_fit_chat renders
 * a conversation and drops its oldest exchanges until it fits the context,
 * the policy an interactive chat and a server share. */
#ifndef MOEKIT_GENERATE_H
#define MOEKIT_GENERATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "moekit/chat.h"
#include "moekit/engine.h"
#include "moekit/sample.h"
#include "moekit/status.h"
#include "moekit/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MK_GEN_MAX_STOP 32

/* A set of token ids that end generation (never emitted themselves). */
typedef struct mk_gen_stopset {
    int32_t ids[MK_GEN_MAX_STOP];
    int n;
} mk_gen_stopset;

/* Add id (ignored when negative or already there; MK_E_ARG when full). */
mk_status mk_gen_stopset_add(mk_gen_stopset *s, int32_t id);
bool mk_gen_stopset_has(const mk_gen_stopset *s, int32_t id);
/* The model's stop ids: the tokenizer's EOS ids (tokenizer_config.json,
 * generation_config.json), <|im_end|> where the vocabulary has it, and
 * config.json's eos_token_id. tok may be NULL (config ids only). */
mk_status mk_gen_stopset_model(mk_gen_stopset *s, const mk_model *m, const mk_tok *tok);

/* Why generation ended. */
typedef enum mk_gen_stop {
    MK_GEN_STOP_ID = 0,    /* a stop id was sampled */
    MK_GEN_STOP_LENGTH,    /* max_tokens generated */
    MK_GEN_STOP_CTX_FULL,  /* the engine's context is full */
    MK_GEN_STOP_CANCELLED, /* the callback returned false or *cancel was set */
} mk_gen_stop;

/* Called once per generated token, in order: `text` is its decoded text
 * (len bytes, not NUL-terminated; may be empty while a code point is held
 * back) or NULL without a tokenizer. At the end, with id -1, once more for
 * the held-back bytes when there are any. Return false to cancel. */
typedef bool (*mk_gen_token_fn)(void *user, int32_t id, const char *text, size_t len);
/* Called before each token is sampled with the model's logits[vocab] as the
 * forward pass returned them (before penalties and temperature): log
 * probabilities for a server. The array is only valid during the call. */
typedef void (*mk_gen_logits_fn)(void *user, const float *logits, int64_t vocab);
/* Called before each token is sampled, after on_logits, with logits[vocab]
 * it may change: a token mask (constrained decoding; the server's test-only
 * forced output) sets the logits of forbidden ids to -INFINITY. At least
 * one id must stay finite. */
typedef void (*mk_gen_mask_fn)(void *user, float *logits, int64_t vocab);

typedef struct mk_gen_opts {
    int64_t max_tokens;          /* > 0 */
    const mk_gen_stopset *stop;  /* NULL: none */
    mk_sampler *sampler;         /* required */
    const mk_tok *tok;           /* NULL: no text in callbacks */
    mk_gen_token_fn on_token;    /* NULL: none */
    mk_gen_logits_fn on_logits;  /* NULL: none (same user) */
    mk_gen_mask_fn on_mask;      /* NULL: none (same user) */
    bool keep_special;           /* on_token's text keeps special tokens (a chat output parser
                                    reads markup such as harmony's <|channel|>); else dropped */
    void *user;
    const volatile int *cancel;  /* NULL, or set non-zero (another thread) to stop */
    int64_t cached;              /* > 0: prompt[0..cached) are already in the engine (a
                                    prompt cache): its position must equal cached, prefill
                                    starts at prompt[cached] (< np); penalties see them all */
    int64_t prefill_step;        /* mk_gen_step: prompt tokens per prefill step (<= 0: all) */
} mk_gen_opts;

typedef struct mk_gen_result {
    int32_t *ids;          /* the generated ids (malloc'd; stop id excluded) */
    int64_t n;
    mk_gen_stop reason;
    double prefill_s, decode_s;
} mk_gen_result;

/* Prefill prompt[0..np) at the engine's current position and generate (see
 * above). On error *r still holds what was generated before it (free ids).
 * It is mk_gen_begin, mk_gen_step until done, mk_gen_end. */
mk_status mk_generate(mk_engine *e, const int32_t *prompt, int64_t np, const mk_gen_opts *o,
                      mk_gen_result *r);

/* The same loop in steps, for a scheduler that interleaves sequences (the
 * server): each step is one prefill piece (o->prefill_step tokens) or one
 * sampled token, so several sequences on their own engines advance in
 * turn and their tokens equal mk_generate's. `o` and the prompt are copied
 * (o->sampler, o->tok, o->stop and o->user must outlive the sequence). */
typedef struct mk_gen_seq mk_gen_seq;
mk_status mk_gen_begin(mk_engine *e, const int32_t *prompt, int64_t np, const mk_gen_opts *o,
                       mk_gen_seq **out);
/* One step; *done becomes true when generation has ended (by a stop reason
 * or an error, which is returned; the engine's sequence must then be
 * reset). Calling it after done is a no-op. */
mk_status mk_gen_step(mk_gen_seq *s, bool *done);
/* The decode step in two halves, for a scheduler that runs several
 * sequences' forwards in one batch (mk_engine_decode_batch):
 * mk_gen_sample samples from the current logits, emits the token and
 * decides whether generation goes on; if so (*done false) *next is the
 * token to feed: the caller appends it to the sequence's engine and writes
 * its logits (vocab_size floats) into mk_gen_feed_buf, then calls
 * mk_gen_fed with the forward's status (an error ends the sequence). The
 * two halves together are exactly one mk_gen_step of decode. Only while
 * mk_gen_decoding: prefill done, nothing pending (else MK_E_ARG, ending
 * the sequence). */
bool mk_gen_decoding(const mk_gen_seq *s);
mk_status mk_gen_sample(mk_gen_seq *s, bool *done, int32_t *next);
float *mk_gen_feed_buf(mk_gen_seq *s);
void mk_gen_fed(mk_gen_seq *s, mk_status st);
/* A plain-greedy sequence (greedy sampler, no logits or mask observer: its
 * next token is the argmax and nothing reads its logits) may be fed with
 * mk_engine_forward_argmax instead: the caller passes that call's status
 * and token here in place of the logits and mk_gen_fed. On a device
 * backend that skips the logits' download, and consecutive greedy steps
 * queue one ahead (mk_engine_forward_argmax's decode lookahead). A
 * sequence that is not plain-greedy, fed this way, ends (it has no logits
 * to sample from). */
bool mk_gen_greedy(const mk_gen_seq *s);
void mk_gen_fed_id(mk_gen_seq *s, mk_status st, int32_t next);
/* Prompt tokens prefilled so far (cached ones included) and tokens generated. */
int64_t mk_gen_prefilled(const mk_gen_seq *s);
int64_t mk_gen_generated(const mk_gen_seq *s);
/* Finish: flushes held-back text through the callback, fills *r (r may be
 * NULL) and frees s (NULL ok). */
void mk_gen_end(mk_gen_seq *s, mk_gen_result *r);

/* A conversation's prompt ids that fit `room` tokens: renders msgs[0..*n)
 * with mk_chat_encode; while it does not fit, drops the oldest exchange
 * (from msgs[first] up to the next user message) and tries again. On
 * return *n is the messages kept (the dropped ones are moved out: msgs and
 * owned[] are compacted, owned[i] freed for dropped i; owned may be NULL),
 * *dropped how many were dropped, and *ids the prompt, or NULL with
 * *fits false when even the last message alone does not fit. */
mk_status mk_gen_fit_chat(const mk_tok *tok, mk_chat_kind kind, unsigned flags, mk_chat_msg *msgs,
                          char **owned, size_t *n, size_t first, int64_t room, int32_t **ids,
                          int64_t *n_ids, size_t *dropped, bool *fits);

#ifdef __cplusplus
}
#endif
#endif
