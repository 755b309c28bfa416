/* Internal layout of the tokenizer (include/moekit/tokenizer.h is the API).
 *
 * A loaded tokenizer is a set of immutable tables built once from
 * tokenizer.json by tok_load.c and then only read, so encode and decode may
 * run on many threads at once; the one mutable part, the word -> ids cache of
 * the BPE model, sits behind its own mutex (tok_bpe.c).
 *
 * The encode pipeline follows Hugging Face tokenizers step by step:
 *   added tokens that are not "normalized" are cut out of the raw text
 *   -> each remaining piece is normalized (NFC, ...) -> "normalized" added
 *   tokens are cut out of that -> the pre-tokenizer steps split it into words
 *   (regex Split, ByteLevel) -> the BPE model turns each word into ids
 *   -> the post-processor adds BOS/EOS where it says so.
 * Decoding maps every id to bytes (precomputed per id from the decoder chain)
 * and repairs the concatenation into valid UTF-8 (tok_decode.c). */
#ifndef MK_TOK_IMPL_H
#define MK_TOK_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "moekit/status.h"
#include "moekit/tokenizer.h"
#include "tokenizer/tok_map.h"

/* Ids are stored in dense tables; a tokenizer.json naming an id above this
 * is refused instead of making us allocate gigabytes. */
#define TOK_MAX_ID (1 << 24)

/* ---- growable buffers ---------------------------------------------------- */

typedef struct tok_ivec {
    int32_t *p;
    size_t n, cap;
} tok_ivec;

mk_status tok_ivec_push(tok_ivec *v, int32_t x);
mk_status tok_ivec_append(tok_ivec *v, const int32_t *x, size_t n);
void tok_ivec_free(tok_ivec *v);

/* ---- UTF-8 (tok_utf8.c) -------------------------------------------------- */

typedef enum { TOK_U8_OK, TOK_U8_PARTIAL, TOK_U8_BAD } tok_u8_state;

/* Classify the sequence at p[0..n): OK (a whole valid code point of *len
 * bytes), PARTIAL (a valid but truncated prefix: wait for more bytes) or BAD
 * (*len = length of the maximal invalid subpart, replaced by one U+FFFD as
 * Unicode 3.9 / Rust's from_utf8_lossy do). n must be >= 1. */
tok_u8_state tok_utf8_scan(const uint8_t *p, size_t n, size_t *len);
/* Byte offset of the first invalid byte of s, or n when s is valid UTF-8. */
size_t tok_utf8_check(const char *s, size_t n);
/* Decode the valid code point at s (callers validated s first). */
uint32_t tok_utf8_decode(const char *s, size_t n, size_t *len);
/* Encode cp into out (>= 4 bytes); returns the byte count. */
size_t tok_utf8_encode(uint32_t cp, char *out);

/* ---- GPT-2 byte <-> unicode map (tok_bytelevel.c) ------------------------- */

/* UTF-8 of the printable character that stands for byte b (1 or 2 bytes). */
const char *tok_bl_char(uint8_t b, size_t *len);
/* Inverse: the byte a code point stands for, or -1 if it is not one of the
 * 256 byte-level characters. */
int tok_bl_byte(uint32_t cp);

/* ---- pieces of the model ------------------------------------------------- */

typedef enum tok_norm {
    TOK_NORM_NFC,
    TOK_NORM_NFD,
    TOK_NORM_NFKC,
    TOK_NORM_NFKD,
} tok_norm;

/* SplitDelimiterBehavior of HF tokenizers. */
typedef enum tok_split_behavior {
    TOK_SPLIT_REMOVED,
    TOK_SPLIT_ISOLATED,
    TOK_SPLIT_MERGED_PREV,
    TOK_SPLIT_MERGED_NEXT,
    TOK_SPLIT_CONTIGUOUS,
} tok_split_behavior;

typedef enum tok_pre_type { TOK_PRE_SPLIT, TOK_PRE_BYTELEVEL } tok_pre_type;

/* One pre-tokenizer step; a "Sequence" is flattened into consecutive steps. */
typedef struct tok_pre_step {
    tok_pre_type type;
    pcre2_code *re;              /* Split: its pattern; ByteLevel: GPT-2 regex or NULL */
    tok_split_behavior behavior; /* Split only (ByteLevel's regex isolates) */
    bool invert;                 /* Split: the matches are the pieces to keep apart */
    bool add_prefix_space;       /* ByteLevel */
} tok_pre_step;

typedef struct tok_added {
    int32_t id;
    char *content; /* as matched: NFC'd etc. first when `normalized` */
    size_t len;
    bool special, single_word, lstrip, rstrip, normalized;
} tok_added;

/* Byte trie of added-token contents: leftmost-longest matching like the
 * aho-corasick automaton HF uses. Children are a sibling list: added-token
 * sets are small (hundreds) and share long prefixes. */
typedef struct tok_trie_node {
    int32_t child, sibling; /* -1 = none */
    int32_t added;          /* index into mk_tok.added, -1 = no token ends here */
    uint8_t byte;
} tok_trie_node;

typedef struct tok_trie {
    tok_trie_node *nodes; /* node 0 is the root */
    size_t n, cap;
    bool first[256]; /* bytes some token starts with: skip others quickly */
} tok_trie;

/* Flags per id. */
enum {
    TOK_ID_PRESENT = 1u << 0, /* some vocab entry or added token has this id */
    TOK_ID_ADDED = 1u << 1,
    TOK_ID_SPECIAL = 1u << 2,
};

typedef struct tok_span {
    uint32_t off, len;
} tok_span;

typedef struct tok_cache tok_cache; /* tok_bpe.c */

struct mk_tok {
    char *path; /* the tokenizer.json read, for messages */

    /* model (BPE) */
    tok_smap vocab;   /* model vocab: token string -> id */
    tok_pmap merges;  /* (left id, right id) -> (rank, merged id) */
    bool ignore_merges, byte_fallback, fuse_unk;
    int32_t unk_id;   /* -1 = no unk token: an unknown character is an encode error (HF drops it) */
    char *cont_prefix; /* continuing_subword_prefix, NULL if none or empty */
    char *eow_suffix;  /* end_of_word_suffix, NULL if none or empty */
    bool byte_fallback_tokens; /* all 256 <0xXX> tokens exist */
    int32_t byte_ids[256];     /* ids of <0x00>..<0xFF> when byte_fallback */

    /* id tables, dense over [0, n_ids) */
    size_t n_ids;
    uint8_t *id_flags;
    tok_span *id_str;   /* token string (vocab form) into strs */
    tok_span *id_bytes; /* decoded bytes into bytes */
    char *strs, *bytes;
    size_t strs_len, bytes_len;

    /* added tokens */
    tok_added *added;
    size_t n_added;
    tok_trie trie_raw;  /* added tokens with normalized = false */
    tok_trie trie_norm; /* added tokens with normalized = true */
    tok_smap added_ids; /* content -> id, for mk_tok_token_id */

    /* normalizer */
    tok_norm *norms;
    size_t n_norms;

    /* pre-tokenizer */
    tok_pre_step *pre;
    size_t n_pre;

    /* post-processor: ids around the sequence when MK_TOK_ADD_SPECIAL */
    tok_ivec post_prefix, post_suffix;

    /* decoder */
    bool dec_join_space; /* no decoder: HF joins tokens with " " */

    /* Kimi's encode (tiktoken.model tokenizers): each piece of text between
     * special tokens is cut into chunks of 400,000 characters, and a chunk
     * again wherever a run of whitespace or of non-whitespace passes 25,000
     * characters; the chunks are encoded apart (tok_encode.c). */
    bool kimi_chunks;

    /* from tokenizer_config.json / generation_config.json */
    tok_ivec eos;
    int32_t bos_id;

    tok_cache *cache;
};

/* ---- stages (one file each) ---------------------------------------------- */

/* tok_load.c: the whole tokenizer.json -> mk_tok. */
mk_status tok_load_json(mk_tok *t, const char *path);
mk_status tok_load_configs(mk_tok *t, const char *dir);
/* tok_tiktoken.c: a tiktoken rank file (`path`, e.g. Kimi-K2's
 * tiktoken.model) with the tokenizer_config.json of `dir` -> mk_tok. */
mk_status tok_load_tiktoken(mk_tok *t, const char *path, const char *dir);

/* tok_trie.c */
mk_status tok_trie_add(tok_trie *tr, const char *s, size_t n, int32_t added);
/* Longest token starting at s[0..n); returns its index in mk_tok.added and
 * sets *len, or -1. */
int32_t tok_trie_longest(const tok_trie *tr, const char *s, size_t n, size_t *len);
void tok_trie_free(tok_trie *tr);

/* tok_normalize.c: apply the normalizer chain; *out is malloc'd (or NULL
 * with *out_n = n when nothing changes: the caller then uses s). */
mk_status tok_normalize(const mk_tok *t, const char *s, size_t n, char **out, size_t *out_n);

/* tok_pretok.c: split one normalized piece into words and run the model on
 * each, appending ids to out. */
mk_status tok_pretok_encode(const mk_tok *t, const char *s, size_t n, tok_ivec *out);
/* Compile a regex (oniguruma syntax as HF writes it) with Unicode classes. */
mk_status tok_regex_compile(const char *pattern, size_t len, bool literal, const char *where,
                            pcre2_code **out);

/* tok_bpe.c: one pre-tokenized word (model alphabet, e.g. byte-level) -> ids. */
mk_status tok_bpe_word(const mk_tok *t, const char *w, size_t n, tok_ivec *out);
mk_status tok_cache_create(tok_cache **out);
void tok_cache_free(tok_cache *c);

#endif
