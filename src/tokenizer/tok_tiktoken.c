/* Loading a tiktoken-format tokenizer (Kimi-K2) into an mk_tok.
 *
 * Such a model folder has no tokenizer.json. It ships:
 *   tiktoken.model         one "<base64 bytes> <rank>" line per token; the
 *                          rank is the token's id and its merge priority;
 *   tokenizer_config.json  added_tokens_decoder {"<id>": {"content": ...}}
 *                          naming the special tokens, and auto_map naming
 *                          the Python class (tokenization_kimi.py) whose
 *                          split pattern the ranks were trained with.
 * The facts taken from Kimi's tokenization_kimi.py: the special tokens are
 * the 256 ids right after the N ranks (N = the number of lines), each named
 * by added_tokens_decoder or else "<|reserved_token_<id>|>"; encode lets all
 * of them match anywhere in the text (tiktoken's allowed_special="all");
 * BOS/EOS are not added by encode; the split pattern is the one below; text
 * is encoded in chunks (400,000 characters, runs of whitespace or of
 * non-whitespace cut after 25,000: mk_tok.kimi_chunks).
 *
 * The result is the same mk_tok a byte-level BPE tokenizer.json loads into,
 * so encode, decode, streaming and the chat rules are shared:
 *   - vocab: each token's bytes in GPT-2 byte-level form, id = rank;
 *   - merges: every split of a token into two tokens (a, b) -> (rank of the
 *     token, its id). tiktoken merges, within one piece, the adjacent pair
 *     whose concatenation has the lowest rank, leftmost first; the BPE
 *     heap (tok_bpe.c) does exactly that when every such pair is a merge;
 *   - ignore_merges: a piece that is itself a token is that token, as
 *     tiktoken looks the whole piece up first;
 *   - pre-tokenizer: Split(pattern, Isolated) then ByteLevel without prefix
 *     space or regex;
 *   - decoding: each id's raw bytes;
 *   - every special token is a special added token (matched before the
 *     split; refused in user text by MK_TOK_SPLIT_SPECIAL and
 *     mk_tok_encode_ctl, like tokenizer.json's special tokens). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/alloc.h"
#include "core/json_err.h"
#include "core/str.h"
#include "tokenizer/tok_impl.h"

/* Kimi's split pattern (tokenization_kimi.py pat_str), written for PCRE2:
 * its character-class intersections [X&&[^\p{Han}]] become
 * (?:(?!\p{Han})[X]), the same set one code point at a time. \p{Han} is the
 * Script property in tiktoken's regex crate, in PCRE2 and in JavaScript. */
#define KIMI_PAT                                                                                   \
    "[\\p{Han}]+"                                                                                  \
    "|[^\\r\\n\\p{L}\\p{N}]?(?:(?!\\p{Han})[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}])*"                 \
    "(?:(?!\\p{Han})[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}])+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"                  \
    "|[^\\r\\n\\p{L}\\p{N}]?(?:(?!\\p{Han})[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}])+"                 \
    "(?:(?!\\p{Han})[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}])*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"                  \
    "|\\p{N}{1,3}"                                                                                 \
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"                                                              \
    "|\\s*[\\r\\n]+"                                                                               \
    "|\\s+(?!\\S)"                                                                                 \
    "|\\s+"

#define KIMI_RESERVED 256
#define MAX_RANK_FILE ((size_t)1 << 30)

/* ---- the rank file ------------------------------------------------------- */

static int b64val(unsigned char c) {
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Standard base64 with padding (what tiktoken's load_tiktoken_bpe reads);
 * out holds at least n * 3 / 4 bytes. False on any other character or a
 * length that is not a multiple of 4. */
static bool b64decode(const char *s, size_t n, unsigned char *out, size_t *out_n) {
    if (n == 0 || n % 4)
        return false;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        size_t pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)s[i + (size_t)k];
            if (c == '=' && i + 4 == n && k >= 2) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad || (v[k] = b64val(c)) < 0)
                return false;
        }
        uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[o++] = (unsigned char)(x >> 16);
        if (pad < 2)
            out[o++] = (unsigned char)(x >> 8);
        if (pad < 1)
            out[o++] = (unsigned char)x;
    }
    *out_n = o;
    return true;
}

static mk_status read_file(const char *path, char **buf, size_t *n) {
    *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return mk_err(MK_E_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return mk_err(MK_E_IO, "%s: not a regular file", path);
    }
    if ((size_t)sb.st_size > MAX_RANK_FILE) {
        fclose(f);
        return mk_err(MK_E_FORMAT, "%s: %lld bytes; a tiktoken rank file over %zu bytes is refused", path,
                      (long long)sb.st_size, MAX_RANK_FILE);
    }
    *buf = mk_malloc((size_t)sb.st_size + 1);
    if (!*buf) {
        fclose(f);
        return mk_err(MK_E_NOMEM, "%s: no memory to read its %lld bytes", path, (long long)sb.st_size);
    }
    *n = fread(*buf, 1, (size_t)sb.st_size, f);
    bool bad = ferror(f) != 0;
    fclose(f);
    if (bad || *n != (size_t)sb.st_size) {
        free(*buf);
        *buf = NULL;
        return mk_err(MK_E_IO, "%s: read error", path);
    }
    (*buf)[*n] = 0;
    return MK_OK;
}

/* One parsed line: its token bytes live in the rank file buffer, decoded in
 * place over the base64 text (never longer than it). */
typedef struct rank_tok {
    uint32_t off, len;
} rank_tok;

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

/* Parse every "<base64> <rank>" line. toks[rank] is the token of that rank;
 * ranks must be exactly 0..N-1 (Kimi numbers its special tokens from N, so
 * a gap or a repeat would give two tokens one id). */
static mk_status parse_ranks(const char *path, char *buf, size_t n, rank_tok **out, size_t *n_out) {
    size_t lines = 0;
    for (size_t i = 0; i < n; i++)
        lines += buf[i] == '\n';
    rank_tok *toks = mk_malloc((lines + 1) * sizeof *toks);
    uint8_t *seen = mk_calloc(lines + 1, 1);
    if (!toks || !seen) {
        free(toks);
        free(seen);
        return mk_err(MK_E_NOMEM, "%s: no memory for %zu rank lines", path, lines + 1);
    }
    size_t count = 0, lineno = 0;
    mk_status st = MK_OK;
    for (size_t p = 0; p < n && st == MK_OK;) {
        size_t e = p;
        while (e < n && buf[e] != '\n')
            e++;
        lineno++;
        size_t a = p, z = e;
        p = e + 1;
        while (a < z && is_space(buf[a]))
            a++;
        while (z > a && is_space(buf[z - 1]))
            z--;
        if (a == z)
            continue; /* load_tiktoken_bpe skips empty lines */
        size_t sp = a;
        while (sp < z && !is_space(buf[sp]))
            sp++;
        size_t r0 = sp;
        while (r0 < z && is_space(buf[r0]))
            r0++;
        char *endp = NULL;
        errno = 0;
        long long rank = r0 < z ? strtoll(buf + r0, &endp, 10) : -1;
        if (r0 == z || endp != buf + z || errno || buf[r0] == '-' || buf[r0] == '+') {
            st = mk_err(MK_E_FORMAT, "%s: line %zu: expected \"<base64 token> <rank>\", found \"%.*s\"", path,
                        lineno, (int)(z - a > 80 ? 80 : z - a), buf + a);
            break;
        }
        size_t bl;
        if (!b64decode(buf + a, sp - a, (unsigned char *)buf + a, &bl)) {
            st = mk_err(MK_E_FORMAT, "%s: line %zu: token \"%.*s\" is not base64", path, lineno,
                        (int)(sp - a > 80 ? 80 : sp - a), buf + a);
            break;
        }
        if (rank >= (long long)lines + 1 || rank >= TOK_MAX_ID - KIMI_RESERVED) {
            st = mk_err(MK_E_FORMAT, "%s: line %zu: rank %lld is not below the number of tokens: the ranks of "
                        "a tiktoken.model must be 0..N-1", path, lineno, rank);
            break;
        }
        if (seen[rank]) {
            st = mk_err(MK_E_FORMAT, "%s: line %zu: rank %lld appears twice", path, lineno, rank);
            break;
        }
        seen[rank] = 1;
        toks[rank] = (rank_tok){(uint32_t)a, (uint32_t)bl};
        count++;
    }
    for (size_t r = 0; st == MK_OK && r < count; r++)
        if (!seen[r])
            st = mk_err(MK_E_FORMAT, "%s: rank %zu is missing: the ranks of a tiktoken.model must be 0..N-1 "
                        "(N = %zu lines)", path, r, count);
    if (st == MK_OK && count == 0)
        st = mk_err(MK_E_FORMAT, "%s: no tokens: a tiktoken rank file has one \"<base64> <rank>\" line per "
                    "token", path);
    free(seen);
    if (st != MK_OK) {
        free(toks);
        return st;
    }
    *out = toks;
    *n_out = count;
    return MK_OK;
}

/* ---- tokenizer_config.json ----------------------------------------------- */

/* Whether the config names Kimi's tokenizer class: auto_map.AutoTokenizer
 * pointing into tokenization_kimi, or tokenizer_class TikTokenTokenizer. */
static bool names_kimi(const json_t *cfg) {
    const json_t *cls = json_object_get(cfg, "tokenizer_class");
    if (json_is_string(cls) && strcmp(json_string_value(cls), "TikTokenTokenizer") == 0)
        return true;
    const json_t *at = json_object_get(json_object_get(cfg, "auto_map"), "AutoTokenizer");
    for (size_t i = 0; json_is_array(at) && i < json_array_size(at); i++) {
        const json_t *s = json_array_get(at, i);
        if (json_is_string(s) && strstr(json_string_value(s), "tokenization_kimi."))
            return true;
    }
    return json_is_string(at) && strstr(json_string_value(at), "tokenization_kimi.");
}

static mk_status load_config(const char *dir, const char *rank_path, char *file, size_t cap, json_t **out) {
    json_error_t e;
    *out = NULL;
    snprintf(file, cap, "%s/tokenizer_config.json", dir);
    struct stat sb;
    if (stat(file, &sb) != 0)
        return mk_err(MK_E_NOTFOUND, "%s: no tokenizer_config.json beside it: a tiktoken rank file needs it for "
                      "its special tokens and its tokenizer class (split pattern)", rank_path);
    unsigned long jmark = mk_json_mark();
    *out = mk_json_load_file(file, JSON_DECODE_INT_AS_REAL, &e, jmark); /* model_max_length: int(1e30) */
    if (!*out && mk_json_nomem(&e, jmark))
        return mk_err(MK_E_NOMEM, "%s: no memory to parse its JSON", file);
    if (!*out)
        return mk_err(MK_E_FORMAT, "%s: invalid JSON at line %d column %d: %s", file, e.line, e.column,
                      mk_json_errtext(e.text));
    if (!json_is_object(*out))
        return mk_err(MK_E_FORMAT, "%s: expected a JSON object at the top level", file);
    if (!names_kimi(*out))
        return mk_err(MK_E_UNSUPPORTED, "%s: tiktoken.model tokenizers are read for Kimi's class only "
                      "(auto_map -> tokenization_kimi.TikTokenTokenizer): the split pattern of another class "
                      "is unknown to moekit", file);
    return MK_OK;
}

/* One special token's name: added_tokens_decoder[id].content, else the
 * reserved name Kimi gives an unnamed id. */
typedef struct special {
    int32_t id;
    const char *name; /* NULL: reserved */
} special;

static mk_status collect_specials(const char *file, const json_t *cfg, size_t n_base, special **out,
                                  size_t *n_out, size_t *n_ids) {
    const json_t *dec = json_object_get(cfg, "added_tokens_decoder");
    if (dec && !json_is_null(dec) && !json_is_object(dec))
        return mk_err(MK_E_FORMAT, "%s: field 'added_tokens_decoder': expected an object, found %s", file,
                      mk_json_type_name(dec));
    size_t nd = json_is_object(dec) ? json_object_size(dec) : 0;
    special *sp = mk_calloc(KIMI_RESERVED + nd, sizeof *sp);
    if (!sp)
        return mk_err(MK_E_NOMEM, "%s: no memory for %zu special tokens", file, KIMI_RESERVED + nd);
    size_t n = KIMI_RESERVED, top = n_base + KIMI_RESERVED;
    for (size_t i = 0; i < KIMI_RESERVED; i++)
        sp[i].id = (int32_t)(n_base + i);
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)dec, key, v) {
        char *endp;
        errno = 0;
        long long id = strtoll(key, &endp, 10);
        const json_t *c = json_object_get(v, "content");
        mk_status st = MK_OK;
        if (!*key || *endp || errno || id < 0 || id >= TOK_MAX_ID)
            st = mk_err(MK_E_FORMAT, "%s: field 'added_tokens_decoder[\"%.40s\"]': the key must be a token id "
                        "in [0, %d)", file, key, TOK_MAX_ID);
        else if (!json_is_string(c) || json_string_length(c) == 0)
            st = mk_err(MK_E_FORMAT, "%s: field 'added_tokens_decoder[\"%s\"].content': expected a non-empty "
                        "string, found %s", file, key, mk_json_type_name(c));
        else if ((size_t)id < n_base)
            st = mk_err(MK_E_FORMAT, "%s: field 'added_tokens_decoder[\"%s\"]': id %lld is a rank of "
                        "tiktoken.model (ranks 0..%zu); special tokens follow the ranks", file, key, id,
                        n_base - 1);
        else if (strlen(json_string_value(c)) != json_string_length(c))
            st = mk_err(MK_E_FORMAT, "%s: field 'added_tokens_decoder[\"%s\"].content' contains a NUL byte",
                        file, key);
        if (st != MK_OK) {
            free(sp);
            return st;
        }
        if ((size_t)id < n_base + KIMI_RESERVED) {
            sp[id - (long long)n_base].name = json_string_value(c);
        } else {
            sp[n++] = (special){(int32_t)id, json_string_value(c)};
            top = (size_t)id + 1 > top ? (size_t)id + 1 : top;
        }
    }
    *out = sp;
    *n_out = n;
    *n_ids = top;
    return MK_OK;
}

/* ---- building the tables ------------------------------------------------- */

typedef struct arena {
    char *p;
    size_t n, cap;
} arena;

static mk_status arena_put(arena *a, const char *s, size_t n, tok_span *out) {
    if (a->n + n > UINT32_MAX)
        return mk_err(MK_E_NOMEM, "tokenizer: token strings exceed 4 GiB");
    if (a->n + n + 1 > a->cap) {
        size_t nc = a->cap ? a->cap : 1 << 16;
        while (nc < a->n + n + 1)
            nc *= 2;
        char *np = mk_realloc(a->p, nc);
        if (!np)
            return mk_err(MK_E_NOMEM, "tokenizer: no memory for %zu bytes of token strings", nc);
        a->p = np;
        a->cap = nc;
    }
    memcpy(a->p + a->n, s, n);
    *out = (tok_span){(uint32_t)a->n, (uint32_t)n};
    a->n += n;
    return MK_OK;
}

/* Vocabulary (byte-level strings), raw bytes per id, and a map raw bytes ->
 * id used to find the merges. */
static mk_status build_ranks(mk_tok *t, const char *buf, const rank_tok *toks, size_t n_base, arena *strs,
                             arena *bytes, tok_smap *raw) {
    char *bl = NULL;
    size_t bl_cap = 0;
    mk_status st = MK_OK;
    for (size_t id = 0; id < n_base && st == MK_OK; id++) {
        const char *s = buf + toks[id].off;
        size_t n = toks[id].len;
        if (n * 2 > bl_cap) {
            size_t nc = n * 2 + 64;
            char *np = mk_realloc(bl, nc);
            if (!np) {
                st = mk_err(MK_E_NOMEM, "tokenizer: no memory for a %zu-byte token", n);
                break;
            }
            bl = np;
            bl_cap = nc;
        }
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
            size_t cl;
            const char *c = tok_bl_char((uint8_t)s[i], &cl);
            memcpy(bl + o, c, cl);
            o += cl;
        }
        bool dup = false;
        st = tok_smap_put(raw, s, n, (int32_t)id, &dup);
        if (st == MK_OK && dup)
            st = mk_err(MK_E_FORMAT, "%s: the bytes of rank %zu appear twice (also at another rank)", t->path, id);
        if (st == MK_OK)
            st = tok_smap_put(&t->vocab, bl, o, (int32_t)id, NULL);
        if (st == MK_OK)
            st = arena_put(strs, bl, o, &t->id_str[id]);
        if (st == MK_OK)
            st = arena_put(bytes, s, n, &t->id_bytes[id]);
        t->id_flags[id] |= TOK_ID_PRESENT;
    }
    free(bl);
    return st;
}

/* Every split of a token into two tokens is a merge ranked by the token. */
static mk_status build_merges(mk_tok *t, const char *buf, const rank_tok *toks, size_t n_base,
                              const tok_smap *raw) {
    for (size_t id = 0; id < n_base; id++) {
        const char *s = buf + toks[id].off;
        size_t n = toks[id].len;
        for (size_t k = 1; k < n; k++) {
            int32_t a, b;
            if (tok_smap_get(raw, s, k, &a) && tok_smap_get(raw, s + k, n - k, &b))
                MK_TRY(tok_pmap_put(&t->merges, a, b, (int32_t)id, (int32_t)id));
        }
    }
    /* tiktoken starts from single bytes: each must be a token. */
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        int32_t id;
        if (!tok_smap_get(raw, &c, 1, &id))
            return mk_err(MK_E_FORMAT, "%s: byte 0x%02X has no rank: text holding it could not be encoded",
                          t->path, (unsigned)b);
    }
    return MK_OK;
}

static mk_status add_special(mk_tok *t, const special *sp, arena *strs, arena *bytes) {
    char name[64];
    const char *s = sp->name;
    if (!s) {
        snprintf(name, sizeof name, "<|reserved_token_%d|>", (int)sp->id);
        s = name;
    }
    size_t n = strlen(s);
    int32_t prev;
    if (tok_smap_get(&t->added_ids, s, n, &prev))
        return mk_err(MK_E_FORMAT, "%s/tokenizer_config.json: special token \"%.60s\" names ids %d and %d",
                      t->path, s, (int)prev, (int)sp->id);
    tok_added *x = &t->added[t->n_added];
    memset(x, 0, sizeof *x);
    x->id = sp->id;
    x->special = true;
    x->content = mk_strndup(s, n);
    if (!x->content)
        return mk_err(MK_E_NOMEM, "%s: no memory for special token %d", t->path, (int)sp->id);
    x->len = n;
    int32_t idx = (int32_t)t->n_added++; /* counted now so mk_tok_free releases the content */
    MK_TRY(arena_put(strs, s, n, &t->id_str[sp->id]));
    MK_TRY(arena_put(bytes, s, n, &t->id_bytes[sp->id]));
    t->id_flags[sp->id] |= TOK_ID_PRESENT | TOK_ID_ADDED | TOK_ID_SPECIAL;
    MK_TRY(tok_smap_put(&t->added_ids, s, n, sp->id, NULL));
    return tok_trie_add(&t->trie_raw, x->content, x->len, idx);
}

static mk_status build(mk_tok *t, const char *buf, const rank_tok *toks, size_t n_base, const special *sp,
                       size_t n_sp) {
    arena strs = {0}, bytes = {0};
    tok_smap raw = {0};
    mk_status st = MK_OK;
    t->id_flags = mk_calloc(t->n_ids, 1);
    t->id_str = mk_calloc(t->n_ids, sizeof *t->id_str);
    t->id_bytes = mk_calloc(t->n_ids, sizeof *t->id_bytes);
    t->added = mk_calloc(n_sp, sizeof *t->added);
    if (!t->id_flags || !t->id_str || !t->id_bytes || !t->added)
        st = mk_err(MK_E_NOMEM, "%s: no memory for the tables of %zu ids", t->path, t->n_ids);
    if (st == MK_OK)
        st = build_ranks(t, buf, toks, n_base, &strs, &bytes, &raw);
    if (st == MK_OK)
        st = build_merges(t, buf, toks, n_base, &raw);
    for (size_t i = 0; st == MK_OK && i < n_sp; i++)
        st = add_special(t, &sp[i], &strs, &bytes);
    tok_smap_free(&raw);
    t->strs = strs.p;
    t->strs_len = strs.n;
    t->bytes = bytes.p;
    t->bytes_len = bytes.n;
    return st;
}

static mk_status build_pretok(mk_tok *t) {
    t->pre = mk_calloc(2, sizeof *t->pre);
    if (!t->pre)
        return mk_err(MK_E_NOMEM, "tokenizer: no memory for the pre-tokenizer");
    t->pre[0].type = TOK_PRE_SPLIT;
    t->pre[0].behavior = TOK_SPLIT_ISOLATED;
    t->n_pre = 1; /* counted before compiling so mk_tok_free releases it */
    MK_TRY(tok_regex_compile(KIMI_PAT, strlen(KIMI_PAT), false, "Kimi's split pattern", &t->pre[0].re));
    t->pre[1].type = TOK_PRE_BYTELEVEL; /* no prefix space, no regex: the byte map only */
    t->n_pre = 2;
    return MK_OK;
}

mk_status tok_load_tiktoken(mk_tok *t, const char *path, const char *dir) {
    char cfg_file[4200];
    json_t *cfg = NULL;
    char *buf = NULL;
    size_t n = 0, n_base = 0, n_sp = 0;
    rank_tok *toks = NULL;
    special *sp = NULL;
    mk_status st = load_config(dir, path, cfg_file, sizeof cfg_file, &cfg);
    if (st == MK_OK)
        st = read_file(path, &buf, &n);
    if (st == MK_OK)
        st = parse_ranks(path, buf, n, &toks, &n_base);
    if (st == MK_OK)
        st = collect_specials(cfg_file, cfg, n_base, &sp, &n_sp, &t->n_ids);
    if (st == MK_OK) {
        t->ignore_merges = true;
        t->kimi_chunks = true;
        t->unk_id = -1;
        for (int b = 0; b < 256; b++)
            t->byte_ids[b] = -1;
        st = build(t, buf, toks, n_base, sp, n_sp);
    }
    if (st == MK_OK)
        st = build_pretok(t);
    free(sp);
    free(toks);
    free(buf);
    json_decref(cfg);
    return st;
}
