/* Tokenizer: Hugging Face tokenizer.json (byte-level BPE, as shipped with
 * Qwen3 / Qwen3.5 / DeepSeek-V3 / gpt-oss) or a tiktoken rank file (Kimi-K2's
 * tiktoken.model) to token ids and back.
 *
 * mk_tok_load() reads tokenizer.json (and, beside it, tokenizer_config.json
 * and generation_config.json for the end-of-sequence ids). A model directory
 * without tokenizer.json but with tiktoken.model is read as Kimi-K2's:
 * tiktoken ranks, Kimi's split pattern, the special tokens of
 * tokenizer_config.json's added_tokens_decoder (tok_tiktoken.c). Encoding follows
 * HF tokenizers: added tokens matched first (longest match), normalizer,
 * pre-tokenizer (regex Split + ByteLevel), BPE merges, post-processor.
 * Decoding yields valid UTF-8 only; mk_tok_stream does it incrementally,
 * holding back the bytes of a code point split across tokens.
 *
 * A loaded tokenizer is read-only apart from an internal, locked cache: one
 * mk_tok may serve encode/decode calls from many threads. A stream belongs to
 * one thread at a time. */
#ifndef MOEKIT_TOKENIZER_H
#define MOEKIT_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "moekit/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mk_tok mk_tok;
typedef struct mk_tok_stream mk_tok_stream;

/* Encode flags. */
enum {
    /* Let the post-processor add what it adds (BOS/EOS for a
     * TemplateProcessing; nothing for Qwen3's or DeepSeek-V3's ByteLevel). */
    MK_TOK_ADD_SPECIAL = 1u << 0,
    /* Do not recognise special tokens in the text: "<|im_end|>" typed by a
     * user is encoded as plain text. Non-special added tokens still match. */
    MK_TOK_SPLIT_SPECIAL = 1u << 1,
};

/* Load a tokenizer. `path` is a tokenizer.json file, a model directory
 * holding one (or else a tiktoken.model), or a tiktoken rank file named
 * tiktoken.model or *.tiktoken (its tokenizer_config.json beside it). On failure *out is NULL and mk_err_msg() names the file and
 * field at fault (MK_E_IO, MK_E_FORMAT, MK_E_UNSUPPORTED, MK_E_NOMEM). */
mk_status mk_tok_load(const char *path, mk_tok **out);
void mk_tok_free(mk_tok *tok); /* NULL ok */

/* Encode `len` bytes of UTF-8 text (need not be NUL-terminated). On success
 * *ids is a malloc'd array of *n ids (free() it; never NULL on success).
 * Invalid UTF-8 is MK_E_ARG. */
mk_status mk_tok_encode(const mk_tok *tok, const char *text, size_t len, unsigned flags,
                        int32_t **ids, size_t *n);

/* A byte range [off, off + len) of a text. */
typedef struct mk_tok_span {
    size_t off, len;
} mk_tok_span;

/* mk_tok_encode where special tokens, and the added tokens whose ids are in
 * deny[0..n_deny) (markers that tokenizer.json does not flag special, such
 * as DeepSeek-V3's <｜User｜>), are recognised only inside the n_ctl control
 * spans (sorted, disjoint): the parts of the text the caller wrote itself,
 * a chat template's markers. Their text anywhere else, such as "<|im_end|>"
 * in a user's message, is encoded as plain text. With n_ctl == 0 none of
 * them matches. Other added tokens match anywhere, as with
 * MK_TOK_SPLIT_SPECIAL. A span outside the text or out of order is
 * MK_E_ARG. mk_chat_encode (chat.h) is the usual caller. */
mk_status mk_tok_encode_ctl(const mk_tok *tok, const char *text, size_t len, unsigned flags,
                            const mk_tok_span *ctl, size_t n_ctl, const int32_t *deny, size_t n_deny,
                            int32_t **ids, size_t *n);

/* Decode ids to text: *text is malloc'd, NUL-terminated, valid UTF-8 (byte
 * sequences that do not form UTF-8 become U+FFFD, as HF does); *len excludes
 * the NUL. `skip_special` drops special tokens. An id outside the vocabulary
 * is MK_E_ARG. */
mk_status mk_tok_decode(const mk_tok *tok, const int32_t *ids, size_t n, bool skip_special,
                        char **text, size_t *len);

/* Incremental decoding for streamed generation. Each push returns the text
 * that became complete: never half a code point, never byte-level stand-ins.
 * The concatenation of all pushes and the final flush equals mk_tok_decode of
 * all ids. *text points into the stream and is valid until the next call on
 * it; *len may be 0. The tokenizer must outlive the stream. */
mk_status mk_tok_stream_create(const mk_tok *tok, bool skip_special, mk_tok_stream **out);
mk_status mk_tok_stream_push(mk_tok_stream *s, int32_t id, const char **text, size_t *len);
/* End of sequence: bytes still held (an incomplete code point) come out as
 * U+FFFD. The stream is then empty and may be reused. */
mk_status mk_tok_stream_flush(mk_tok_stream *s, const char **text, size_t *len);
void mk_tok_stream_free(mk_tok_stream *s); /* NULL ok */

/* Number of ids: 1 + the largest id of the vocabulary and added tokens. */
size_t mk_tok_vocab_size(const mk_tok *tok);
/* The tokenizer fits a model of vocab_size ids: every added token and the
 * EOS / BOS ids are below it (MK_E_MISMATCH naming the token otherwise).
 * The engine commands call it after loading both. */
mk_status mk_tok_check_model_vocab(const mk_tok *tok, int64_t vocab_size);
/* Id of a token given as its vocabulary string (added tokens such as
 * "<|im_end|>" by their content), or -1. */
int32_t mk_tok_token_id(const mk_tok *tok, const char *token);
/* Vocabulary string of an id (byte-level form, e.g. "Ġthe"; not
 * NUL-terminated: *len bytes), or NULL for an unused or out-of-range id. */
const char *mk_tok_token_str(const mk_tok *tok, int32_t id, size_t *len);
/* The bytes an id decodes to (byte-level stand-ins mapped back, an added
 * token's content; not NUL-terminated: *len bytes), or NULL for an unused
 * or out-of-range id, or when the tokenizer has no decoder (HF then joins
 * tokens with spaces, so an id alone has no fixed bytes). Constrained
 * decoding (grammar.h) reads the vocabulary through it. */
const char *mk_tok_token_bytes(const mk_tok *tok, int32_t id, size_t *len);
/* Whether an id is a special added token (skipped by skip_special). */
bool mk_tok_is_special(const mk_tok *tok, int32_t id);
/* End-of-sequence ids: tokenizer_config.json's eos_token, then
 * generation_config.json's eos_token_id (int or list), without duplicates.
 * Returns the count (0 when neither file names one); *ids stays owned by the
 * tokenizer. */
size_t mk_tok_eos_ids(const mk_tok *tok, const int32_t **ids);
/* tokenizer_config.json's bos_token (else generation_config.json's
 * bos_token_id) or -1. Informational: encode adds BOS only when the
 * post-processor says so. */
int32_t mk_tok_bos_id(const mk_tok *tok);

#ifdef __cplusplus
}
#endif
#endif
